"""The post-training fronts run as modules and as files, and document their own flags in --help."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FRONTS = {"train_lora": ["--lora_name", "--lora_rank", "--lora_target_modules", "--init_weight"],
          "train_dpo": ["--beta", "--loss_type", "--precompute_ref", "--pair_layout"],
          "train_distill_reason": ["--tag_weight", "--format_eval_samples", "--max_new_tokens"],
          "train_distillation": ["--teacher_path", "--alpha", "--temperature", "--hidden_size"]}


@pytest.mark.parametrize("front", sorted(FRONTS))
def test_front_runs_as_module_and_file(front):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for cmd in ([sys.executable, "-m", f"trainer.{front}", "--help"], [sys.executable, f"trainer/{front}.py", "-h"]):
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert all(flag in r.stdout for flag in FRONTS[front]), r.stdout
        assert "--model_path" in r.stdout and "--resume" in r.stdout and "--ddp" in r.stdout
