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
from parallel_data.io import AtomicJsonlWriter, DataError, ReadStats, iter_records
from trainer.args import add_marker_args, add_output_args, add_skip_bad_arg, add_source_args, nonneg_int
from trainer.cli import ArgParser, UsageError, cli_main, make_parser


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "convert_sft_to_pretrain")
    add_source_args(p, default_data="dataset/sft_512.jsonl", hf=False, text_column=False, data_flag="--input",
                    data_help=".jsonl / .json / .csv conversations", max_samples_aliases=("--max_lines",),
                    max_samples_help="read at most this many records (0: all)")
    t = p.add_argument_group("text")
    add_marker_args(t, "put before each record's text", "put after each record's text")
    t.add_argument("--sep", default=" ", help="separator between turn contents")
    p.add_argument("--log_every", type=nonneg_int, default=100000, help="progress line every N records (0: never)")
    add_skip_bad_arg(p)
    add_output_args(p, out_path=True, out_flag="--output",
                    out_path_help="output .jsonl, written atomically (default: the input name with sft_ -> pretrain_)")
    p.add_check(resolve_output)
    return p


def default_output(input_path: str | Path) -> Path:
    p = Path(input_path)
    return p.with_name(p.name.replace("sft_", "pretrain_"))


def resolve_output(args: argparse.Namespace) -> None:
    """--output defaults to the input name with sft_ -> pretrain_ (an error when that is the input itself)."""
    if args.out_path is None:
        out = default_output(args.data_path)
        if out.resolve() == Path(args.data_path).resolve():
            raise UsageError(f"the output {out} would overwrite the input (its name has no 'sft_' to replace); "
                             "pass --output")
        args.out_path = str(out)


def convert(args: argparse.Namespace, output: Path) -> tuple[ReadStats, int]:
    stats = ReadStats()
    records = iter_records(args.data_path, skip_bad=args.skip_bad, stats=stats)
    try:
        with AtomicJsonlWriter(output) as w:
            for line_no, obj in records:
                try:
                    messages = normalize_conversation(obj, "auto", args.data_path, line_no)
                except DataError as e:
                    if not args.skip_bad:
                        raise
                    stats.bad(e)
                    continue
                body = args.sep.join(m["content"] for m in messages)
                w.write({"text": f"{args.start_token}{body}{args.end_token}"})
                if args.log_every and stats.read % args.log_every == 0:
                    print(f"  {stats.read} records read, {w.count} written", flush=True)
                if args.max_samples and stats.read >= args.max_samples:
                    break
            if w.count == 0:
                raise DataError(f"no records to write ({stats.summary()})", path=args.data_path)
    finally:
        records.close()
    return stats, w.count


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    output = Path(args.out_path)
    stats, written = convert(args, output)
    stats.report(f"{args.data_path}: {stats.summary()}; wrote {written} records to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
