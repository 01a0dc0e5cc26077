"""Split pretraining lines into one `{"text"}` line per `<|im_start|>…<|im_end|>` segment.

    python scripts/split_pretrain_data.py        # dataset/pretrain_hq.jsonl -> dataset/pretrain_hq_split.jsonl
    python -m scripts.split_pretrain_data --input in.jsonl --output out.jsonl

Each segment keeps its markers. Text outside the segments (before, between or after them, or an
unterminated `<|im_start|>…`) that is not blank becomes its own line, stripped of surrounding
whitespace; nothing is dropped silently, and the summary counts segments and outside pieces.
Streams with constant memory and writes atomically; bad input stops with exit status 2 and
`file:line: field '...': message`, or with `--skip_bad` is skipped and counted.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parallel_data.io import AtomicJsonlWriter, DataError, ReadStats, iter_jsonl, one_line, require_field


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="One {text} line per <|im_start|>...<|im_end|> segment.")
    ap.add_argument("--input", default="dataset/pretrain_hq.jsonl", help="JSONL with a 'text' field")
    ap.add_argument("--output", default="dataset/pretrain_hq_split.jsonl", help="output .jsonl (written atomically)")
    ap.add_argument("--start_token", default="<|im_start|>")
    ap.add_argument("--end_token", default="<|im_end|>")
    ap.add_argument("--skip_bad", "--skip-bad", dest="skip_bad", action="store_true",
                    help="skip (and count) malformed records instead of stopping")
    return ap


def split_segments(text: str, pattern: re.Pattern) -> Iterator[tuple[str, bool]]:
    """Yield `(piece, is_segment)` in order: each marked segment, and each non-blank outside piece (stripped)."""
    pos = 0
    for m in pattern.finditer(text):
        outside = text[pos:m.start()].strip()
        if outside:
            yield outside, False
        yield m.group(0), True
        pos = m.end()
    outside = text[pos:].strip()
    if outside:
        yield outside, False


def split_file(args: argparse.Namespace) -> tuple[ReadStats, int, int, int]:
    """Returns (stats, lines written, segments, outside pieces)."""
    if Path(args.output).resolve() == Path(args.input).resolve():
        raise ValueError(f"--output {args.output} is the input file; pass another --output")
    if not args.start_token or not args.end_token:
        raise ValueError("--start_token and --end_token must not be empty")
    pattern = re.compile(re.escape(args.start_token) + ".*?" + re.escape(args.end_token), re.DOTALL)
    stats = ReadStats()
    segments = outside = 0
    records = iter_jsonl(args.input, skip_bad=args.skip_bad, stats=stats)
    try:
        with AtomicJsonlWriter(args.output) as w:
            for line_no, obj in records:
                try:
                    text = require_field(obj, "text", str, args.input, line_no)
                except DataError as e:
                    if not args.skip_bad:
                        raise
                    stats.bad(e)
                    continue
                if not text.strip():
                    stats.blank += 1
                    continue
                for piece, is_segment in split_segments(text, pattern):
                    w.write({"text": piece})
                    segments += is_segment
                    outside += not is_segment
            if w.count == 0:
                raise DataError(f"no text to write ({stats.summary()})", path=args.input)
    finally:
        records.close()
    return stats, w.count, segments, outside


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        stats, written, segments, outside = split_file(args)
    except (ValueError, OSError) as e:  # DataError is a ValueError
        print(f"split_pretrain_data: error: {one_line(e)}", file=sys.stderr)
        return 2
    print(f"{args.input}: {stats.summary()}; wrote {written} lines to {args.output} "
          f"({segments} segments, {outside} pieces of text outside segments)")
    for msg in stats.errors:
        print(f"  skipped: {msg}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
