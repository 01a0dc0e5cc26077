"""scripts/bench_train.py runs end to end (a smoke run: it asserts the output, not any speed)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_train_quick(tmp_path):
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, "scripts/bench_train.py", "--quick", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(out.read_text())
    assert d["data"]["samples_per_s"] > 0 and d["data"]["texts_per_s"] >= d["data"]["samples_per_s"]
    assert d["train_tiny"]["tokens_per_s"] > 0 and d["train_tiny"]["steps"] == 5
    assert d["env"]["device"] == "cpu"
