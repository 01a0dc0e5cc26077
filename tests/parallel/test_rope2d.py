"""2D RoPE: both schemes against brute-force formulas; patched HF models against unpatched ones."""

import random

import pytest
import torch
from conftest import HF_ARCHS, load_hf
from oracles import brute_additive_rope, brute_reference_rope

from parallel.columnar import (
    Interleaved2DRoPE,
    auto_pair_indices,
    build_attention_mask,
    build_flat_linear_layout,
    patch_model_with_interleaved_2d_rope,
    select_pairs,
    set_rope_pos2d,
)


def inv_freq(head_dim, theta=1e6):
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))


def test_pair_selection_rules():
    # reference: K = round(F * ratio) lowest frequencies (highest indices), at least 1; ratio 0 = none
    assert auto_pair_indices(64, 0.5, "reference") == tuple(range(17, 33))
    assert auto_pair_indices(64, 0.01, "reference") == (32,)
    assert auto_pair_indices(64, 0.0, "reference") == ()
    assert auto_pair_indices(64, 1.0, "reference") == tuple(range(1, 33))
    # additive: spread over the whole spectrum, both ends included
    assert select_pairs(32, 0.25, "additive") == [0, 4, 9, 13, 18, 22, 27, 31]
    assert select_pairs(32, 0.0, "additive") == []
    assert select_pairs(32, 1.0, "additive") == list(range(32))
    with pytest.raises(ValueError, match="rope_2d_ratio"):
        select_pairs(32, 1.5)
    with pytest.raises(ValueError, match="unknown rope_2d_scheme"):
        select_pairs(32, 0.5, "mystery")


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("head_dim", [16, 64])
def test_reference_scheme_equals_brute_force(ratio, head_dim):
    inv = inv_freq(head_dim)
    pairs = auto_pair_indices(head_dim, ratio, "reference")
    rope = Interleaved2DRoPE(inv, pairs, scheme="reference")
    rng = random.Random(int(ratio * 100) + head_dim)
    pos = torch.tensor([[[rng.randint(0, 2048), rng.randint(0, 600), rng.randint(0, 4000)] for _ in range(7)]
                        for _ in range(2)])
    cos, sin = rope(torch.zeros(1, dtype=torch.float64), pos)
    for b in range(2):
        for t in range(7):
            rc, rs = brute_reference_rope(*pos[b, t].tolist(), inv.tolist(), pairs)
            torch.testing.assert_close(cos[b, t], torch.tensor(rc, dtype=cos.dtype), rtol=0, atol=1e-6)
            torch.testing.assert_close(sin[b, t], torch.tensor(rs, dtype=sin.dtype), rtol=0, atol=1e-6)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 1.0])
def test_additive_scheme_equals_brute_force_and_plain_rope_on_one_branch(ratio):
    inv = inv_freq(32)
    pairs = auto_pair_indices(32, ratio, "additive")
    rope = Interleaved2DRoPE(inv, pairs, scheme="additive")
    pos = torch.tensor([[[0, 5, 0], [128, 7, 0], [256, 300, 0]]])
    cos, sin = rope(torch.zeros(1), pos)
    for t in range(3):
        rc, rs = brute_additive_rope(pos[0, t, 0].item(), pos[0, t, 1].item(), inv.tolist(), pairs)
        torch.testing.assert_close(cos[0, t], torch.tensor(rc), rtol=0, atol=1e-6)
        torch.testing.assert_close(sin[0, t], torch.tensor(rs), rtol=0, atol=1e-6)
    # branch coordinate 0: exactly plain 1D RoPE over time, bit for bit
    times = torch.arange(50)[None]
    c2, s2 = rope(torch.zeros(1), torch.stack([torch.zeros_like(times), times], -1))
    freqs = times[..., None].float() * inv
    emb = torch.cat([freqs, freqs], -1)
    assert torch.equal(c2, emb.cos()) and torch.equal(s2, emb.sin())


@pytest.mark.parametrize("arch", HF_ARCHS)
@pytest.mark.parametrize("scheme", ["additive", "reference"])
def test_patched_hf_model_one_branch_vs_unpatched(tiny_hf_dirs, arch, scheme):
    """The default scheme reproduces the base model on one branch; the reference scheme does not (its
    branch pairs stop rotating), which is why it is not the default."""
    model = load_hf(tiny_hf_dirs[arch])
    ids = torch.randint(3, 256, (2, 12))
    with torch.no_grad():
        ref = model(ids).logits
        patch_model_with_interleaved_2d_rope(model, ratio=0.5, scheme=scheme)
        lay = build_flat_linear_layout(None, [{"branches": [ids[0].tolist()]}, {"branches": [ids[1].tolist()]}])
        mask = build_attention_mask(lay.time_ids, lay.branch_ids)
        out = model(lay.input_ids, attention_mask=mask, position_ids=lay.position_ids()).logits
    if scheme == "additive":
        assert (out - ref).abs().max() <= 1e-5
    else:
        assert (out - ref).abs().max() > 1e-4


@pytest.mark.parametrize("arch", HF_ARCHS)
def test_batch_of_two_layouts_equals_each_alone(tiny_hf_dirs, arch):
    model = load_hf(tiny_hf_dirs[arch])
    patch_model_with_interleaved_2d_rope(model, ratio=0.5)
    s1 = {"main": [5, 6, 7, 8], "branches": [[10, 11, 12], [20, 21, 22, 23, 24]]}
    s2 = {"branches": [[30, 31], [40, 41, 42], [50], [60, 61, 62, 63]]}

    def run(samples):
        lay = build_flat_linear_layout(None, samples, branch_stride=64, align_to="right")
        mask = build_attention_mask(lay.time_ids, lay.branch_ids)
        with torch.no_grad():
            return model(lay.input_ids, attention_mask=mask, position_ids=lay.position_ids()).logits, lay

    both, lay = run([s1, s2])
    for b, s in enumerate([s1, s2]):
        alone, lay1 = run([s])
        n = int(lay1.token_mask.sum())
        assert (both[b, :n] - alone[0, :n]).abs().max() <= 1e-5


def test_seed_side_channel_handles_batches_and_is_used_once(tiny_hf_dirs):
    model = load_hf(tiny_hf_dirs["qwen2"])
    patch_model_with_interleaved_2d_rope(model, auto_pair_indices(model, 0.5))
    lay = build_flat_linear_layout(None, [{"branches": [[5, 6, 7], [8, 9]]}, {"branches": [[10, 11, 12, 13, 14]]}],
                                   branch_stride=64)
    mask = build_attention_mask(lay.time_ids, lay.branch_ids)
    with torch.no_grad():
        explicit = model(lay.input_ids, attention_mask=mask, position_ids=lay.position_ids()).logits
        set_rope_pos2d(model, lay.pos2d)  # HF passes [1, T] positions; pos2d must still be per sample
        legacy = model(lay.input_ids, attention_mask=mask).logits
        assert (legacy - explicit).abs().max() <= 1e-5
        plain = model(lay.input_ids, attention_mask=mask).logits  # cleared: no stale coordinates
        assert (plain - explicit).abs().max() > 1e-4
        set_rope_pos2d(model, lay.pos2d[:, :3])
        with pytest.raises(ValueError, match="set it again before every forward"):
            model(lay.input_ids, attention_mask=mask)


def test_unsupported_rotary_models_are_refused(tmp_path):
    from transformers import AutoModelForCausalLM, GPTNeoXConfig, LlamaConfig

    kw = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    dyn = AutoModelForCausalLM.from_config(LlamaConfig(rope_scaling={"rope_type": "dynamic", "factor": 2.0}, **kw))
    with pytest.raises(ValueError, match="dynamic rotary scaling"):
        patch_model_with_interleaved_2d_rope(dyn, ratio=0.5)
    neox = AutoModelForCausalLM.from_config(GPTNeoXConfig(rotary_pct=0.25, **kw))
    with pytest.raises(ValueError, match="partial rotary"):
        patch_model_with_interleaved_2d_rope(neox, ratio=0.5)
    with pytest.raises(ValueError, match="no model-level `rotary_emb`"):
        patch_model_with_interleaved_2d_rope(torch.nn.Linear(2, 2), ratio=0.5)


def test_seed_side_channel_is_per_thread(tiny_hf_dirs):
    import threading

    model = load_hf(tiny_hf_dirs["llama"])
    patch_model_with_interleaved_2d_rope(model, ratio=0.5)
    layouts = [build_flat_linear_layout(None, [{"branches": [[5, 6, 7], [8, 9, 10]]}], branch_stride=s) for s in (32, 96)]
    with torch.no_grad():
        expected = [model(lay.input_ids, attention_mask=build_attention_mask(lay.time_ids, lay.branch_ids),
                          position_ids=lay.position_ids()).logits for lay in layouts]
    errors, barrier = [], threading.Barrier(2)

    def worker(i):
        lay = layouts[i]
        mask = build_attention_mask(lay.time_ids, lay.branch_ids)
        for _ in range(5):
            barrier.wait()  # both threads set their pos2d before either runs its forward
            set_rope_pos2d(model, lay.pos2d)
            barrier.wait()
            with torch.no_grad():
                out = model(lay.input_ids, attention_mask=mask).logits
            errors.append((out - expected[i]).abs().max().item())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 10 and max(errors) <= 1e-5
