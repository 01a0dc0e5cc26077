"""scripts/bench_prefix_sharing.py and scripts/bench_batch_inference.py run end to end (tiny sizes): this checks
that they work and that their rows compute the same thing, never how fast they are."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def run(script: str, *argv, timeout: int = 300) -> dict:
    proc = subprocess.run([sys.executable, f"scripts/{script}", "--quick", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_bench_prefix_sharing_quick(tmp_path):
    out = tmp_path / "ps.json"
    res = run("bench_prefix_sharing.py", "--threads", "1", "--branches", "2,3", "--out_path", str(out))
    assert json.loads(out.read_text()) == res
    assert {"loadavg_start", "loadavg_end", "cpu_model", "threads"} <= set(res["env"])
    shared = res["shared_context"]
    new = res["config"]["new_tokens"]
    assert shared["prefix_shared"]["tokens"] == shared["batched"]["tokens"] == res["config"]["questions"] * new
    # prefix sharing (stride 0, isolated) is causal decoding of context + question: the same greedy tokens
    assert shared["agreement"] == 1.0
    assert shared["prefix_shared_vs_batched"] == round(shared["prefix_shared"]["tokens_per_s"]
                                                       / shared["batched"]["tokens_per_s"], 3)
    assert set(res["distinct_prompts"]) == {"2", "3"}
    for n, rows in res["distinct_prompts"].items():
        assert rows["isolated"]["tokens"] == int(n) * new and rows["agreement"] == 1.0
    assert set(res["targets_met"]) == {"prefix_shared_vs_batched", "isolated_vs_batched_n2", "isolated_vs_batched_n3"}


@pytest.mark.slow
def test_bench_batch_inference_quick(tmp_path):
    res = run("bench_batch_inference.py", "--setups", "1proc_1thread", "--repeats", "2")
    row = res["rows"]["1proc_1thread"]
    assert res["outputs_identical"] and row["records"] == 16 and row["samples"] == 4 and row["batches"] == 2
    assert len(row["decode_s"]) == len(row["wall_s"]) == 2 and row["samples_per_s"] > 0
    assert row["samples_per_s_vs_1proc_1thread"] == 1.0
