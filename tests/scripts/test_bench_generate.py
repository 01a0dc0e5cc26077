"""scripts/bench_generate.py runs end to end (tiny sizes): this checks that it works, never how fast it is."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROWS = ("columnar", "isolated", "columnar_right_aligned", "sequential_hf", "sequential_engine", "sequential",
        "batched")


def test_bench_generate_quick(tmp_path):
    out = tmp_path / "bench_generate.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "scripts/bench_generate.py", "--quick", "--threads", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == res
    assert {"config", "env", "reference", "targets", "branches", "shared_context", "ratios", "targets_met"} <= set(res)
    assert {"torch", "threads", "device", "cpu_model", "date"} <= set(res["env"])
    assert res["env"]["threads"] == 1

    new_tokens = res["config"]["new_tokens"]
    assert res["config"]["branches"] == [1, 2]
    for n, rows in res["branches"].items():
        for name in ROWS:
            row = rows[name]
            assert row["tokens"] == int(n) * new_tokens
            assert row["tokens_per_s"] > 0 and row["median_s"] > 0 and row["runs"] >= 1
        assert rows["sequential"]["source"] in ("sequential_hf", "sequential_engine")
        # greedy decoding of the same model: one prompt at a time, batched and isolated branches agree
        assert all(0.0 <= v <= 1.0 for v in rows["agreement"].values())
    shared = res["shared_context"]
    for name in ("columnar", "isolated", "batched"):
        assert shared[name]["tokens_per_s"] > 0
        assert shared[name]["tokens"] == shared["config"]["questions"] * new_tokens
    cont = res["continuous"]  # samples joining a running session
    for name in ("joining", "together", "sequential_engine"):
        assert cont[name]["tokens"] == cont["config"]["samples"] * new_tokens and cont[name]["tokens_per_s"] > 0
    assert 0.0 <= cont["agreement"]["joining_vs_sequential_engine"] <= 1.0
    rat = res["ratios"]
    for key in ("columnar_vs_batched", "columnar_vs_sequential", "isolated_vs_batched", "isolated_vs_sequential"):
        assert set(rat[key]) == {"1", "2"} and all(v > 0 for v in rat[key].values())
    assert set(rat["shared_context_vs_batched"]) == {"columnar", "isolated"}


def test_bench_generate_rejects_bad_arguments():
    proc = subprocess.run([sys.executable, "scripts/bench_generate.py", "--repeats", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--repeats" in proc.stderr


@pytest.mark.slow
def test_bench_generate_ab_smoke(tmp_path):
    out = tmp_path / "ab.json"
    proc = subprocess.run([sys.executable, "scripts/bench_generate_ab.py", ".", ".", "--rows", "columnar_n1",
                           "--repeats", "1", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["outputs_reproducible"] and list(res["rows"]) == ["columnar_n1"]
    assert res["rows"]["columnar_n1"]["before_min_s"] > 0 and res["rows"]["columnar_n1"]["after_min_s"] > 0
