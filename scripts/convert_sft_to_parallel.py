"""Turn SFT conversations into parallel-pretraining branches: one `{"text", "answer_offset"}` per assistant turn.

    python scripts/convert_sft_to_parallel.py --input dataset/sft_512.jsonl --output dataset/sft_parallel.jsonl
    python -m scripts.convert_sft_to_parallel --input sft.jsonl --output branches.jsonl --tokenizer model/ \\
        --pad_min 0 --pad_max 8 --seed 1337

Input: a .jsonl / .json / .csv file of conversations in any supported format (standard, OpenAI,
ShareGPT, Alpaca, prompt/response; see parallel_data/formats.py). Output, one branch per line::

    {"text": "<|im_start|>user\\nQ<|im_end|>\\n<|im_start|>assistant\\nA<|im_end|>", "answer_offset": 7}

`text` is the conversation up to and including one assistant turn, rendered with the tokenizer's chat
template; `answer_offset` is the token count of the prompt (the history plus the generation prompt),
verified to be an exact token prefix, so the loss covers exactly that reply and its `<|im_end|>`.
With `--pad_max > 0` each branch also gets `"time_offset"`, drawn uniformly (seeded) from
[pad_min, pad_max]: the layout starts that branch later by that many time steps. No pad strings are
put into the text.

Bad input stops with exit status 2 and `file:line: field '...': message`; `--skip_bad` skips and
counts the conversation instead. The output is written atomically.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parallel_data.formats import conversation_branches, normalize_conversation
from parallel_data.io import AtomicJsonlWriter, DataError, ReadStats, iter_records
from trainer import args as flags
from trainer.cli import ArgParser, UsageError, cli_main, make_parser

PROGRESS_EVERY = 10000


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "convert_sft_to_parallel")
    g = flags.add_source_args(p, required=True, hf=False, text_column=False, data_flag="--input",
                              data_help=".jsonl / .json / .csv conversations",
                              max_samples_help="read at most this many conversations (0: all)")
    flags.add_format_arg(g)
    flags.add_model_source_args(p, checkpoint=False, hf=False, lora=False)
    t = p.add_argument_group("time offsets")
    t.add_argument("--pad_min", type=flags.nonneg_int, default=0, help="smallest per-branch time_offset")
    t.add_argument("--pad_max", type=flags.nonneg_int, default=0,
                   help="largest per-branch time_offset (0: no time_offset field)")
    flags.add_seed_arg(t, 1337, help="seed of the time_offset draws")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    flags.add_skip_bad_arg(p, "conversations")
    flags.add_output_args(p, out_path=True, required=True, out_path_help="output .jsonl (written atomically)",
                          out_flag="--output")
    p.add_check(check_args)
    return p


def check_args(args: argparse.Namespace) -> None:
    if args.pad_min > args.pad_max:
        raise UsageError(f"--pad_min ({args.pad_min}) must be <= --pad_max ({args.pad_max})")


def convert(args: argparse.Namespace, tokenizer) -> tuple[ReadStats, int, int]:
    """Returns (stats, conversations converted, branches written)."""
    rng = random.Random(args.seed)
    stats = ReadStats()
    conversations = 0
    records = iter_records(args.data_path, skip_bad=args.skip_bad, stats=stats)
    try:
        with AtomicJsonlWriter(args.out_path) as w:
            for line_no, obj in records:
                try:
                    messages = normalize_conversation(obj, args.format, args.data_path, line_no)
                    branches = conversation_branches(tokenizer, messages, args.data_path, line_no)
                except DataError as e:
                    if not args.skip_bad:
                        raise
                    stats.bad(e)
                    continue
                for text, answer_offset in branches:
                    rec = {"text": text, "answer_offset": answer_offset}
                    if args.pad_max > 0:
                        rec["time_offset"] = rng.randint(args.pad_min, args.pad_max)
                    w.write(rec)
                conversations += 1
                if not args.quiet and conversations % PROGRESS_EVERY == 0:
                    print(f"  {conversations} conversations, {w.count} branches", flush=True)
                if args.max_samples and stats.read >= args.max_samples:
                    break
            if w.count == 0:
                raise DataError(f"no branches to write ({stats.summary()})", path=args.data_path)
    finally:
        records.close()
    return stats, conversations, w.count


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    from model.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    stats, conversations, branches = convert(args, tokenizer)
    if not args.quiet:
        stats.report(f"{args.data_path}: {stats.summary()}; wrote {branches} branches from {conversations} conversations "
              f"to {args.out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
