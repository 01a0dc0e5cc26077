"""Helpers shared by the benchmark scripts (scripts/bench_*.py): their flags, machine description, timings."""

from __future__ import annotations

import datetime
import os
import platform
import random
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from trainer import args as flags


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else (platform.processor() or "unknown")


def loadavg() -> list[float] | None:
    """1/5/15-minute load averages: a busy shared machine explains noisy timings."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def environment(device: torch.device | str, dtype: torch.dtype | None = None) -> dict:
    import transformers

    device = torch.device(device)
    env = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
           "threads": torch.get_num_threads(), "device": str(device), "cpu_model": cpu_model(),
           "cpu_count": os.cpu_count(), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
           "loadavg_start": loadavg()}
    if dtype is not None:
        env["dtype"] = str(dtype).replace("torch.", "")
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def make_prompts(n: int, lo: int, hi: int, vocab: int, seed: int) -> list[list[int]]:
    """n distinct random token-id prompts with lengths in [lo, hi] (ids from 3, clear of pad/bos/eos)."""
    rng = random.Random(seed)
    out: list[list[int]] = []
    while len(out) < n:
        p = [rng.randrange(3, vocab) for _ in range(rng.randint(lo, hi))]
        if p not in out:
            out.append(p)
    return out


def summary_ms(seconds: list[float]) -> dict:
    """Median, p90 and min (milliseconds) of repeated timings."""
    ms = sorted(s * 1e3 for s in seconds)
    p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
    return {"median_ms": round(statistics.median(ms), 3), "p90_ms": round(p90, 3), "min_ms": round(ms[0], 3),
            "runs": len(ms)}


def bench_device(args) -> tuple[torch.device, torch.dtype]:
    """A benchmark's device and compute dtype from its --device / --threads flags (threads set first):
    bfloat16 on CUDA, float32 elsewhere."""
    from model.device import resolve_device

    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    return device, torch.bfloat16 if device.type == "cuda" else torch.float32


def tokens_summary(seconds: list[float], tokens: int, calls: int = 1) -> dict:
    """Per-call seconds of a row that generates `tokens` -> tokens/s of the median call (and the spread)."""
    med = statistics.median(seconds)
    return {"tokens_per_s": round(tokens / med, 1), "median_s": round(med, 4), "min_s": round(min(seconds), 4),
            "max_s": round(max(seconds), 4), "runs": len(seconds), "calls_per_run": calls, "tokens": tokens}


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Share of positions where two token lists agree, counted up to the first difference of each branch."""
    same = total = 0
    for x, y in zip(a, b):
        k = 0
        while k < min(len(x), len(y)) and x[k] == y[k]:
            k += 1
        same, total = same + k, total + max(len(x), len(y))
    return round(same / max(1, total), 4)


def alternating_timings(rows: dict[str, Callable[[], object]], repeats: int,
                        sync: Callable[[], None] = lambda: None) -> tuple[dict[str, list[float]], dict[str, object]]:
    """One warm-up call per row, then `repeats` rounds that time every row once, the order rotating per
    round (a slow phase of a shared machine then hits every row alike).

    -> ({row: [seconds, one per round]}, {row: the output of its last call})
    """
    names = list(rows)
    outputs = {name: rows[name]() for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            sync()
            t0 = time.perf_counter()
            outputs[name] = rows[name]()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times, outputs


def emit_json(result: dict, out: str | None) -> None:
    """Print the result and, with `out`, write it atomically (a temporary file, then a rename)."""
    import json

    text = json.dumps(result, indent=2)
    print(text)
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, path)


def add_tiny_model_arg(g, help: str) -> None:
    """`--tiny_model`: a benchmark measures a random tiny config instead of a given model folder."""
    g.add_argument("--tiny_model", action="store_true", help=help)


def add_benchmark_args(p, *, repeats: int, quick_repeats: int, steps: int | None = None,
                       quick_steps: int | None = None, steps_help: str = "training steps per run",
                       threads: bool = True, seed: int | None = None, device: str | None = None) -> None:
    """The flags every scripts/bench_*.py shares; the JSON result goes to stdout and to --out_path.

    `--quick` shrinks the sizes and the default --repeats / --steps; explicit values are kept.
    """
    g = p.add_argument_group("benchmark")
    g.add_argument("--repeats", type=flags.positive_int, default=None,
                   help=f"timed runs per row, median reported (default {repeats}; --quick: {quick_repeats})")
    if steps is not None:
        flags.add_steps_arg(g, None, f"{steps_help} (default {steps}; --quick: {quick_steps})")
    g.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in seconds (numbers are meaningless)")
    if threads:
        flags.add_threads_arg(g)
    flags.add_runtime_args(p, seed=seed, dtype=False, device=device)
    flags.add_output_args(p, out_path=True, out_path_help="also write the JSON here (atomically)")

    def resolve(args) -> None:
        if args.repeats is None:
            args.repeats = quick_repeats if args.quick else repeats
        if steps is not None and args.steps is None:
            args.steps = quick_steps if args.quick else steps
    p.add_check(resolve)
