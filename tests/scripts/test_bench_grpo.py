"""scripts/bench_grpo.py runs end to end at tiny sizes (this checks that it works, never how fast it is)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_grpo_quick(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "scripts/bench_grpo.py", "--quick", "--threads", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == res
    assert set(res["rows"]) == {"shared_prompt", "separate", "sequential", "score_shared", "score_separate"}
    assert all(r["median_ms"] > 0 for r in res["rows"].values())
    assert res["same_tokens"] is True and res["max_logprob_diff"] < 1e-4  # the rows compute the same thing
    assert res["ratios"]["rollout_shared_vs_separate"] > 0 and "loadavg_start" in res["env"]
    assert isinstance(res["targets_met"]["shared_vs_separate_rollout_min"], bool)
