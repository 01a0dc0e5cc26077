"""`make demo`: the whole idea end to end on the bundled data, within a budget of 8 minutes on 2 CPU cores.

    python scripts/run_demo.py                    # or: make demo
    python scripts/run_demo.py --update_readme    # the same, then rewrite README.md's demo block from the run
    python scripts/run_demo.py --report_only --update_readme   # re-render report and README from out/demo

1. builds the bundled corpus (dataset/) if missing; the tokenizer in model/ is committed;
2. pretrains a small 2D-RoPE MiniMind on pretraining text and grouped task samples of 1..16 branches
   (trainer/train_pretrain.py);
3. evaluates the loss at 1..32 branches per sample on held-out text (scripts/eval_loss.py);
4. evaluates exact-match accuracy on held-out tasks at 1, 2, 4, 8, 16 branches, parallel vs one prompt
   at a time, for independent tasks and for questions about a shared context (scripts/eval_tasks.py);
5. evaluates the peer game, where every branch but the dealer needs the dealer's card, with the columnar
   and the isolated mask (scripts/eval_tasks.py --kinds peer,dealer --mask ...);
6. streams parallel generations (a shared context and its questions, independent tasks, a peer game)
   to the terminal (scripts/parallel_generate.py --streaming);
7. writes out/demo/report.md (tables, plots, timings) and out/demo/summary.json (the headline numbers).

Every stage is a normal command of the toolkit, printed before it runs. README.md's demo block is
rendered from summary.json by `--update_readme` (never typed by hand; tests/scripts/test_run_demo.py
checks that the block is exactly what its embedded summary renders to).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.args import positive_int  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "dataset"
README = ROOT / "README.md"
NEEDED = ["pretrain_demo.jsonl", "pretrain_demo_val.jsonl", "parallel_demo.jsonl", "eval_tasks_demo.jsonl"]
SEED = 1234

# The demo model and schedule, sized for the time budget on 2 CPU cores (dataset/README.md says why, and
# docs/DEMO_EXPERIMENTS.md has the measurements behind every choice). Two stages: one task per sample first
# (a small model learns to copy from its own prompt within a few hundred steps there, and not at all when
# every sample interleaves up to 16 branches of look-alike tasks), then samples of 1..16 branches from that
# checkpoint, so the model learns to keep to its own branch, to read a shared main and its siblings.
HIDDEN = 192  # 1.6M parameters: at hidden 128 (0.9M) the fact questions are learnt for 2-4 of the 4 attributes,
# varying with the seed; a third layer instead of the width does not help (docs/DEMO_EXPERIMENTS.md, c1-c3)
MODEL = ["--hidden_size", str(HIDDEN), "--num_hidden_layers", "2", "--num_attention_heads", "6",
         "--num_key_value_heads", "2"]
COMMON = ["--max_seq_len", "160", "--random_branch_slots", "32", "--no_random_time_offset", "--num_workers", "0",
          "--seed", str(SEED)]
STAGE1_STEPS = 1000
STAGE1 = ["--batch_size", "32", "--batch_by_samples", "--max_branches_per_sample", "1", "--min_branches_per_sample", "1",
          "--learning_rate", "4e-3", "--warmup_iters", "50", "--epochs", "4", "--log_interval", "100",
          "--save_interval", "400"]
STEPS = 1000  # stage 2
TRAIN = ["--batch_size", "8", "--batch_by_samples", "--max_branches_per_sample", "16", "--min_branches_per_sample", "1",
         "--learning_rate", "2e-3", "--warmup_iters", "20", "--log_interval", "100", "--save_interval", "500"]
PRETRAIN_DOCS = 500  # pretraining documents in the stage-2 mix (the first of dataset/pretrain_demo.jsonl)
SINGLES_IN_STAGE2 = 0.35  # share of the one-task records that stage 2 keeps (stage 1 had all of them)
BRANCHES_LOSS = "1,2,4,8,16,32"
BRANCHES_TASKS = "1,2,4,8,16"
BRANCHES_PEER = "2,4,8,16"
TASK_KINDS = "copy,count,last,fact"
MAX_TASKS = 64
TARGET_ACC, TARGET_GAP = 0.80, 0.03
BLOCK_START, BLOCK_END = "<!-- demo-results:start -->", "<!-- demo-results:end -->"


def demo_data_ready(log) -> bool:
    """The default demo corpus is in dataset/ and was built by the current generators (else it is rebuilt)."""
    from model.tokenizer import DEFAULT_TOKENIZER_DIR
    from parallel_data.demo.corpus import corpus_is_current

    if not all((DATA / f).exists() for f in NEEDED):
        return False
    if corpus_is_current(DATA, DEFAULT_TOKENIZER_DIR / "tokenizer.json"):
        return True
    log("dataset/ was built by other generators, sizes or tokenizer (no matching .demo_corpus): rebuilding it")
    return False


def run(cmd: list[str], log) -> None:
    shown = " ".join(c if " " not in c else repr(c) for c in cmd[1:])
    log(f"\n$ python {shown}")
    r = subprocess.run(cmd, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"demo: stage failed (exit {r.returncode}): python {shown}")


def _is_single(line: str) -> bool:
    rec = json.loads(line)
    return not rec.get("main") and len(rec.get("branches", ())) == 1


def mix_training_data(out: Path, seed: int, stage: int, pretrain_docs: int = PRETRAIN_DOCS,
                      singles_kept: float = SINGLES_IN_STAGE2) -> int:
    """The training file of a stage, shuffled. Stage 1: the one-task records of dataset/parallel_demo.jsonl
    (one branch each). Stage 2: its grouped records of 1..16 branches, `singles_kept` of the one-task
    records, and the first `pretrain_docs` pretraining texts (the trainer groups text lines into samples
    of 1..16 branches; grouped records stay whole)."""
    grouped = (DATA / "parallel_demo.jsonl").read_text().splitlines()
    singles = [x for x in grouped if _is_single(x)]
    if stage == 1:
        lines = singles
    else:
        lines = [x for x in grouped if not _is_single(x)] + singles[: int(len(singles) * singles_kept)] + \
            (DATA / "pretrain_demo.jsonl").read_text().splitlines()[:pretrain_docs]
    random.Random(seed).shuffle(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return len(lines)


def demo_prompt_file(out: Path) -> Path:
    """Three samples from the held-out tasks (never seen in training): a shared context with 8 questions,
    8 independent tasks of every kind, and 8 branches of a peer game."""
    tasks = [json.loads(x) for x in (DATA / "eval_tasks_demo.jsonl").read_text().splitlines() if x.strip()]
    ctx = next(t["context"] for t in tasks if t["context"] and sum(u["context"] == t["context"] for u in tasks) >= 8)
    qs = [t["prompt"] for t in tasks if t["context"] == ctx][:8]
    indep = [t["prompt"] for t in tasks if not t["context"] and not t.get("game")][:8]
    peer = [t["prompt"] for t in tasks if t.get("game")][:8]  # the dealer and 7 players of the first game
    out.write_text("".join(json.dumps(r) + "\n" for r in ({"main": ctx, "branches": qs}, {"branches": indep},
                                                           {"branches": peer})))
    return out


# ---- summary and report ---------------------------------------------------------------------------------

def _rows(tasks: dict, setting: str, mode: str) -> dict[int, dict]:
    return {r["branches"]: r for r in tasks["rows"] if r["setting"] == setting and r["mode"] == mode}


def _sequential_for(seq: dict[int, dict], b: int) -> dict | None:
    """One-at-a-time row on the same tasks as the parallel row at b (independent tasks: one row for all)."""
    return seq.get(b, seq.get(1))


def _train_summary(path: Path) -> dict:
    """The summary line of a training run's metrics file ({} when the run is not there)."""
    if not path.exists():
        return {}
    metrics = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return next((m for m in reversed(metrics) if m.get("summary")), {})


def summarize(out_dir: Path, ckpt: Path, timings: dict, wall_s: float, load: tuple[str, str]) -> dict:
    """The headline numbers of a run, from the files its stages wrote."""
    loss = json.loads((out_dir / "eval_loss.json").read_text())
    tasks = json.loads((out_dir / "tasks.json").read_text())
    peer = {m: json.loads((out_dir / f"peer_{m}.json").read_text()) for m in ("columnar", "isolated")}
    train = _train_summary(out_dir / f"{ckpt.stem}_metrics.jsonl")
    stage1 = _train_summary(out_dir / "stage1" / f"{ckpt.stem}_metrics.jsonl")
    settings = {}
    for setting in ("independent", "shared_context"):
        par, seq = _rows(tasks, setting, "parallel"), _rows(tasks, setting, "sequential")
        rows = []
        for b, r in sorted(par.items()):
            s = _sequential_for(seq, b)
            rows.append({"branches": b, "parallel": r["accuracy"], "parallel_correct": r["correct"],
                         "total": r["total"], "sequential": s["accuracy"], "sequential_correct": s["correct"],
                         "sequential_total": s["total"], "parallel_tok_s": r["tokens_per_s"],
                         "sequential_tok_s": s["tokens_per_s"]})
        settings[setting] = rows
    pc, pi = _rows(peer["columnar"], "game", "parallel"), _rows(peer["isolated"], "game", "parallel")
    pseq = _rows(peer["columnar"], "game", "sequential").get(1)
    peer_rows = [{"branches": b, "columnar": r["accuracy"], "isolated": pi[b]["accuracy"] if b in pi else None,
                  "total": r["total"]} for b, r in sorted(pc.items())]
    return {
        "date": time.strftime("%Y-%m-%d"), "wall_s": round(wall_s, 1), "loadavg_start": load[0], "loadavg_end": load[1],
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "model": " ".join(MODEL[1::2]), "steps": train.get("step"), "targets_seen": train.get("targets_seen",
                                                                                              train.get("tokens_seen")),
        "train_s": train.get("wall_s"), "val_loss": train.get("val_loss"),
        "stage1_steps": stage1.get("step"), "stage1_train_s": stage1.get("wall_s"),
        "loss": [{"branches": r["branches"], "loss": r["loss"], "ppl": r["ppl"], "tokens": r["tokens"],
                  "samples": r["samples"]} for r in loss["results"]],
        "loss_texts": loss["texts"], "accuracy": settings,
        "peer": {"rows": peer_rows, "sequential": pseq["accuracy"] if pseq else None},
    }


def targets(summary: dict) -> list[dict]:
    """Per setting: the lowest one-at-a-time accuracy, the parallel accuracy at the largest branch count,
    and whether they meet TARGET_ACC and TARGET_GAP."""
    out = []
    for setting, rows in summary["accuracy"].items():
        top = rows[-1]
        low = min(r["sequential"] for r in rows)
        gap = top["sequential"] - top["parallel"]
        out.append({"setting": setting.replace("_", " "), "one_at_a_time_min": low, "branches": top["branches"],
                    "parallel": top["parallel"], "one_at_a_time": top["sequential"], "gap": gap,
                    "met": low >= TARGET_ACC and gap <= TARGET_GAP + 1e-9})
    return out


def table(rows: list[list], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _acc(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def targets_table(summary: dict) -> str:
    rows = [[t["setting"], _acc(t["one_at_a_time_min"]), f"{_acc(t['parallel'])} vs {_acc(t['one_at_a_time'])}",
             f"{t['gap'] * 100:+.1f}", "yes" if t["met"] else "**no**"] for t in targets(summary)]
    return table(rows, ["setting", "one at a time (lowest)", f"parallel @{summary['accuracy']['independent'][-1]['branches']}"
                        " vs one at a time", "gap (points)", f"meets >= {TARGET_ACC:.2f} and <= {TARGET_GAP * 100:.0f} points"])


def peer_table(summary: dict) -> str:
    rows = [[r["branches"], _acc(r["columnar"]), _acc(r["isolated"]), _acc(summary["peer"]["sequential"])]
            for r in summary["peer"]["rows"]]
    return table(rows, ["branches", "columnar", "isolated", "one at a time"])


def speed_line(summary: dict) -> str:
    parts = []
    for setting, rows in summary["accuracy"].items():
        top = rows[-1]
        parts.append(f"{setting.replace('_', ' ')}: {top['parallel_tok_s']:.0f} tokens/s at {top['branches']} branches "
                     f"vs {top['sequential_tok_s']:.0f} one at a time "
                     f"(x{top['parallel_tok_s'] / max(top['sequential_tok_s'], 1e-9):.1f})")
    return "; ".join(parts)


def peer_section(summary: dict) -> str:
    return f"""## Branches that need each other: the peer game

One branch, the dealer, says its card ("I am the dealer and my card is 7. What is my card?"); every other
branch asks "What is the dealer's card?" (answered "7"): the answer is only in the dealer's branch. With
the columnar mask a branch sees the others' earlier tokens and can read the card; with the isolated mask
(or one prompt at a time) it can only guess (one card in nine). Scored: the asking branches.

{peer_table(summary)}

![peer game](peer.png)"""


def _report_rows(summary: dict) -> tuple[list[list], list[list]]:
    """The loss-vs-branches and the accuracy table rows of the report."""
    base = summary["loss"][0]["loss"]
    loss_rows = [[r["branches"], f"{r['loss']:.4f}", f"{r['ppl']:.2f}", f"{(r['loss'] / base - 1) * 100:+.1f}%",
                  r["tokens"], r["samples"]] for r in summary["loss"]]
    acc_rows = [[setting.replace("_", " "), r["branches"], f"{r['parallel']:.3f} ({r['parallel_correct']}/{r['total']})",
                 f"{r['sequential']:.3f} ({r['sequential_correct']}/{r['sequential_total']})",
                 f"{r['parallel_tok_s']:.0f}", f"{r['sequential_tok_s']:.0f}"]
                for setting, rows in summary["accuracy"].items() for r in rows]
    return loss_rows, acc_rows


def write_report(out_dir: Path, ckpt: Path, summary: dict) -> Path:
    loss_rows, acc_rows = _report_rows(summary)
    timings = summary["timings_s"]
    text = f"""# ParallelMind demo report

Model: `{ckpt.relative_to(ROOT) if ckpt.is_relative_to(ROOT) else ckpt}` (MiniMind {summary['model']} = hidden,
layers, heads, KV heads; 2D RoPE, additive scheme, columnar mask), trained from scratch in two stages:
{summary.get('stage1_steps') or 0} optimizer steps on one task per sample ({summary.get('stage1_train_s') or 0:.0f} s), then
{summary['steps']} steps on grouped task samples of 1..16 branches and some pretraining text, with random branch
slots out of 32 (so 32 branches at evaluation use coordinates seen in training): {summary['targets_seen'] or 0:,}
target tokens in {summary['train_s'] or 0:.0f} s. Final held-out validation loss: {summary['val_loss'] or float('nan'):.4f}.
Run on {summary['date']}, {summary['wall_s']:.0f} s in all (load average {summary['loadavg_start']} at the start,
{summary['loadavg_end']} at the end).

## Does it master its tasks?

Greedy exact match on held-out tasks; "one at a time" decodes every task as an ordinary single prompt
(with its context in front), "parallel" decodes N tasks as the N branches of one sample.

{targets_table(summary)}

## Loss vs branches per sample

Held-out text (`dataset/pretrain_demo_val.jsonl`), the same {summary['loss_texts']} texts at every branch count,
exactly that many branches per sample.

{table(loss_rows, ['branches', 'loss', 'ppl', 'vs 1 branch', 'tokens', 'samples'])}

![loss vs branches](eval_loss.png)

## Exact-match accuracy: parallel vs one prompt at a time

Held-out tasks (`dataset/eval_tasks_demo.jsonl`). Independent: copying three words, counting up to four
words, naming the last word, N tasks per sample. Shared context: questions about a text of facts, the text prefilled once
as the main and N question branches after it; one at a time, every question gets its own copy of the text.

{table(acc_rows, ['setting', 'branches', 'parallel accuracy', 'one-at-a-time accuracy', 'parallel tok/s',
                  'one-at-a-time tok/s'])}

Speed (new tokens per second, greedy, this CPU): {speed_line(summary)}.

![accuracy vs branches](tasks.png)

{peer_section(summary)}

## Stage timings (seconds)

{table([[k, f'{v:.0f}'] for k, v in timings.items()] + [['total', f"{summary['wall_s']:.0f}"]], ['stage', 'seconds'])}

Reproduce: `make demo` (or `python scripts/run_demo.py`). Every stage's command is printed in the log;
the streamed generations are in `generations.jsonl`.
"""
    path = out_dir / "report.md"
    path.write_text(text)
    return path


def plot_peer(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["peer"]["rows"]
    xs = [r["branches"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [r["columnar"] for r in rows], "o-", label="columnar (branches see each other)")
    ax.plot(xs, [r["isolated"] for r in rows], "s-", label="isolated (own branch only)")
    if summary["peer"]["sequential"] is not None:
        ax.plot([xs[0], xs[-1]], [summary["peer"]["sequential"]] * 2, "--", color="gray", label="one at a time")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("branches per sample (players)")
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("peer game: the answer is in another branch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- README block ---------------------------------------------------------------------------------------

def render_readme_block(summary: dict) -> str:
    """The README's demo section body: the headline table, rendered from summary.json (embedded, so a test
    can re-render it and catch hand edits)."""
    t = {x["setting"]: x for x in targets(summary)}
    peer_top = summary["peer"]["rows"][-1]
    top = summary["accuracy"]["independent"][-1]["branches"]
    rows = [[s, _acc(x["one_at_a_time"]), _acc(x["parallel"]), f"{x['gap'] * 100:+.1f}"] for s, x in t.items()]
    rows.append([f"peer game ({peer_top['branches']} players)", _acc(summary["peer"]["sequential"]),
                 f"{_acc(peer_top['columnar'])} columnar, {_acc(peer_top['isolated'])} isolated", "-"])
    return "\n".join([
        BLOCK_START,
        "<!-- generated by `python scripts/run_demo.py --update_readme` from out/demo/summary.json; do not edit -->",
        f"<!-- summary: {json.dumps(summary, sort_keys=True)} -->",
        f"Last run ({summary['date']}, {summary['wall_s'] / 60:.1f} min for `python scripts/run_demo.py` on 2 CPU cores, "
        f"load average {summary['loadavg_start']}): greedy exact match on held-out tasks,",
        "",
        table(rows, ["setting", "one at a time", f"parallel, {top} branches", "gap (points)"]),
        "",
        f"Loss on held-out text from 1 to {summary['loss'][-1]['branches']} branches per sample: "
        f"{summary['loss'][0]['loss']:.3f} -> {summary['loss'][-1]['loss']:.3f} "
        f"({(summary['loss'][-1]['loss'] / summary['loss'][0]['loss'] - 1) * 100:+.1f}%). Speed: {speed_line(summary)}.",
        "Full report: `out/demo/report.md` after `make demo`.",
        BLOCK_END,
    ])


def read_readme_summary(text: str) -> dict | None:
    """The summary embedded in a README demo block (None when there is no block)."""
    if BLOCK_START not in text:
        return None
    block = text.split(BLOCK_START, 1)[1].split(BLOCK_END, 1)[0]
    marker = "<!-- summary: "
    if marker not in block:
        return None
    return json.loads(block.split(marker, 1)[1].split(" -->", 1)[0])


def update_readme(path: Path, summary: dict) -> None:
    """Replace the text between the demo markers of `path` (written atomically; the markers must exist)."""
    text = path.read_text()
    if BLOCK_START not in text or BLOCK_END not in text:
        raise ValueError(f"{path}: no {BLOCK_START} ... {BLOCK_END} block to update")
    pre, rest = text.split(BLOCK_START, 1)
    post = rest.split(BLOCK_END, 1)[1]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(pre + render_readme_block(summary) + post)
    tmp.replace(path)


# ---- main -------------------------------------------------------------------------------------------------

def pretrain_args(train_file: Path, out_dir: Path, steps: int, init_weight: Path | None = None) -> list[str]:
    """A pretraining stage's command line (after the interpreter): stage 1 from random weights, stage 2
    (`init_weight`: stage 1's checkpoint) on samples of 1..16 branches."""
    stage = ["--init_weight", str(init_weight), *TRAIN] if init_weight else STAGE1
    return ["trainer/train_pretrain.py", "--data_path", str(train_file), "--out_dir", str(out_dir), "--overwrite",
            "--val_samples", "256", "--val_interval", "300", "--val_branches_per_sample", "8", *MODEL, *COMMON,
            *stage, "--max_steps", str(steps)]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out_dir", default="out/demo")
    p.add_argument("--skip_training", action="store_true", help="reuse an existing demo checkpoint")
    p.add_argument("--report_only", action="store_true",
                   help="no stage runs: re-render report.md (and with --update_readme the README) from out_dir")
    p.add_argument("--update_readme", action="store_true", help="rewrite README.md's demo block from this run")
    p.add_argument("--steps", type=positive_int, default=STEPS,
                   help="optimizer steps of stage 2, on samples of 1..16 branches (default: %(default)s, the demo as "
                        "budgeted; fewer for a quick look at the pipeline, whose accuracy then says little)")
    p.add_argument("--stage1_steps", type=positive_int, default=STAGE1_STEPS,
                   help="optimizer steps of stage 1, one task per sample (default: %(default)s)")
    p.add_argument("--max_tasks", type=positive_int, default=MAX_TASKS, help="eval tasks per branch count and setting")
    return p.parse_args(argv)


def train_two_stages(args: argparse.Namespace, out_dir: Path, ckpt: Path, stage, log) -> None:
    """Write both stages' training files, then pretrain stage 1 and stage 2 from its checkpoint."""
    stage1_dir = out_dir / "stage1"
    for k in (1, 2):
        train_file = out_dir / f"train_stage{k}.jsonl"
        n = mix_training_data(train_file, seed=SEED, stage=k)
        what = "one task per record" if k == 1 else "grouped task records of 1..16 branches + pretraining text"
        log(f"\nstage {k} training data: {n} records ({what}) -> {train_file}")
    py = sys.executable
    stage("pretrain, stage 1 (one task per sample)", lambda: run(
        [py, *pretrain_args(out_dir / "train_stage1.jsonl", stage1_dir, args.stage1_steps)], log))
    stage("pretrain, stage 2 (1..16 branches)", lambda: run(
        [py, *pretrain_args(out_dir / "train_stage2.jsonl", out_dir, args.steps, init_weight=stage1_dir / ckpt.name)],
        log))


def main(argv=None) -> int:
    args = parse_args(argv)
    out_dir = (ROOT / args.out_dir).resolve()
    ckpt = out_dir / f"pretrain_{HIDDEN}.pth"
    if args.report_only:
        summary = json.loads((out_dir / "summary.json").read_text())
        write_report(out_dir, ckpt, summary)
        if args.update_readme:
            update_readme(README, summary)
            print(f"updated the demo block of {README.relative_to(ROOT)}")
        return 0
    py = sys.executable
    log = lambda m: print(m, flush=True)  # noqa: E731
    t_all, timings = time.perf_counter(), {}
    load_start = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"

    def stage(name, fn):
        t = time.perf_counter()
        fn()
        timings[name] = time.perf_counter() - t

    if not demo_data_ready(log):
        stage("build data", lambda: run([py, "scripts/build_demo_data.py"], log))
    if not (args.skip_training and ckpt.exists()):
        train_two_stages(args, out_dir, ckpt, stage, log)
    stage("loss vs branches", lambda: run([py, "scripts/eval_loss.py", "--model_path", str(ckpt), "--data_path",
                                           str(DATA / "pretrain_demo_val.jsonl"), "--eval_branches", BRANCHES_LOSS,
                                           "--eval_samples", "384", "--batch_size", "4", "--batch_by_samples",
                                           "--max_seq_len", "160", "--out_prefix", str(out_dir / "eval_loss")], log))
    stage("task accuracy", lambda: run([py, "scripts/eval_tasks.py", "--model_path", str(ckpt), "--branches",
                                        BRANCHES_TASKS, "--kinds", TASK_KINDS, "--max_tasks", str(args.max_tasks),
                                        "--out", str(out_dir / "tasks.json")], log))
    for mask in ("columnar", "isolated"):
        stage(f"peer game ({mask})", lambda mask=mask: run(
            [py, "scripts/eval_tasks.py", "--model_path", str(ckpt), "--branches", BRANCHES_PEER, "--kinds", "peer,dealer",
             "--max_tasks", str(args.max_tasks), "--mask", mask, "--out", str(out_dir / f"peer_{mask}.json")], log))
    prompts = demo_prompt_file(out_dir / "demo_prompts.jsonl")
    stage("streamed generation", lambda: run([py, "scripts/parallel_generate.py", "--mode", "pretrain",
                                              "--prompts_file", str(prompts), "--model_path", str(ckpt),
                                              "--max_new_tokens", "12", "--stop", "\n", "--streaming",
                                              "--out_path", str(out_dir / "generations.jsonl")], log))
    load_end = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    summary = summarize(out_dir, ckpt, timings, time.perf_counter() - t_all, (load_start, load_end))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_peer(summary, out_dir / "peer.png")
    report = write_report(out_dir, ckpt, summary)
    log("\n" + targets_table(summary) + "\n\npeer game:\n" + peer_table(summary))
    if args.update_readme:
        update_readme(README, summary)
        log(f"updated the demo block of {README.relative_to(ROOT)}")
    log(f"\ndemo finished in {summary['wall_s']:.0f} s; report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
