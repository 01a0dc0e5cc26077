"""Parallel loss evaluation: token-weighted loss and perplexity at one or several branch counts.

Run from the repo root (see README.md, "Loss Evaluation"):

    python scripts/eval_loss.py --model_path out/pretrain_512.pth --data_path dataset/pretrain_demo_val.jsonl \\
        --eval_branches 1,2,4,8,16,32,64 --batch_size 8 --batch_by_samples
    torchrun --nproc_per_node 8 scripts/eval_loss.py --model_path out/rope_pretrain/pretrain_512.pth \\
        --data_path dataset/pretrain_hq_split.jsonl --val_max_branches_per_sample 4 --val_min_branches_per_sample 4 ...

With --eval_branches every count is evaluated on exactly the same texts, each sample holding exactly
that many branches (texts that do not fill a sample are reported, never evaluated with fewer
branches). Results are identical for any number of ranks. Writes the JSON report (--out_path, default
<out_dir>/eval_loss.json; `--out_prefix P` is --out_path P.json), a CSV and a PNG plot next to it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import args as flags
from trainer.cli import ArgParser, UsageError, cli_main, make_parser


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "eval_loss")
    p.add_check(_check_eval)  # first: it looks at the branch flags as given
    flags.add_model_source_args(p)
    flags.add_data_args(p, default_data="dataset/pretrain_demo_val.jsonl", kind="text", workers=0)
    e = p.add_argument_group("evaluation")
    e.add_argument("--eval_samples", "--eval_target_samples", "--eval_total_texts", dest="eval_texts",
                   type=flags.nonneg_int, default=0, help="texts to evaluate, from the start of the data (0 = all)")
    flags.add_branch_counts_arg(e, default=None, help="comma-separated branch counts, e.g. 1,2,4,8,16,32,64 (one "
                                                      "evaluation each, on the same texts)")
    e.add_argument("--max_batches", type=flags.nonneg_int, default=0, help="stop after this many batches per count")
    flags.add_log_interval_arg(e, 50, "a progress line every N batches")
    flags.add_branch_args(p, default_branches=8, batch_size=32, training=False)
    flags.add_mask_args(p)
    flags.add_model_shape_args(p)
    flags.add_rope_args(p)
    flags.add_runtime_args(p, seed=0, distributed=True)
    flags.add_output_args(p, out_dir="out", out_dir_help="default folder of the report (<out_dir>/eval_loss.json)",
                          out_dir_is_output=False, out_path=True,
                          out_path_help="the JSON report; the CSV and PNG are written next to it (default "
                                        "<out_dir>/eval_loss.json)")
    p.add_argument("--out_prefix", default=None, help="the report's path without extension (<out_prefix>.json, .csv, "
                                                      ".png); same as --out_path <out_prefix>.json")
    p.add_check(_check_outputs, paths=True)
    return p


def _check_eval(args) -> None:
    if args.num_workers:
        raise UsageError(f"--num_workers {args.num_workers}: evaluation reads in the main process (use 0)")
    if args.out_prefix is not None and args.out_path is not None:
        raise UsageError(f"--out_path {args.out_path} and --out_prefix {args.out_prefix} both name the report; "
                         "give one")
    counts = ("branches_per_sample", "max_branches_per_sample", "min_branches_per_sample", "val_branches_per_sample",
              "val_max_branches_per_sample", "val_min_branches_per_sample")
    given = [f"--{k}" for k in counts if getattr(args, k) is not None]
    if args.branches and given:
        raise UsageError(f"--eval_branches and {given[0]} both set the branch counts; give one")


def report_path(args) -> Path:
    if args.out_path is not None:
        return Path(args.out_path)
    return (Path(args.out_prefix) if args.out_prefix else Path(args.out_dir) / "eval_loss").with_suffix(".json")


def _check_outputs(args) -> None:
    json_path = report_path(args)
    for suffix in (".json", ".csv", ".png"):
        flag = "--out_path" if args.out_prefix is None else "--out_prefix"
        flags.check_writable_file(json_path.with_suffix(suffix), flag)


def branch_settings(args) -> list[dict]:
    if args.branches:
        return [{"branches": b} for b in args.branches]
    return [flags.eval_branch_setting(args)]


def label(setting: dict) -> str:
    return str(setting["branches"]) if "branches" in setting else f"{setting['min_branches']}-{setting['max_branches']}"


def write_outputs(prefix: Path, report: dict) -> list[str]:
    """<prefix>.json, .csv and (two or more branch counts) .png."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    files = [str(prefix.with_suffix(".json")), str(prefix.with_suffix(".csv"))]
    prefix.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    with open(prefix.with_suffix(".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["branches", "loss", "ppl", "tokens", "samples", "texts", "leftover_texts"])
        for r in report["results"]:
            w.writerow([r["branches"], f"{r['loss']:.6f}", f"{r['ppl']:.4f}", r["tokens"], r["samples"], r["texts"],
                        r["leftover_texts"]])
    numeric = [r for r in report["results"] if str(r["branches"]).isdigit()]
    if len(numeric) >= 2:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [int(r["branches"]) for r in numeric]
        ax.plot(xs, [r["loss"] for r in numeric], marker="o")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("branches per sample")
        ax.set_ylabel("loss (token-weighted)")
        ax.set_title(f"loss vs branch count: {Path(report['model']).name}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(prefix.with_suffix(".png"), dpi=110)
        plt.close(fig)
        files.append(str(prefix.with_suffix(".png")))
    return files


def _common_units(units: list[dict], settings: list[dict]) -> tuple[list[dict], int]:
    """The texts every branch count evaluates (a multiple of each count), and how many are left out."""
    counts = [s["branches"] for s in settings if "branches" in s]
    grouped = sum("branches" in u for u in units)
    if grouped and counts:
        raise ValueError("--eval_branches regroups single texts; this data holds grouped {main, branches} records")
    if not counts or grouped:
        return units, 0
    common = math.lcm(*counts)
    usable = len(units) // common * common
    if usable == 0:
        raise ValueError(f"{len(units)} texts cannot fill one sample at every count in {counts} "
                         f"(need a multiple of {common}); evaluate more texts or fewer branches")
    return units[:usable], len(units) - usable  # the same texts at every branch count


def evaluate(args, dist) -> dict:
    import torch

    from model.device import resolve_dtype
    from model.loading import legacy_config_factory, load_parallel_model, shape_flags
    from parallel_data.parallel_collator import ParallelCollator
    from parallel_data.parallel_dataset import ParallelPretrainDataset
    from parallel_data.stream import eval_batches
    from trainer.loss import evaluate_loss

    settings = branch_settings(args)
    loaded = load_parallel_model(model_path=args.model_path, hf_base_model=args.hf_base_model,
                                 lora_path=args.lora_path, lora_rank=args.lora_rank, tokenizer_path=args.tokenizer,
                                 device=dist.device, dtype=args.dtype, legacy_config=legacy_config_factory(args),
                                 expect=shape_flags(args), rope_2d_ratio=args.rope_2d_ratio,
                                 rope_2d_scheme=args.rope_2d_scheme, branch_stride=args.branch_stride, pe=args.pe)
    ds = ParallelPretrainDataset(loaded.tokenizer, data_path=args.data_path, hf_dataset=args.hf_dataset,
                                 hf_subset=args.hf_subset, hf_split=args.hf_split, text_column=args.text_column,
                                 max_samples=args.max_samples, chunk_length=args.chunk_length,
                                 max_seq_len=args.max_seq_len, shuffle=False)
    t0 = time.perf_counter()
    units = list(ds.all_units())  # tokenised once, reused for every branch count
    units, dropped = _common_units(units[: args.eval_texts] if args.eval_texts else units, settings)
    if dist.is_main:
        print(f"evaluating {loaded.source} on {len(units)} texts ({dropped} left out so every branch count sees "
              f"the same texts) from {args.hf_dataset or args.data_path}; tokenised in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)

    dtype = resolve_dtype(args.dtype, dist.device)
    amp = dtype if (dtype != torch.float32 and next(loaded.model.parameters()).dtype == torch.float32) else None
    results = []
    for st in settings:
        b = st.get("branches", st.get("max_branches", args.branches_per_sample))
        bs = args.batch_size if args.batch_by_samples else max(1, args.batch_size // b)
        coll = ParallelCollator(loaded.tokenizer, branch_stride=loaded.branch_stride, align_to=args.align_to,
                                max_total_tokens=args.max_total_tokens, seed=args.seed)
        batches, info = eval_batches(iter(units), rank=dist.rank, world_size=dist.world_size, batch_size=bs,
                                     collator=coll, seed=args.seed, random_time_offset=args.random_time_offset,
                                     **st)
        t1 = time.perf_counter()
        res = evaluate_loss(loaded.model, batches, dist.device, mask_mode=args.mask_mode, amp_dtype=amp,
                            max_batches=args.max_batches, progress=_progress(args, label(st), t1, dist.is_main))
        res.update(branches=label(st), samples=info["samples"], texts=info["texts"],
                   leftover_texts=info["leftover_texts"], seconds=round(time.perf_counter() - t1, 2))
        results.append(res)
        if dist.is_main:
            print(f"branches={label(st)} loss={res['loss']:.4f} ppl={res['ppl']:.2f} tokens={res['tokens']} "
                  f"samples={res['samples']}", flush=True)
    return {"model": loaded.source, "data": args.hf_dataset or args.data_path, "mask": args.mask_mode,
            "texts": len(units), "texts_left_out": dropped, "world_size": dist.world_size, "results": results}


def _progress(args, what: str, t0: float, is_main: bool):
    """The evaluate_loss callback: one line every --log_interval batches (this rank's count)."""
    def report(n_batches: int) -> None:
        if is_main and n_batches % args.log_interval == 0:
            print(f"branches={what}: {n_batches} batches in {time.perf_counter() - t0:.1f} s", file=sys.stderr,
                  flush=True)
    return report


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    if args.offline:
        import os

        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    from trainer.distributed import cleanup, init_distributed

    dist = init_distributed(args.device, args.ddp, args.local_rank)
    try:
        report = evaluate(args, dist)
        if dist.is_main:
            files = write_outputs(report_path(args).with_suffix(""), report)
            print("wrote " + ", ".join(files), file=sys.stderr)
        return 0
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
