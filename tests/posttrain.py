"""Helpers of the post-training tests: tiny checkpoints, small data files, and 3-step runs resumed after 2."""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY = ["--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "2", "--num_key_value_heads", "1"]
TIMINGS = ("tokens_per_s", "elapsed_s")


def write_jsonl(path, records) -> str:
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def repo_tokenizer():
    from model.tokenizer import load_tokenizer

    return load_tokenizer()


def tiny_model(seed: int = 0, tokenizer=None, **overrides):
    """A tiny MiniMind with the repo tokenizer's vocabulary (hidden 32, 2 layers unless overridden)."""
    from model.model_minimind import MiniMindConfig, MiniMindForCausalLM

    tok = tokenizer or repo_tokenizer()
    kw = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
              vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    kw.update(overrides)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return MiniMindForCausalLM(MiniMindConfig(**kw)).eval()


def tiny_checkpoint(path, seed: int = 0, **overrides) -> str:
    """A self-contained tiny MiniMind checkpoint (weights, config, the repo tokenizer)."""
    from model.checkpoint import save_checkpoint

    tok = repo_tokenizer()
    save_checkpoint(path, tiny_model(seed, tok, **overrides), tokenizer=tok)
    return str(path)


def all_rows(path) -> list[dict]:
    """Every row of a metrics JSONL (training steps, validations, the summary)."""
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def metric_rows(path) -> list[dict]:
    """The training-step rows of a metrics JSONL, timings left out: what must match across a resume."""
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in all_rows(path)
            if "loss" in r and not r.get("summary")]


def val_rows(path) -> list[dict]:
    """The validation rows of a metrics JSONL (the final one included)."""
    return [r for r in all_rows(path) if "val_loss" in r and not r.get("summary")]


def run_and_resume(main, argv, tmp_path, metrics_name: str) -> tuple[list[dict], list[dict]]:
    """(rows of 3 steps in one go, rows of 2 steps then --resume): `argv(out_dir)` gives the flags."""
    assert main([*argv(tmp_path / "full"), "--max_steps", "3"]) == 0
    assert main([*argv(tmp_path / "split"), "--max_steps", "3", "--stop_after_steps", "2"]) == 0
    assert main([*argv(tmp_path / "split"), "--max_steps", "3", "--resume"]) == 0
    return metric_rows(tmp_path / "full" / metrics_name), metric_rows(tmp_path / "split" / metrics_name)
