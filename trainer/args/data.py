"""Flag groups for data sources, conversation formats, data modes and caches (see trainer.args)."""

from __future__ import annotations

import argparse
from pathlib import Path

from trainer.cli import (  # the value types and path checks are re-exported for the entry points
    ArgParser,
    UsageError,
    check_input_file,
    check_writable_dir,
    nonneg_int,
    positive_int,
)


def add_source_args(p: ArgParser, *, default_data: str | None = None, hf: bool = True, text_column: bool = True,
                    max_samples: bool = True, data_aliases: tuple[str, ...] = (),
                    max_samples_help: str = "use at most this many records (0 = all)",
                    max_samples_aliases: tuple[str, ...] = (), text_column_aliases: tuple[str, ...] = (),
                    text_column_default: str | None = None, required: bool = False,
                    data_help: str = "local JSONL file", data_flag: str = "--data_path") -> argparse._ArgumentGroup:
    """Where records come from: `--data_path` (alias `--input`) or a Hugging Face dataset, not both.

    `default_data` is used when neither is given; `required`: one of them must be given (otherwise the
    data may be absent); `data_flag` is the spelling messages use (the converters document `--input`).
    """
    g = p.add_argument_group("data source")
    g.add_argument("--data_path", "--input", "-i", *data_aliases, dest="data_path", default=None,
                   help=data_help + (f" (default {default_data})" if default_data else ""))
    if hf:
        g.add_argument("--hf-dataset", dest="hf_dataset", default=None,
                       help="Hugging Face dataset: a Hub name (streamed) or a local file / folder read with `datasets`")
        g.add_argument("--hf-subset", dest="hf_subset", default=None, help="dataset configuration (with --hf-dataset)")
        g.add_argument("--hf-split", dest="hf_split", default=None, help="split (with --hf-dataset; default train)")
    if text_column:
        g.add_argument("--text-column", *text_column_aliases, dest="text_column", default=text_column_default,
                       help="field / column holding the text (default: auto-detected)")
    if max_samples:
        g.add_argument("--max-samples", *max_samples_aliases, dest="max_samples", type=nonneg_int, default=None,
                       help=max_samples_help)
    p.add_check(lambda a: _check_source(a, default_data, required, data_flag))
    p.add_check(lambda a: _check_source_path(a, default_data, data_flag), paths=True)
    return g


def _check_source(args, default_data: str | None, required: bool, flag: str) -> None:
    hf = getattr(args, "hf_dataset", None)
    if hf is not None and args.data_path is not None:
        raise UsageError(f"{flag} {args.data_path} and --hf-dataset {hf} both name the data; give one")
    for name in ("hf_subset", "hf_split"):
        if getattr(args, name, None) is not None and hf is None:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)} goes with --hf-dataset, which was "
                             "not given")
    if hf is not None and args.hf_split is None:
        args.hf_split = "train"
    if getattr(args, "max_samples", None) == 0:
        args.max_samples = None
    if hf is None and args.data_path is None:
        if default_data is not None:
            args.data_path = default_data
        elif required:
            raise UsageError(f"give the data: {flag} FILE" + (" or --hf-dataset NAME" if hasattr(args, "hf_dataset")
                                                              else ""))


def _check_source_path(args, default_data: str | None, flag: str) -> None:
    if args.data_path is None:
        return
    if args.data_path == default_data and not Path(args.data_path).exists():
        build = "build the bundled demo data with `python scripts/build_demo_data.py`, or " if "demo" in str(
            default_data) else ""
        raise UsageError(f"{flag} defaults to {args.data_path}, which does not exist ({build}pass {flag})")
    check_input_file(args.data_path, flag)


def add_data_args(p: ArgParser, *, default_data: str | None, kind: str = "text", training: bool = False,
                  workers: int = 1, required: bool = False) -> None:
    """Training / evaluation data. `kind`: "text" (pretraining texts), "conversations" (SFT), "either"
    (chosen per run by `--data_mode`, see `add_data_mode_args`), "pairs" (chosen / rejected preference
    records) or "prompts" (RL prompts with answers); pairs and prompts have no text column, packing or
    conversation format to choose. `required`: with no default, the data must be given."""
    if kind not in ("text", "conversations", "either", "pairs", "prompts"):
        raise ValueError(f"kind must be 'text', 'conversations', 'either', 'pairs' or 'prompts', got {kind!r}")
    g = add_source_args(p, default_data=default_data, text_column=kind not in ("pairs", "prompts"), required=required,
                        max_samples_help="use at most this many records (chunks when packing; 0 = all)")
    if kind in ("pairs", "prompts"):
        p.set_defaults(text_column=None, chunk_length=None, format="auto")
    else:
        g.add_argument("--chunk-length", dest="chunk_length", type=positive_int, default=None,
                       help="pack token ids into exact pieces of this many tokens (text data)")
    if kind in ("conversations", "either"):
        add_format_arg(g)
    if kind == "conversations":
        p.add_check(_check_conversation_data)
    g.add_argument("--offline", action="store_true", help="never contact the Hugging Face Hub")
    g.add_argument("--max_seq_len", type=positive_int, default=512,
                   help="tokens per branch: longer pretraining texts are split, longer conversations cut (counted); "
                        "RL prompts longer than this are errors")
    g.add_argument("--num_workers", type=nonneg_int, default=workers, help="DataLoader workers per rank")
    if training:
        g.add_argument("--val_samples", type=nonneg_int, default=0,
                       help="held-out records (seeded, same on every rank)")
        g.add_argument("--val_interval", type=nonneg_int, default=0, help="validate every N optimizer steps")
        g.add_argument("--val_interval_samples", type=nonneg_int, default=0, help="validate every N samples")
        g.add_argument("--val_interval_tokens", type=nonneg_int, default=0, help="validate every N target tokens")
        g.add_argument("--strict_data", action="store_true",
                       help="records that give no target token, or are cut at max_seq_len, are errors (default: "
                            "counted and reported with file and line)")
        p.add_check(_check_validation)


def _check_conversation_data(args) -> None:
    if args.text_column is not None:
        raise UsageError(f"--text-column {args.text_column} picks the text field of pretraining data, but this stage "
                         "reads conversations (their layout is chosen with --format)")
    if args.chunk_length is not None:
        raise UsageError("--chunk-length (token packing) is for pretraining text; conversations are kept whole")


def add_format_arg(g) -> None:
    from parallel_data.formats import FORMATS

    g.add_argument("--format", default="auto", choices=("auto", *FORMATS),
                   help="conversation format of the records (auto: detected per record)")


DATA_MODES = ("parallel", "parallel_sft")


def add_data_mode_args(p: ArgParser, *, default_mode: str = "parallel") -> None:
    """What the records are (`--data_mode`) and where their tokenised form is cached; goes with
    `add_data_args(kind="either")`.

    parallel: pretraining-style records (`{"text"}`, `{"text", "answer_offset"}`, `{"input_ids"}`,
    grouped `{"main", "branches"}`), loss on every token after the answer offset; parallel_sft:
    conversations, loss on the assistant turns only.
    """
    g = p.add_argument_group("data mode and cache")
    g.add_argument("--data_mode", choices=DATA_MODES, default=default_mode,
                   help="parallel: text / grouped records; parallel_sft: conversations (loss on the answers only)")
    g.add_argument("--parallel_cache_dir", default=None,
                   help="keep the tokenised records and their step counts here, so a second run with the same "
                        "data, tokenizer and settings starts at once (anything changed: rebuilt)")
    g.add_argument("--rebuild_parallel_cache", action="store_true",
                   help="tokenise again even when --parallel_cache_dir holds a valid cache")
    g.add_argument("--use_streaming", action="store_true",
                   help="--hf-dataset: stream the rows instead of loading the dataset first (needs --max-samples "
                        "or --max_steps for the schedule when the dataset is an endless Hub stream)")
    p.add_check(_check_data_mode)
    p.add_check(_check_cache_dir, paths=True)


def _check_data_mode(args) -> None:
    if args.data_mode == "parallel_sft":
        _check_conversation_data(args)
    elif args.format != "auto":
        raise UsageError(f"--format {args.format} is the layout of conversations, but --data_mode parallel reads "
                         "text records (use --data_mode parallel_sft for conversations)")
    if args.rebuild_parallel_cache and not args.parallel_cache_dir:
        raise UsageError("--rebuild_parallel_cache rebuilds the cache in --parallel_cache_dir, which was not given")
    if args.parallel_cache_dir and args.chunk_length:
        raise UsageError("--parallel_cache_dir caches records one by one; --chunk-length packs tokens across "
                         "records, which is not cached (drop one of them)")
    if args.parallel_cache_dir and args.hf_dataset:
        raise UsageError("--parallel_cache_dir caches a local --data_path file; a --hf-dataset is read as a stream "
                         "(drop one of them)")
    if args.use_streaming and not args.hf_dataset:
        raise UsageError("--use_streaming goes with --hf-dataset (a local --data_path is always read in blocks)")


def _check_cache_dir(args) -> None:
    if args.parallel_cache_dir:
        check_writable_dir(args.parallel_cache_dir, "--parallel_cache_dir")


def _check_validation(args) -> None:
    given = [f"--{k}" for k in ("val_interval", "val_interval_samples", "val_interval_tokens",
                                "val_branches_per_sample", "val_min_branches_per_sample", "val_max_branches_per_sample")
             if getattr(args, k, None)]
    if given and not args.val_samples:
        raise UsageError(f"{given[0]} was given but --val_samples is 0: hold out some records to validate on")


def add_skip_bad_arg(p: ArgParser, what: str = "records") -> None:
    p.add_argument("--skip_bad", action="store_true", help=f"skip (and count) malformed {what} instead of stopping")


# --- model source --------------------------------------------------------------------------------------

