"""Branch-scaling experiment at demo scale: which 2D RoPE scheme and ratio keep the loss flat as branches grow?

    python scripts/run_experiments.py          # the 300-step table (49 min measured on 2 shared CPU cores)
    make experiments                           # both tables of docs/EXPERIMENTS.md (about 95 min)

Trains the demo-sized MiniMind six times on the bundled pretraining text with the same seed, data order and
number of texts per optimizer step: `additive` and `reference` schemes x rope_2d_ratio 0.5 and 1.0, each on
samples of 1..8 branches; one model trained on single-branch samples only; and additive-r0.5 trained with
random branch coordinate slots out of 32 (`--random_branch_slots 32`). Every model is then
evaluated on the same held-out texts at 1, 2, 4, 8, 16 and 32 branches per sample. Reports loss(32)/loss(1)
and the single-branch cost of parallel training, writes out/experiments/results.json, a plot, and the results
section of docs/EXPERIMENTS.md (between the RESULTS markers).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.args import add_output_args, add_steps_arg, positive_int
from trainer.cli import ArgParser, UsageError, cli_main, make_parser

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["--hidden_size", "192", "--num_hidden_layers", "4", "--num_attention_heads", "6", "--num_key_value_heads", "2"]
EVAL_BRANCHES = [1, 2, 4, 8, 16, 32]
RUNS = [  # name, scheme, ratio, branch flags
    ("additive-r0.5", "additive", 0.5, ["--max_branches_per_sample", "8", "--min_branches_per_sample", "1"]),
    ("additive-r1.0", "additive", 1.0, ["--max_branches_per_sample", "8", "--min_branches_per_sample", "1"]),
    ("reference-r0.5", "reference", 0.5, ["--max_branches_per_sample", "8", "--min_branches_per_sample", "1"]),
    ("reference-r1.0", "reference", 1.0, ["--max_branches_per_sample", "8", "--min_branches_per_sample", "1"]),
    ("single-branch", "additive", 0.5, ["--branches_per_sample", "1"]),
    ("additive-r0.5-slots32", "additive", 0.5, ["--max_branches_per_sample", "8", "--min_branches_per_sample", "1",
                                                "--random_branch_slots", "32"]),
]


def sh(cmd: list[str]) -> None:
    """Run a stage on one thread: float reductions differ with the thread count, so one thread makes the
    numbers of docs/EXPERIMENTS.md the same on any machine (of the same CPU family), whatever its cores."""
    print("\n$ OMP_NUM_THREADS=1 python " + " ".join(cmd[1:]), flush=True)
    r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    if r.returncode:
        raise SystemExit(f"experiment stage failed (exit {r.returncode})")


def write_doc(results: dict, steps: int, texts: int, tag: str = "") -> None:
    doc = ROOT / "docs" / "EXPERIMENTS.md"
    rows = ["| run | scheme | ratio | train branches | " + " | ".join(f"loss@{b}" for b in EVAL_BRANCHES) +
            " | loss(32)/loss(1) |", "|" + "---|" * (5 + len(EVAL_BRANCHES))]
    single = results.get("single-branch", {}).get("loss", {}).get("1")
    for name, scheme, ratio, flags in RUNS:
        r = results.get(name)
        if not r:
            continue
        losses = r["loss"]
        rel = losses[str(EVAL_BRANCHES[-1])] / losses["1"] - 1
        train = "1" if "--branches_per_sample" in flags else "1..8"
        rows.append(f"| {name} | {scheme} | {ratio} | {train} | " +
                    " | ".join(f"{losses[str(b)]:.4f}" for b in EVAL_BRANCHES) + f" | {rel * 100:+.1f}% |")
    cost = []
    for name, _, _, flags in RUNS:
        if name in results and single and "--branches_per_sample" not in flags:
            cost.append(f"| {name} | {results[name]['loss']['1']:.4f} | {single:.4f} | "
                        f"{(results[name]['loss']['1'] / single - 1) * 100:+.1f}% |")
    body = "\n".join([
        f"Measured {time.strftime('%Y-%m-%d')} with `{' '.join(['python', 'scripts/run_experiments.py', *sys.argv[1:]])}` "
        f"({steps} optimizer steps of "
        f"{texts} texts each per run, same seed and data order; evaluation on the same held-out texts at every "
        "branch count).", "", "\n".join(rows), "",
        "Single-branch cost of parallel training (loss at 1 branch vs the model trained on single branches):", "",
        "| run | loss@1 | single-branch model loss@1 | cost |", "|---|---|---|---|", "\n".join(cost), "",
        f"![branch scaling](images/branch_scaling{tag}.png)"])
    text = doc.read_text() if doc.exists() else "# Experiments\n\n<!-- RESULTS START -->\n<!-- RESULTS END -->\n"
    start, end = f"<!-- RESULTS{tag} START -->", f"<!-- RESULTS{tag} END -->"
    if start not in text or end not in text:
        text += f"\n{start}\n{end}\n"
    pre, rest = text.split(start, 1)
    _, post = rest.split(end, 1)
    doc.write_text(pre + start + "\n" + body + "\n" + end + post)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, r in results.items():
        ax.plot(EVAL_BRANCHES, [r["loss"][str(b)] for b in EVAL_BRANCHES], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(EVAL_BRANCHES, [str(b) for b in EVAL_BRANCHES])
    ax.set_xlabel("branches per sample at evaluation")
    ax.set_ylabel("held-out loss")
    ax.set_title("branch scaling (trained on 1..8 branches; single-branch baseline)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "run_experiments")
    add_output_args(p, out_dir="out/experiments", out_dir_help="one folder per run, results.json and the plot data")
    g = p.add_argument_group("experiment")
    add_steps_arg(g, 300, "optimizer steps per run")
    g.add_argument("--texts_per_step", type=positive_int, default=32, help="texts per optimizer step")
    g.add_argument("--eval_texts", type=positive_int, default=512, help="held-out texts evaluated per branch count")
    g.add_argument("--only", default=None, help="comma-separated run names (default: all)")
    g.add_argument("--tag", default="", help="suffix of the results section / plot (e.g. '-long')")
    p.add_check(_check_only)
    return p



def _check_only(args) -> None:
    names = [r[0] for r in RUNS]
    unknown = sorted(set(args.only.split(",")) - set(names)) if args.only else []
    if unknown:
        raise UsageError(f"--only {args.only}: no run named {', '.join(unknown)} (runs: {', '.join(names)})")


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    py, out = sys.executable, ROOT / args.out_dir
    from model.tokenizer import DEFAULT_TOKENIZER_DIR
    from parallel_data.demo.corpus import corpus_is_current

    if not corpus_is_current(ROOT / "dataset", DEFAULT_TOKENIZER_DIR / "tokenizer.json"):  # missing or stale
        sh([py, "scripts/build_demo_data.py"])
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    only = set(args.only.split(",")) if args.only else None
    for name, scheme, ratio, flags in RUNS:
        if only and name not in only:
            continue
        run_dir = out / name
        sh([py, "trainer/train_pretrain.py", "--data_path", "dataset/pretrain_demo.jsonl", "--out_dir", str(run_dir),
            "--overwrite", *MODEL, "--rope_2d_scheme", scheme, "--rope_2d_ratio", str(ratio), *flags, "--batch_size",
            str(args.texts_per_step), "--max_seq_len", "160", "--learning_rate", "2e-3", "--warmup_iters", "30",
            "--max_steps", str(args.steps), "--log_interval", "50", "--save_interval", "100000", "--num_workers",
            "1", "--seed", "1234"])
        prefix = run_dir / "eval_loss"
        sh([py, "scripts/eval_loss.py", "--model_path", str(run_dir / "pretrain_192.pth"), "--data_path",
            "dataset/pretrain_demo_val.jsonl", "--eval_branches", ",".join(map(str, EVAL_BRANCHES)),
            "--eval_samples", str(args.eval_texts), "--batch_size", "4", "--batch_by_samples", "--max_seq_len", "160",
            "--out_prefix", str(prefix)])
        rep = json.loads(prefix.with_suffix(".json").read_text())
        results[name] = {"scheme": scheme, "ratio": ratio, "loss": {r["branches"]: r["loss"] for r in rep["results"]},
                         "texts": rep["texts"]}
        results_path.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, ROOT / "docs" / "images" / f"branch_scaling{args.tag}.png")
    write_doc(results, args.steps, args.texts_per_step, args.tag)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
