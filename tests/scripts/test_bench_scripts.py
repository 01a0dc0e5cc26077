"""Benchmark scripts run end to end (tiny sizes); this checks that they work, never how fast they are."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _positive_numbers(obj, where=""):
    """Yield (path, value) for every number in a JSON tree that should be positive."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("loadavg_start", "loadavg_end", "overhead_mb", "peak_extra_mb", "sparsity", "settings"):
                continue  # may be 0 (idle box, a tiny mask served from already-resident heap) or RSS noise
            yield from _positive_numbers(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _positive_numbers(v, f"{where}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield where, obj


def test_bench_columnar_quick(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "scripts/bench_columnar.py", "--quick", "--threads", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == res
    assert {"env", "layout", "mask_memory", "train_step", "targets_met"} <= set(res)
    assert {"torch", "threads", "device", "cpu_model", "date"} <= set(res["env"])

    rows = res["layout"]["rows"]
    assert {"median_ms", "p90_ms", "samples_per_s", "speedup_vs_reference"} <= set(rows["ids"])
    assert "text" in rows  # measured, or skipped with a note when there is no repo tokenizer

    cpu = res["mask_memory"]["cpu"]
    for name in ("bool", "additive_float32"):
        assert {"peak_extra_mb", "mask_tensor_mb", "first_build_ms", "build"} <= set(cpu[name])
        assert cpu[name]["peak_extra_mb"] >= 0
    assert "cuda_flex" in res["mask_memory"]

    ts = res["train_step"]
    for name in ("columnar", "causal_sdpa"):
        assert {"median_step_ms", "median_tokens_per_s", "last_loss"} <= set(ts["rows"][name])
    assert "flex" in ts["rows"]
    assert ts["ratio_columnar_vs_causal"] > 0

    for path, value in _positive_numbers({k: res[k] for k in ("layout", "mask_memory", "train_step")}):
        assert value > 0, f"{path} = {value}"
    assert all(isinstance(v, bool) for v in res["targets_met"].values())


def test_bench_columnar_bad_args():
    proc = subprocess.run([sys.executable, "-m", "scripts.bench_columnar", "--steps", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--steps" in proc.stderr
