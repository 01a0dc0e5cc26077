"""Shared test fixtures: tiny tokenizers and models built locally (nothing is downloaded)."""

from __future__ import annotations

import os
import random

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))

_WORDS = ("the quick brown fox jumps over a lazy dog while seven small birds sing about rivers "
          "mountains numbers plus minus equals answer question context branch parallel time").split()


def tiny_corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 16))]
        out.append(" ".join(words) + f" {rng.randint(0, 99)} + {rng.randint(0, 99)} = {rng.randint(0, 198)}.")
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    """A 512-token byte-level BPE with the ChatML special tokens, saved as a transformers folder."""
    from model.tokenizer import train_bpe_tokenizer

    d = tmp_path_factory.mktemp("tok")
    train_bpe_tokenizer(tiny_corpus(), vocab_size=512).save_pretrained(str(d))
    return d


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir):
    from model.tokenizer import load_tokenizer

    return load_tokenizer(tiny_tokenizer_dir)


HF_ARCHS = ("qwen2", "llama", "qwen3")


def build_tiny_hf(arch: str, path, vocab_size: int = 256, seed: int = 0):
    """Build a tiny random HF causal LM from a config, save it, and return the folder."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config

    kw = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
              tie_word_embeddings=True, rope_theta=10000.0)
    cfg = {"qwen2": lambda: Qwen2Config(**kw), "llama": lambda: LlamaConfig(**kw),
           "qwen3": lambda: Qwen3Config(head_dim=16, **kw)}[arch]()
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_hf_dirs(tmp_path_factory):
    """{arch: folder} for tiny random Qwen2, Llama and Qwen3 models saved locally."""
    return {a: build_tiny_hf(a, tmp_path_factory.mktemp(a)) for a in HF_ARCHS}


def load_hf(path, attn: str = "sdpa"):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return AutoModelForCausalLM.from_pretrained(str(path), attn_implementation=attn).eval()


def tiny_minimind(seed: int = 0, **overrides):
    from model.model_minimind import MiniMindConfig, MiniMindForCausalLM

    kw = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              vocab_size=300, branch_stride=16)
    kw.update(overrides)
    torch.manual_seed(seed)
    return MiniMindForCausalLM(MiniMindConfig(**kw)).eval()
