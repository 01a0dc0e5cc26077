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

from parallel_data.io import AtomicJsonlWriter, DataError, ReadStats, iter_jsonl, require_field
from trainer.args import add_marker_args, add_output_args, add_skip_bad_arg, add_source_args
from trainer.cli import ArgParser, UsageError, cli_main, make_parser


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "split_pretrain_data")
    add_source_args(p, default_data="dataset/pretrain_hq.jsonl", hf=False, text_column=False, data_flag="--input",
                    data_help="JSONL with a 'text' field", max_samples_help="read at most this many records (0: all)")
    t = p.add_argument_group("segments")
    add_marker_args(t, "a segment starts with this", "and ends with this")
    add_skip_bad_arg(p)
    add_output_args(p, out_path=True, default="dataset/pretrain_hq_split.jsonl", out_flag="--output",
                    out_path_help="output .jsonl (written atomically)")
    p.add_check(_check_markers)
    return p


def _check_markers(args: argparse.Namespace) -> None:
    if not args.start_token or not args.end_token:
        raise UsageError("--start_token and --end_token must not be empty")


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
    pattern = re.compile(re.escape(args.start_token) + ".*?" + re.escape(args.end_token), re.DOTALL)
    stats = ReadStats()
    segments = outside = 0
    records = iter_jsonl(args.data_path, skip_bad=args.skip_bad, stats=stats)
    try:
        with AtomicJsonlWriter(args.out_path) as w:
            for line_no, obj in records:
                try:
                    text = require_field(obj, "text", str, args.data_path, line_no)
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
                if args.max_samples and stats.read >= args.max_samples:
                    break
            if w.count == 0:
                raise DataError(f"no text to write ({stats.summary()})", path=args.data_path)
    finally:
        records.close()
    return stats, w.count, segments, outside


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    stats, written, segments, outside = split_file(args)
    stats.report(f"{args.data_path}: {stats.summary()}; wrote {written} lines to {args.out_path} "
          f"({segments} segments, {outside} pieces of text outside segments)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
