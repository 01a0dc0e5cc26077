"""Parallel loss evaluation: token-weighted loss and perplexity at one or several branch counts.

Run from the repo root (see README.md, "Loss Evaluation"):

    python scripts/eval_loss.py --model_path out/pretrain_512.pth --data_path dataset/pretrain_demo_val.jsonl \\
        --eval_branches 1,2,4,8,16,32,64 --batch_size 8 --batch_by_samples
    torchrun --nproc_per_node 8 scripts/eval_loss.py --model_path out/rope_pretrain/pretrain_512.pth \\
        --data_path dataset/pretrain_hq_split.jsonl --val_max_branches_per_sample 4 --val_min_branches_per_sample 4 ...

With --eval_branches every count is evaluated on exactly the same texts, each sample holding exactly
that many branches (texts that do not fill a sample are reported, never evaluated with fewer
branches). Results are identical for any number of ranks. Writes <out_prefix>.json, .csv and a PNG plot.
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

import torch

from model.loading import legacy_config_factory, load_parallel_model, resolve_dtype, shape_flags
from parallel_data.io import DataError
from parallel_data.parallel_collator import ParallelCollator
from parallel_data.parallel_dataset import ParallelPretrainDataset
from parallel_data.stream import eval_batches
from trainer.args import nonneg_int, positive_int, ratio, str2bool
from trainer.distributed import cleanup, init_distributed
from trainer.loss import evaluate_loss


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_path", default=None, help="a .pth checkpoint or a saved model folder")
    p.add_argument("--hf_base_model", default=None)
    p.add_argument("--lora_path", default=None)
    p.add_argument("--lora_rank", type=positive_int, default=None)
    p.add_argument("--tokenizer", "--tokenizer_path", dest="tokenizer", default=None)
    p.add_argument("--data_path", default="dataset/pretrain_demo_val.jsonl")
    p.add_argument("--hf-dataset", "--hf_dataset", dest="hf_dataset", default=None)
    p.add_argument("--hf-subset", "--hf_subset", dest="hf_subset", default=None)
    p.add_argument("--hf-split", "--hf_split", dest="hf_split", default="train")
    p.add_argument("--text-column", "--text_column", dest="text_column", default=None)
    p.add_argument("--max-samples", "--max_samples", dest="max_samples", type=positive_int, default=None,
                   help="records read from the data")
    p.add_argument("--chunk-length", "--chunk_length", dest="chunk_length", type=positive_int, default=None)
    p.add_argument("--offline", action="store_true")
    p.add_argument("--eval_samples", "--eval_target_samples", "--eval_total_texts", dest="eval_texts",
                   type=nonneg_int, default=0, help="texts to evaluate, from the start of the data (0 = all)")
    p.add_argument("--max_seq_len", type=positive_int, default=512, help="longer texts are split into branches")
    p.add_argument("--eval_branches", default=None,
                   help="comma-separated branch counts, e.g. 1,2,4,8,16,32,64 (one evaluation each)")
    p.add_argument("--branches_per_sample", type=positive_int, default=8)
    p.add_argument("--max_branches_per_sample", type=positive_int, default=None)
    p.add_argument("--min_branches_per_sample", type=positive_int, default=1)
    p.add_argument("--val_branches_per_sample", type=positive_int, default=None)
    p.add_argument("--val_max_branches_per_sample", type=positive_int, default=None)
    p.add_argument("--val_min_branches_per_sample", type=positive_int, default=None)
    p.add_argument("--batch_size", type=positive_int, default=32)
    p.add_argument("--batch_by_samples", action="store_true", help="batch_size counts samples, not texts")
    p.add_argument("--max_total_tokens", type=nonneg_int, default=0, help="cap per sample (0 = off), counted")
    p.add_argument("--random_time_offset", dest="random_time_offset", action="store_true", default=False)
    p.add_argument("--no_random_time_offset", dest="random_time_offset", action="store_false")
    p.add_argument("--align_to", choices=["left", "right"], default="left")
    p.add_argument("--mask", choices=["columnar", "isolated"], default="columnar", dest="mask_mode")
    p.add_argument("--max_batches", type=nonneg_int, default=0, help="stop after this many batches per count")
    p.add_argument("--log_interval", type=positive_int, default=50)
    p.add_argument("--num_workers", type=nonneg_int, default=0, help="accepted for compatibility: must be 0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto")
    p.add_argument("--ddp", action="store_true")
    p.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=-1)
    p.add_argument("--out_dir", default="out")
    p.add_argument("--out_prefix", default=None, help="default: <out_dir>/eval_loss")
    g = p.add_argument_group("model settings (only for checkpoints that do not carry them)")
    for name, kw in (("hidden_size", dict(type=positive_int)), ("num_hidden_layers", dict(type=positive_int)),
                     ("num_attention_heads", dict(type=positive_int)), ("num_key_value_heads", dict(type=positive_int)),
                     ("use_moe", dict(type=str2bool, nargs="?", const=True)), ("pe", dict(choices=["rope", "fpe"])),
                     ("rope_2d_ratio", dict(type=ratio)), ("rope_2d_scheme", dict(choices=["additive", "reference"])),
                     ("branch_stride", dict(type=positive_int))):
        g.add_argument(f"--{name}", default=None, **kw)
    return p.parse_args(argv)


def branch_settings(args) -> list[dict]:
    if args.eval_branches:
        try:
            counts = [int(x) for x in args.eval_branches.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"--eval_branches: expected comma-separated integers, got {args.eval_branches!r}") from None
        if not counts or min(counts) < 1:
            raise ValueError(f"--eval_branches: counts must be positive, got {args.eval_branches!r}")
        return [{"branches": b} for b in counts]
    if args.val_branches_per_sample:
        return [{"branches": args.val_branches_per_sample}]
    lo = args.val_min_branches_per_sample or (args.min_branches_per_sample if args.max_branches_per_sample else None)
    hi = args.val_max_branches_per_sample or args.max_branches_per_sample
    if hi is None and lo is None:
        return [{"branches": args.branches_per_sample}]
    lo, hi = lo or 1, hi or lo
    return [{"branches": lo}] if lo == hi else [{"min_branches": lo, "max_branches": hi}]


def label(setting: dict) -> str:
    return str(setting["branches"]) if "branches" in setting else f"{setting['min_branches']}-{setting['max_branches']}"


def write_outputs(prefix: Path, report: dict) -> list[str]:
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


def evaluate(args, dist) -> dict:
    settings = branch_settings(args)
    if args.num_workers:
        raise ValueError("--num_workers: evaluation reads in the main process (use 0)")
    loaded = load_parallel_model(model_path=args.model_path, hf_base_model=args.hf_base_model,
                                 lora_path=args.lora_path, lora_rank=args.lora_rank, tokenizer_path=args.tokenizer,
                                 device=dist.device, dtype="float32" if args.dtype == "auto" and
                                 dist.device.type == "cpu" else args.dtype,
                                 legacy_config=legacy_config_factory(args), expect=shape_flags(args), rope_2d_ratio=args.rope_2d_ratio,
                                 rope_2d_scheme=args.rope_2d_scheme, branch_stride=args.branch_stride, pe=args.pe)
    ds = ParallelPretrainDataset(loaded.tokenizer, data_path=args.data_path, hf_dataset=args.hf_dataset,
                                 hf_subset=args.hf_subset, hf_split=args.hf_split, text_column=args.text_column,
                                 max_samples=args.max_samples, chunk_length=args.chunk_length,
                                 max_seq_len=args.max_seq_len, shuffle=False)
    t0 = time.perf_counter()
    units = list(ds.all_units())  # tokenised once, reused for every branch count
    if args.eval_texts:
        units = units[: args.eval_texts]
    counts = [s["branches"] for s in settings if "branches" in s]
    grouped = sum("branches" in u for u in units)
    if grouped and counts:
        raise ValueError("--eval_branches regroups single texts; this data holds grouped {main, branches} records")
    if counts and not grouped:
        common = math.lcm(*counts)
        usable = len(units) // common * common
        if usable == 0:
            raise ValueError(f"{len(units)} texts cannot fill one sample at every count in {counts} "
                             f"(need a multiple of {common}); evaluate more texts or fewer branches")
        dropped = len(units) - usable
        units = units[:usable]  # the same texts at every branch count
    else:
        dropped = 0
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
                            max_batches=args.max_batches)
        res.update(branches=label(st), samples=info["samples"], texts=info["texts"],
                   leftover_texts=info["leftover_texts"], seconds=round(time.perf_counter() - t1, 2))
        results.append(res)
        if dist.is_main:
            print(f"branches={label(st)} loss={res['loss']:.4f} ppl={res['ppl']:.2f} tokens={res['tokens']} "
                  f"samples={res['samples']}", flush=True)
    return {"model": loaded.source, "data": args.hf_dataset or args.data_path, "mask": args.mask_mode,
            "texts": len(units), "texts_left_out": dropped, "world_size": dist.world_size, "results": results}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.offline:
        import os

        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    dist = init_distributed(args.device, args.ddp, args.local_rank)
    try:
        report = evaluate(args, dist)
        if dist.is_main:
            prefix = Path(args.out_prefix) if args.out_prefix else Path(args.out_dir) / "eval_loss"
            files = write_outputs(prefix, report)
            print("wrote " + ", ".join(files), file=sys.stderr)
        return 0
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"eval_loss: error: {e}", file=sys.stderr)
        return 2
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
