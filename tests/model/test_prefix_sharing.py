"""Prefix sharing (branch_stride 0, isolated mask): the main is prefilled once and every branch decodes
exactly as plain causal decoding of main + branch, with any base model (unpatched, patched, MiniMind)."""

import pytest
import torch
from conftest import load_hf, tiny_minimind

from model.parallel_generation import ParallelGenerator
from parallel.rope2d import patch_model_with_interleaved_2d_rope

CONTEXT = [17, 42, 99, 5, 230, 11, 64, 8, 9, 10, 100, 101]
QUESTIONS = [[102, 103, 104], [7], [55, 56, 57, 58, 59]]
NEW = 8


def build(kind, tiny_hf_dirs):
    if kind == "minimind":
        return tiny_minimind(seed=3, tie_word_embeddings=False, branch_stride=16)
    arch, _, patched = kind.partition("-")
    model = load_hf(tiny_hf_dirs[arch])
    if patched:
        patch_model_with_interleaved_2d_rope(model, ratio=0.5, branch_stride=128)
    return model


class FedTokens:
    """Counts the tokens of every forward (a hook on the input embeddings)."""

    def __init__(self, model):
        self.shapes = []
        self.hook = model.get_input_embeddings().register_forward_hook(
            lambda mod, args, out: self.shapes.append(tuple(args[0].shape)))


@pytest.mark.parametrize("kind", ["qwen2", "llama", "qwen2-patched", "llama-patched", "minimind"])
def test_prefix_sharing_equals_causal_decoding_of_the_concatenation(tiny_hf_dirs, kind):
    model = build(kind, tiny_hf_dirs)
    gen = ParallelGenerator(model, None, mask_mode="isolated", branch_stride=0)
    fed = FedTokens(model)
    res = gen.generate([{"main": CONTEXT, "branches": QUESTIONS}], eos_token_ids=[], max_new_tokens=NEW)
    fed.hook.remove()
    # one prefill of the context and the questions (the context once), then one token per branch and step
    assert fed.shapes[0] == (1, len(CONTEXT) + sum(len(q) for q in QUESTIONS))
    assert all(s[0] == 1 and s[1] <= len(QUESTIONS) for s in fed.shapes[1:]) and len(fed.shapes) == NEW
    for q, r in zip(QUESTIONS, res[0].branches):
        ref = model.generate(torch.tensor([CONTEXT + q]), do_sample=False, max_new_tokens=NEW, pad_token_id=0,
                             eos_token_id=None)
        assert r.token_ids == ref[0, len(CONTEXT) + len(q):].tolist()


def test_unpatched_model_defaults_to_prefix_sharing_and_refuses_coordinates(tiny_hf_dirs):
    model = load_hf(tiny_hf_dirs["qwen2"])
    gen = ParallelGenerator(model, None, mask_mode="isolated")
    assert gen.branch_stride == 0 and not gen.runner.takes_2d_positions
    strided = ParallelGenerator(model, None, mask_mode="isolated", branch_stride=16)
    with pytest.raises(ValueError, match="sample 0: this model takes 1D positions only"):
        strided.generate([{"branches": QUESTIONS}])
    one = strided.generate([{"branches": QUESTIONS[:1]}], eos_token_ids=[], max_new_tokens=3)  # coordinate 0
    assert one[0].branches[0].token_ids == gen.generate([{"branches": QUESTIONS[:1]}], eos_token_ids=[],
                                                        max_new_tokens=3)[0].branches[0].token_ids
    with pytest.raises(ValueError, match="needs the isolated mask"):
        ParallelGenerator(model, None)  # columnar by default: branches would be indistinguishable


def test_columnar_and_reference_scheme_refuse_stride_zero():
    with pytest.raises(ValueError, match="needs the isolated mask"):
        ParallelGenerator(tiny_minimind(), None, mask_mode="columnar", branch_stride=0)
    with pytest.raises(ValueError, match="reference"):
        ParallelGenerator(tiny_minimind(rope_2d_scheme="reference"), None, mask_mode="isolated", branch_stride=0)
    with pytest.raises(ValueError, match=">= 0"):
        ParallelGenerator(tiny_minimind(), None, branch_stride=-1)
