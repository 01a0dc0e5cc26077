"""Convert a local file or a Hugging Face dataset to the JSONL the trainers read.

    # pretraining text -> {"text": ...} per line
    python scripts/convert_dataset.py --input your_data.txt --output dataset/custom_pretrain.jsonl --mode pretrain
    # SFT conversations (standard, OpenAI, ShareGPT, Alpaca, prompt/response) -> {"conversations": [...]}
    python scripts/convert_dataset.py --input alpaca.json --output dataset/custom_sft.jsonl --mode sft --format alpaca
    # a Hub dataset (streamed), or a local file / folder read with the `datasets` library
    python scripts/convert_dataset.py --hf-dataset HuggingFaceFW/fineweb-edu --hf-subset sample-10BT \\
        --hf-split train --output dataset/fineweb_pretrain.jsonl --mode pretrain --max-samples 100000

Inputs (`--input`): .txt (one line = one sample, pretrain only), .csv (header line; text column
auto-detected or `--text-column`), .json (a top-level array, parsed incrementally, or one object),
.jsonl. Other extensions are an error. Exactly one of --input / --hf-dataset.

Pretrain text comes from `--text-column`, else `text|content|document`, else a conversation rendered as
`role: content` lines, else `sentence|data|input|prompt`. Records with blank text are skipped and
counted. Everything streams with constant memory and the output is written atomically. Bad input
stops with exit status 2 and `file:line: field '...': message`; `--skip_bad` skips and counts it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parallel_data.formats import (
    extract_text,
    normalize_conversation,
    render_conversation_text,
    resolve_text_column,
)
from parallel_data.io import (
    AtomicJsonlWriter,
    DataError,
    ReadStats,
    iter_csv_rows,
    iter_json_records,
    iter_jsonl,
    iter_text_lines,
)
from trainer.args import add_format_arg, add_output_args, add_skip_bad_arg, add_source_args
from trainer.cli import ArgParser, UsageError, cli_main, make_parser

INPUT_EXTENSIONS = (".txt", ".csv", ".json", ".jsonl")


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "convert_dataset")
    g = add_source_args(p, required=True, data_flag="--input", data_help="local .txt / .csv / .json / .jsonl file",
                        max_samples_help="stop after writing this many records (0: all)")
    g.add_argument("--mode", required=True, choices=("pretrain", "sft"),
                   help="pretrain: {text} records; sft: {conversations} records")
    add_format_arg(g)
    add_skip_bad_arg(p)
    add_output_args(p, out_path=True, required=True, out_path_help="output .jsonl (written atomically)",
                    out_flag="--output")
    p.add_check(_check_mode)
    return p


def _check_mode(args) -> None:
    if args.mode == "sft" and args.text_column is not None:
        raise UsageError(f"--text-column {args.text_column} picks the text of --mode pretrain records; --mode sft "
                         "reads conversations (their layout is chosen with --format)")


def iter_source(args: argparse.Namespace, stats: ReadStats) -> Iterator[tuple[str, int, Any, bool]]:
    """Yield `(label, line_no, record, is_table_row)` from --input or --hf-dataset."""
    if args.hf_dataset is not None:
        from parallel_data.hub_datasets import iter_hf_rows, open_hf_dataset

        ds = open_hf_dataset(args.hf_dataset, args.hf_subset, args.hf_split, streaming=True)
        label = args.hf_dataset if args.hf_split == "train" else f"{args.hf_dataset}[{args.hf_split}]"
        for row_no, row in iter_hf_rows(ds, label):
            stats.read += 1
            yield label, row_no, row, True
        if stats.read == 0:
            raise DataError("has no rows", path=label)
        return
    path = Path(args.data_path)
    ext = path.suffix.lower()
    if ext == ".txt":
        if args.mode != "pretrain":
            raise DataError("a .txt file holds plain text, not conversations; use --mode pretrain", path=path)
        for line_no, text in iter_text_lines(path, stats=stats):
            yield str(path), line_no, text, False
    elif ext == ".csv":
        for line_no, row in iter_csv_rows(path, skip_bad=args.skip_bad, stats=stats):
            yield str(path), line_no, row, True
    elif ext == ".json":
        for line_no, value in iter_json_records(path, stats=stats):
            yield str(path), line_no, value, False
    elif ext == ".jsonl":
        for line_no, obj in iter_jsonl(path, skip_bad=args.skip_bad, stats=stats):
            yield str(path), line_no, obj, False
    else:
        raise DataError(f"unknown input extension {ext or '(none)'!r}; expected one of {', '.join(INPUT_EXTENSIONS)}",
                        path=path)


def convert_record(rec: Any, args: argparse.Namespace, column: str | None, label: str, line_no: int) -> dict | None:
    """The output record for one input record, or None when its pretraining text is blank."""
    if args.mode == "sft":
        return {"conversations": normalize_conversation(rec, args.format, label, line_no)}
    if isinstance(rec, str):
        text = rec
    elif args.format != "auto" and column is None:  # records declared to be conversations of that format
        text = render_conversation_text(normalize_conversation(rec, args.format, label, line_no))
    else:
        text = extract_text(rec, column, label, line_no)
    return {"text": text} if text.strip() else None


def convert(args: argparse.Namespace) -> tuple[ReadStats, int]:
    stats = ReadStats()
    column_resolved = False
    column = args.text_column
    src = args.data_path if args.data_path is not None else args.hf_dataset
    source = iter_source(args, stats)
    try:
        with AtomicJsonlWriter(args.out_path) as w:
            for label, line_no, rec, is_table in source:
                if args.mode == "pretrain" and is_table and not column_resolved:
                    # a table has one text column for all rows: pick it once (a config error, never skipped)
                    column = resolve_text_column(rec.keys(), args.text_column, path=label)
                    column_resolved = True
                try:
                    out = convert_record(rec, args, column, label, line_no)
                except DataError as e:
                    if not args.skip_bad:
                        raise
                    stats.bad(e)
                    continue
                if out is None:
                    stats.blank += 1
                    continue
                w.write(out)
                if args.max_samples and w.count >= args.max_samples:
                    break
            if w.count == 0:
                raise DataError(f"no records to write ({stats.summary()})", path=src)
    finally:
        source.close()
    return stats, w.count


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    stats, written = convert(args)
    src = args.data_path if args.data_path is not None else args.hf_dataset
    limit = f" (stopped at --max-samples {args.max_samples})" if args.max_samples and written >= args.max_samples else ""
    stats.report(f"{src}: {stats.summary()}; wrote {written} {args.mode} records to {args.out_path}{limit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
