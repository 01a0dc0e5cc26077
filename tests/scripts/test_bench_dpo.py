"""scripts/bench_dpo.py runs end to end (tiny sizes): this checks that it works, never how fast it is."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_dpo_quick(tmp_path):
    out = tmp_path / "bench_dpo.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "scripts/bench_dpo.py", "--quick", "--threads", "1", "--prompt_len", "16",
                           "--response_len", "4", "--pairs", "3", "--out_path", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == res
    shared, separate = res["shared"], res["separate"]
    # shared: one row per pair, prompt - 1 + 2 x (1 + response) tokens; separate: two rows of prompt + response
    assert shared["rows"] == 3 and shared["tokens"] == 3 * (15 + 2 * 5)
    assert separate["rows"] == 6 and separate["tokens"] == 6 * 20
    assert shared["steps_per_s"] > 0 and separate["steps_per_s"] > 0 and len(shared["runs"]) == 2
    check = res["setting"]["loss_check"]  # both layouts give the same DPO loss
    assert abs(check["shared"] - check["separate"]) <= 1e-5
    assert res["ratio_shared_over_separate"] > 0 and res["env"]["threads"] == 1
    assert len(res["paired_ratios"]) == 2 and res["token_ratio_separate_over_shared"] == round(120 / 75, 3)
