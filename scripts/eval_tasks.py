"""Exact-match accuracy on checkable tasks at several branch counts, parallel vs one prompt at a time.

Run from the repo root:

    python scripts/eval_tasks.py --model_path out/demo/pretrain_192.pth --tasks dataset/eval_tasks_demo.jsonl \\
        --branches 1,2,4,8,16 --out out/demo/tasks.json

Independent tasks (arithmetic, copying, reversal, counting) are decoded N per group; shared-context fact
questions as one context (prefilled once) with N question branches. Writes JSON and a PNG plot.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import args as flags
from trainer.cli import ArgParser, cli_main, make_parser


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "eval_tasks")
    flags.add_model_source_args(p)
    t = p.add_argument_group("tasks")
    t.add_argument("--tasks", default="dataset/eval_tasks_demo.jsonl",
                   help="JSONL of {id, kind, context, prompt, answer}")
    flags.add_branch_counts_arg(t, default=[1, 2, 4, 8, 16])
    t.add_argument("--max_tasks", type=flags.positive_int, default=128, help="tasks per branch count and setting")
    t.add_argument("--kinds", default=None, help="comma-separated task kinds to keep (default: all)")
    flags.add_decoding_args(p, max_new_tokens=12, batch_groups=1, sampling=False)
    flags.add_mask_args(p)
    flags.add_runtime_args(p, seed=None)
    flags.add_output_args(p, out_path=True, default="out/tasks.json",
                          out_path_help="JSON report; the PNG plot goes next to it")
    p.add_check(lambda a: flags.check_input_file(a.tasks, "--tasks"), paths=True)
    return p


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for setting, style in (("independent", "o-"), ("shared_context", "s-")):
        par = [r for r in report["rows"] if r["setting"] == setting and r["mode"] == "parallel"]
        if par:
            ax.plot([r["branches"] for r in par], [r["accuracy"] for r in par], style, label=f"{setting}: parallel")
        seq = [r for r in report["rows"] if r["setting"] == setting and r["mode"] == "sequential"]
        if len(seq) == 1 and par:  # one measurement for every branch count: a reference line
            ax.plot([par[0]["branches"], par[-1]["branches"]], [seq[0]["accuracy"]] * 2, "--", color="gray",
                    alpha=0.7, label=f"{setting}: one at a time")
        elif seq:
            ax.plot([r["branches"] for r in seq], [r["accuracy"] for r in seq], style, alpha=0.4,
                    label=f"{setting}: one at a time")
    counts = sorted({r["branches"] for r in report["rows"]})
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel("branches per group")
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    from evaluation.tasks import evaluate_tasks, read_tasks
    from model.device import resolve_device
    from model.loading import load_parallel_model
    from model.parallel_generation import ParallelGenerator

    tasks = read_tasks(args.tasks)
    if args.kinds:
        keep = set(args.kinds.split(","))
        tasks = [t for t in tasks if t["kind"] in keep]
        if not tasks:
            raise ValueError(f"--kinds {args.kinds}: no task of these kinds in {args.tasks}")
    loaded = load_parallel_model(model_path=args.model_path, hf_base_model=args.hf_base_model,
                                 lora_path=args.lora_path, lora_rank=args.lora_rank, tokenizer_path=args.tokenizer,
                                 device=resolve_device(args.device), dtype=args.dtype)
    gen = ParallelGenerator(loaded.model, loaded.tokenizer, mask_mode=args.mask_mode,
                            branch_stride=loaded.branch_stride, align_to=args.align_to)
    report = evaluate_tasks(gen, tasks, args.branches, max_tasks=args.max_tasks, max_new_tokens=args.max_new_tokens,
                            batch_samples=args.batch_groups, log=lambda m: print(m, flush=True))
    report["model"] = loaded.source
    out = Path(args.out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
