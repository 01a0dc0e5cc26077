"""Paired before/after benchmark of the generation engine of two source trees, robust to a busy machine.

One worker process per tree builds the model and prompts of scripts/bench_generate.py (tiny MiniMind,
random seeded weights, fp32, 1 thread) and waits for commands; the coordinator alternates single calls
between the two (the order flips every repeat), so both trees run under the same load, and times
each call in the worker's own CPU time (`time.process_time`: time spent waiting for a core on a shared
machine does not count). Rows: columnar N = 1, 4, 16; isolated N = 16; one prompt per call (N = 4);
the shared-context workload (512-token main + 8 questions), all greedy with 64 new tokens.
Reported per row: median and min seconds per call of each tree, the median of the paired ratios
after / before and the ratio of the mins. Each worker also checks that every call reproduces its
warm-up output.

    git archive <old commit> | tar -x -C /tmp/before     # a tree to compare against
    python scripts/bench_generate_ab.py /tmp/before . --repeats 12 --out_path out/bench_generate_ab.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.benchmarking import emit_json
from trainer import args as flags
from trainer.cli import ArgParser, UsageError, cli_main, make_parser

WORKER = r'''
import json, sys, time
sys.path.insert(0, ".")
import torch
torch.set_num_threads(1)
from scripts.bench_generate import build_model, make_prompts
from model.parallel_generation import ParallelGenerator
model = build_model(torch.device("cpu"), torch.float32, False, 0)
V = model.config.vocab_size
col, iso = (ParallelGenerator(model, None, mask_mode=m) for m in ("columnar", "isolated"))
prompts = {n: make_prompts(n, 16, 32, V, n) for n in (1, 4, 16)}
shared = {"main": make_prompts(1, 512, 512, V, 0)[0], "branches": make_prompts(8, 10, 14, V, 1)}
def gen(g, sample):
    return [b.token_ids for b in g.generate([sample], eos_token_ids=[], max_new_tokens=64)[0].branches]
rows = {
    "columnar_n1": lambda: gen(col, {"branches": prompts[1]}),
    "columnar_n4": lambda: gen(col, {"branches": prompts[4]}),
    "columnar_n16": lambda: gen(col, {"branches": prompts[16]}),
    "isolated_n16": lambda: gen(iso, {"branches": prompts[16]}),
    "one_per_call_n4": lambda: [gen(iso, {"branches": [p]})[0] for p in prompts[4]],
    "shared_columnar": lambda: gen(col, shared),
    "shared_isolated": lambda: gen(iso, shared),
}
wanted = sys.argv[1].split(",") if len(sys.argv) > 1 and sys.argv[1] else list(rows)
with torch.inference_mode():
    first = {k: rows[k]() for k in wanted}  # warm-up
    print(json.dumps(wanted), flush=True)
    for line in sys.stdin:
        k = line.strip()
        t = time.process_time(); out = rows[k](); dt = time.process_time() - t
        print(json.dumps({"s": dt, "same": out == first[k]}), flush=True)
'''


def loadavg() -> list[str]:
    try:
        return Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        return []


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "bench_generate_ab")
    p.add_argument("before", help="source tree measured first (e.g. an exported older commit)")
    p.add_argument("after", help="source tree compared against it")
    p.add_argument("--repeats", type=flags.positive_int, default=12, help="paired calls per row")
    p.add_argument("--rows", default=None, help="comma-separated subset of the rows")
    flags.add_output_args(p, out_path=True, out_path_help="also write the JSON here (atomically)")
    p.add_check(_check_trees, paths=True)
    return p


def _check_trees(args) -> None:
    for name in ("before", "after"):
        tree = Path(getattr(args, name))
        if not (tree / "model" / "parallel_generation.py").is_file():
            raise UsageError(f"{name} tree {tree}: no model/parallel_generation.py there (pass a ParallelMind "
                             "source tree)")


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    trees = {"before": args.before, "after": args.after}
    procs = {k: subprocess.Popen([sys.executable, "-c", WORKER, args.rows or ""], cwd=d, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, env=env) for k, d in trees.items()}
    rows = [json.loads(p.stdout.readline()) for p in procs.values()][0]
    times: dict = {(v, r): [] for v in trees for r in rows}
    same, start = True, loadavg()
    for rep in range(args.repeats):
        for r in rows:
            for v in (("before", "after") if rep % 2 == 0 else ("after", "before")):
                procs[v].stdin.write(r + "\n")
                procs[v].stdin.flush()
                msg = json.loads(procs[v].stdout.readline())
                times[(v, r)].append(msg["s"])
                same &= msg["same"]
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    res: dict = {"trees": trees, "repeats": args.repeats, "loadavg_start": start, "loadavg_end": loadavg(),
                 "outputs_reproducible": same, "rows": {}}
    for r in rows:
        b, a = times[("before", r)], times[("after", r)]
        res["rows"][r] = {"before_median_s": round(statistics.median(b), 4), "after_median_s": round(statistics.median(a), 4),
                          "before_min_s": round(min(b), 4), "after_min_s": round(min(a), 4),
                          "after_over_before_paired_median": round(statistics.median(y / x for x, y in zip(b, a)), 3),
                          "after_over_before_min": round(min(a) / min(b), 3)}
    emit_json(res, args.out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
