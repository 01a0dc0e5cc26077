"""Toy RL set-ups shared by the reward-model, PPO and GRPO tests: a tiny starting checkpoint, prompt files,
a reward a tiny model learns in seconds, and run helpers (fresh runs, interrupted + resumed runs)."""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path

import torch

from model.checkpoint import save_checkpoint
from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
from trainer.engine import Trainer

TARGET_IDS = 64  # the toy reward: the share of generated tokens with an id below this (1/8 of the vocabulary)


@contextlib.contextmanager
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine two spinning OpenMP
    threads can make each matmul ~100x slower; the RL tests run single-threaded."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def tiny_checkpoint(path: Path, tokenizer, seed: int = 0, **overrides) -> Path:
    """A random tiny MiniMind saved as a self-contained checkpoint (its tokenizer inside)."""
    kw = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              vocab_size=len(tokenizer), branch_stride=16)
    kw.update(overrides)
    torch.manual_seed(seed)
    save_checkpoint(path, MiniMindForCausalLM(MiniMindConfig(**kw)), tokenizer=tokenizer)
    return path


def prompt_file(path: Path, n: int = 64, seed: int = 0) -> Path:
    """`{"prompt", "answer"}` records: small sums, checkable by exact match."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        rows.append({"prompt": f"{a} plus {b}", "answer": str(a + b)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def low_ids_reward(ctx, completions) -> torch.Tensor:
    """Dense toy reward: the share of an answer's tokens whose id is below TARGET_IDS (about 1/8 at random)."""
    return torch.tensor([sum(t < TARGET_IDS for t in c.token_ids) / max(1, len(c.token_ids)) for c in completions])


def fit(module, stage, argv: list[str]) -> Trainer:
    with one_thread():
        trainer = Trainer(module.parse_args(argv), stage)
        assert trainer.fit() == 0
    return trainer


def metric_rows(out_dir: Path, stem: str) -> list[dict]:
    """The per-step metric rows, timings left out (they differ between identical runs)."""
    rows = [json.loads(x) for x in (Path(out_dir) / f"{stem}_metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "elapsed_s")} for r in rows
            if "loss" in r and not r.get("summary") and not r.get("final")]


def split_and_resume(module, make_stage, argv: list[str], tmp_path: Path) -> tuple[Trainer, Trainer]:
    """(3 steps in one go, 2 steps then --resume): the two must agree exactly."""
    full = fit(module, make_stage(), [*argv, "--out_dir", str(tmp_path / "full"), "--max_steps", "3"])
    fit(module, make_stage(), [*argv, "--out_dir", str(tmp_path / "split"), "--max_steps", "3", "--stop_after_steps", "2"])
    resumed = fit(module, make_stage(), [*argv, "--out_dir", str(tmp_path / "split"), "--max_steps", "3", "--resume"])
    return full, resumed
