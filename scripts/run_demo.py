"""`make demo`: the whole idea end to end on the bundled data, in about 10 minutes on 2 CPU cores.

    python scripts/run_demo.py            # or: make demo

1. builds the bundled corpus (dataset/) if missing; the tokenizer in model/ is committed;
2. pretrains a small 2D-RoPE MiniMind on samples of 1..16 branches (trainer/train_pretrain.py);
3. evaluates the loss at 1..32 branches per sample on held-out text (scripts/eval_loss.py);
4. evaluates exact-match accuracy on checkable tasks at 1, 2, 4, 8, 16 branches, parallel vs one prompt
   at a time (scripts/eval_tasks.py);
5. streams one parallel generation (a shared context and several questions) to the terminal
   (scripts/parallel_generate.py --streaming);
6. writes out/demo/report.md with the tables and plots.

Every stage is a normal command of the toolkit, printed before it runs. The numbers are whatever they
honestly are for a model trained for a few minutes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "dataset"
NEEDED = ["pretrain_demo.jsonl", "pretrain_demo_val.jsonl", "parallel_demo.jsonl", "eval_tasks_demo.jsonl"]

# The demo model and schedule (chosen to fit the 10-minute budget on 2 CPU cores; see docs/EXPERIMENTS.md).
MODEL = ["--hidden_size", "192", "--num_hidden_layers", "4", "--num_attention_heads", "6", "--num_key_value_heads", "2"]
TRAIN = ["--batch_size", "8", "--batch_by_samples", "--max_branches_per_sample", "16", "--min_branches_per_sample", "1",
         "--max_seq_len", "160", "--random_branch_slots", "32", "--learning_rate", "2e-3", "--warmup_iters", "30", "--max_steps", "900",
         "--log_interval", "50", "--save_interval", "300", "--num_workers", "1", "--seed", "1234"]
TASK_REPEAT = 3
BRANCHES_LOSS = "1,2,4,8,16,32"
BRANCHES_TASKS = "1,2,4,8,16"


def run(cmd: list[str], log) -> None:
    shown = " ".join(c if " " not in c else repr(c) for c in cmd[1:])
    log(f"\n$ python {shown}")
    r = subprocess.run(cmd, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"demo: stage failed (exit {r.returncode}): python {shown}")


def mix_training_data(out: Path, seed: int) -> int:
    """Pretraining text and grouped task records in one shuffled file (both record kinds are accepted).

    The task records are repeated TASK_REPEAT times: they carry few target tokens (loss only on the
    answers), and a few minutes of training should see each of them more than once.
    """
    lines = (DATA / "pretrain_demo.jsonl").read_text().splitlines() + \
        (DATA / "parallel_demo.jsonl").read_text().splitlines() * TASK_REPEAT
    random.Random(seed).shuffle(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return len(lines)


def demo_prompt_file(out: Path) -> Path:
    """One shared context and its questions, from the held-out tasks (never seen in training)."""
    tasks = [json.loads(x) for x in (DATA / "eval_tasks_demo.jsonl").read_text().splitlines() if x.strip()]
    ctx = next(t["context"] for t in tasks if t["context"])
    qs = [t["prompt"] for t in tasks if t["context"] == ctx][:4]
    indep = [t["prompt"] for t in tasks if not t["context"]][:4]
    out.write_text(json.dumps({"main": ctx, "branches": qs}) + "\n" + json.dumps({"branches": indep}) + "\n")
    return out


def table(rows: list[list], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(out_dir: Path, ckpt: Path, timings: dict) -> Path:
    loss = json.loads((out_dir / "eval_loss.json").read_text())
    tasks = json.loads((out_dir / "tasks.json").read_text())
    metrics = [json.loads(x) for x in (out_dir / f"{ckpt.stem}_metrics.jsonl").read_text().splitlines() if x.strip()]
    summary = next((m for m in reversed(metrics) if m.get("summary")), {})
    base = loss["results"][0]["loss"]
    loss_rows = [[r["branches"], f"{r['loss']:.4f}", f"{r['ppl']:.2f}", f"{(r['loss'] / base - 1) * 100:+.1f}%",
                  r["tokens"], r["samples"]] for r in loss["results"]]
    task_rows = []
    for setting in ("independent", "shared_context"):
        rows = [r for r in tasks["rows"] if r["setting"] == setting]
        seq = {r["branches"]: r for r in rows if r["mode"] == "sequential"}
        for r in (r for r in rows if r["mode"] == "parallel"):
            s = seq.get(r["branches"], seq.get(1))
            task_rows.append([setting.replace("_", " "), r["branches"], f"{r['accuracy']:.3f} ({r['correct']}/{r['total']})",
                              f"{s['accuracy']:.3f} ({s['correct']}/{s['total']})" if s else "-",
                              f"{r['tokens_per_s']:.0f}", f"{s['tokens_per_s']:.0f}" if s else "-"])
    text = f"""# ParallelMind demo report

Model: `{ckpt.relative_to(ROOT)}` (MiniMind {' '.join(MODEL[1::2])} = hidden, layers, heads, KV heads; 2D RoPE,
additive scheme, columnar mask), trained for {summary.get('step', '?')} optimizer steps on samples of 1..16 branches
with random branch slots out of 32 (so 32 branches at evaluation use coordinates seen in training)
({summary.get('targets_seen', 0):,} target tokens, {summary.get('wall_s', 0):.0f} s on this machine). Final held-out
validation loss: {summary.get('val_loss', float('nan')):.4f}.

These numbers are measured, not asserted: a few minutes of CPU training gives a small model, so the
absolute accuracy is modest. The point is the shape: how loss and accuracy behave as more branches share
one sequence, and what parallel decoding costs or saves against one prompt at a time.

## Loss vs branches per sample

Held-out text (`dataset/pretrain_demo_val.jsonl`), the same {loss['texts']} texts at every branch count, exactly
that many branches per sample.

{table(loss_rows, ['branches', 'loss', 'ppl', 'vs 1 branch', 'tokens', 'samples'])}

![loss vs branches](eval_loss.png)

## Exact-match accuracy: parallel vs one prompt at a time

Held-out checkable tasks (`dataset/eval_tasks_demo.jsonl`): arithmetic, copying, reversal, counting
(independent prompts, N per group) and questions about a shared context (the context prefilled once,
N question branches). "One at a time" decodes the same tasks as ordinary single prompts (the context
repeated in each). Greedy decoding, first line of the answer compared exactly.

{table(task_rows, ['setting', 'branches', 'parallel accuracy', 'one-at-a-time accuracy', 'parallel tok/s',
                   'one-at-a-time tok/s'])}

![accuracy vs branches](tasks.png)

## Stage timings (seconds)

{table([[k, f'{v:.0f}'] for k, v in timings.items()], ['stage', 'seconds'])}

Reproduce: `make demo` (or `python scripts/run_demo.py`). Every stage's command is printed in the log.
"""
    path = out_dir / "report.md"
    path.write_text(text)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out_dir", default="out/demo")
    p.add_argument("--skip_training", action="store_true", help="reuse an existing demo checkpoint")
    args = p.parse_args(argv)
    out_dir = (ROOT / args.out_dir).resolve()
    py = sys.executable
    log = lambda m: print(m, flush=True)  # noqa: E731
    t_all, timings = time.perf_counter(), {}

    def stage(name, fn):
        t = time.perf_counter()
        fn()
        timings[name] = time.perf_counter() - t

    if not all((DATA / f).exists() for f in NEEDED):
        stage("build data", lambda: run([py, "scripts/build_demo_data.py"], log))
    if not (ROOT / "model" / "tokenizer.json").exists():
        stage("train tokenizer", lambda: run([py, "scripts/train_tokenizer.py"], log))
    ckpt = out_dir / "pretrain_192.pth"
    if not (args.skip_training and ckpt.exists()):
        train_file = out_dir / "train_mix.jsonl"
        n = mix_training_data(train_file, seed=1234)
        log(f"\ntraining data: {n} records (pretraining text + grouped task records) -> {train_file.relative_to(ROOT)}")
        stage("pretrain", lambda: run([py, "trainer/train_pretrain.py", "--data_path", str(train_file),
                                       "--out_dir", str(out_dir), "--overwrite", "--val_samples", "256", "--val_interval", "300",
                                       "--val_branches_per_sample", "8", *MODEL, *TRAIN], log))
    stage("loss vs branches", lambda: run([py, "scripts/eval_loss.py", "--model_path", str(ckpt), "--data_path",
                                           str(DATA / "pretrain_demo_val.jsonl"), "--eval_branches", BRANCHES_LOSS,
                                           "--eval_samples", "384", "--batch_size", "4", "--batch_by_samples",
                                           "--max_seq_len", "160", "--out_prefix", str(out_dir / "eval_loss")], log))
    stage("task accuracy", lambda: run([py, "scripts/eval_tasks.py", "--model_path", str(ckpt), "--branches",
                                        BRANCHES_TASKS, "--max_tasks", "64", "--out", str(out_dir / "tasks.json")],
                                       log))
    prompts = demo_prompt_file(out_dir / "demo_prompts.jsonl")
    stage("streamed generation", lambda: run([py, "scripts/parallel_generate.py", "--mode", "pretrain",
                                              "--prompts_file", str(prompts), "--model_path", str(ckpt),
                                              "--max_new_tokens", "16", "--stop", "\n", "--streaming",
                                              "--out_path", str(out_dir / "generations.jsonl")], log))
    report = write_report(out_dir, ckpt, timings)
    log(f"\ndemo finished in {time.perf_counter() - t_all:.0f} s; report: {report.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
