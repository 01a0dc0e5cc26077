"""Flatten SFT conversations into pretraining text: `{"text": "<|im_start|>turn1 turn2 ...<|im_end|>"}` per line.

    python scripts/convert_sft_to_pretrain.py                       # dataset/sft_512.jsonl -> dataset/pretrain_512.jsonl
    python -m scripts.convert_sft_to_pretrain --input dataset/sft_mini.jsonl --output dataset/pretrain_mini.jsonl

The contents of all turns (any supported conversation format) are joined with `--sep`, roles dropped,
and wrapped in `--start_token` / `--end_token`. Without `--output`, the output name is the input name
with `sft_` replaced by `pretrain_` (an error when the name has no `sft_`). Streams with constant memory,
writes atomically; bad input stops with exit status 2 and `file:line: field '...': message`, or with
`--skip_bad` is skipped and counted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parallel_data.formats import normalize_conversation
from parallel_data.io import AtomicJsonlWriter, DataError, ReadStats, iter_records, one_line


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="SFT conversations -> {text} pretraining lines (roles dropped).")
    ap.add_argument("--input", default="dataset/sft_512.jsonl", help=".jsonl / .json / .csv conversations")
    ap.add_argument("--output", default=None, help="output .jsonl (default: the input name with sft_ -> pretrain_)")
    ap.add_argument("--start_token", default="<|im_start|>")
    ap.add_argument("--end_token", default="<|im_end|>")
    ap.add_argument("--sep", default=" ", help="separator between turn contents")
    ap.add_argument("--max_lines", type=int, default=0, help="read at most this many records (0: all)")
    ap.add_argument("--log_every", type=int, default=100000, help="progress line every N records (0: never)")
    ap.add_argument("--skip_bad", "--skip-bad", dest="skip_bad", action="store_true",
                    help="skip (and count) malformed records instead of stopping")
    return ap


def default_output(input_path: str | Path) -> Path:
    p = Path(input_path)
    return p.with_name(p.name.replace("sft_", "pretrain_"))


def resolve_output(args: argparse.Namespace) -> Path:
    out = Path(args.output) if args.output is not None else default_output(args.input)
    if out.resolve() == Path(args.input).resolve():
        why = "" if args.output is not None else " (its name has no 'sft_' to replace)"
        raise ValueError(f"the output {out} would overwrite the input{why}; pass --output")
    return out


def convert(args: argparse.Namespace, output: Path) -> tuple[ReadStats, int]:
    if args.max_lines < 0:
        raise ValueError(f"--max_lines must be >= 0, got {args.max_lines}")
    stats = ReadStats()
    records = iter_records(args.input, skip_bad=args.skip_bad, stats=stats)
    try:
        with AtomicJsonlWriter(output) as w:
            for line_no, obj in records:
                try:
                    messages = normalize_conversation(obj, "auto", args.input, line_no)
                except DataError as e:
                    if not args.skip_bad:
                        raise
                    stats.bad(e)
                    continue
                body = args.sep.join(m["content"] for m in messages)
                w.write({"text": f"{args.start_token}{body}{args.end_token}"})
                if args.log_every and stats.read % args.log_every == 0:
                    print(f"  {stats.read} records read, {w.count} written", flush=True)
                if args.max_lines and stats.read >= args.max_lines:
                    break
            if w.count == 0:
                raise DataError(f"no records to write ({stats.summary()})", path=args.input)
    finally:
        records.close()
    return stats, w.count


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        output = resolve_output(args)
        stats, written = convert(args, output)
    except (ValueError, OSError) as e:  # DataError is a ValueError
        print(f"convert_sft_to_pretrain: error: {one_line(e)}", file=sys.stderr)
        return 2
    print(f"{args.input}: {stats.summary()}; wrote {written} records to {output}")
    for msg in stats.errors:
        print(f"  skipped: {msg}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
