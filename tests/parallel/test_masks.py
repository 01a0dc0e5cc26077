"""Mask builders against the brute-force predicate, and the masks' effect on a real model."""

import random

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_minimind
from oracles import brute_mask

from parallel.columnar import (
    build_attention_mask,
    build_columnar_causal_mask,
    build_flat_linear_layout,
    build_flex_block_mask,
    build_incremental_mask,
    query_chunk_plan,
    to_additive_mask,
)


def random_layout(seed, max_tokens=None, random_offset=True):
    rng = random.Random(seed)
    samples = []
    for _ in range(rng.randint(1, 3)):
        main = [rng.randint(3, 50) for _ in range(rng.randint(0, 4))]
        branches = [[rng.randint(3, 50) for _ in range(rng.randint(1, 6))] for _ in range(rng.randint(1, 4))]
        samples.append({"main": main, "branches": branches})
    return build_flat_linear_layout(None, samples, branch_stride=8, random_time_offset=random_offset,
                                    generator=torch.Generator().manual_seed(seed), max_tokens=max_tokens)


@pytest.mark.parametrize("mode", ["columnar", "isolated"])
@pytest.mark.parametrize("seed", range(5))
def test_dense_masks_match_brute_force(mode, seed):
    lay = random_layout(seed)
    m = build_attention_mask(lay.time_ids, lay.branch_ids, mode)
    add = build_attention_mask(lay.time_ids, lay.branch_ids, mode, dtype=torch.float32)
    for b in range(lay.input_ids.shape[0]):
        ref = torch.tensor(brute_mask(lay.time_ids[b].tolist(), lay.branch_ids[b].tolist(), mode))
        assert torch.equal(m[b, 0], ref)
        assert torch.equal(add[b, 0] == 0, ref)
        assert (add[b, 0][~ref] == torch.finfo(torch.float32).min).all()
    assert m.dtype == torch.bool and m.shape[1] == 1


def test_seed_api_and_pad_rows_keep_their_diagonal():
    lay = random_layout(3)
    m = build_columnar_causal_mask(lay.time_ids, lay.token_mask)
    assert torch.equal(m, build_attention_mask(lay.time_ids, lay.branch_ids, "columnar"))
    assert m.any(dim=-1).all()  # no empty row
    pads = ~lay.token_mask
    if pads.any():
        b, i = torch.nonzero(pads)[0].tolist()
        assert m[b, 0, i].sum() == 1 and m[b, 0, i, i]
        assert not m[b, 0, :, i].clone().fill_diagonal_(False).any() if False else m[b, 0, :i, i].sum() == 0


@pytest.mark.parametrize("mode", ["columnar", "isolated"])
def test_incremental_mask_equals_rows_of_the_full_mask(mode):
    lay = random_layout(11, random_offset=False)
    full = build_attention_mask(lay.time_ids, lay.branch_ids, mode)
    T = lay.time_ids.shape[1]
    for L in (0, 3, T - 4):
        K = T - L if L == T - 4 else 4
        inc = build_incremental_mask(lay.time_ids[:, L:L + K], lay.branch_ids[:, L:L + K], lay.time_ids[:, :L],
                                     lay.branch_ids[:, :L], mode)
        assert torch.equal(inc, full[:, :, L:L + K, :L + K])
    add = build_incremental_mask(lay.time_ids[:, 2:5], lay.branch_ids[:, 2:5], lay.time_ids[:, :2],
                                 lay.branch_ids[:, :2], mode, dtype=torch.float32)
    assert torch.equal(add, to_additive_mask(full[:, :, 2:5, :5], torch.float32))


@pytest.mark.parametrize("mode", ["columnar", "isolated"])
def test_flex_mask_mod_equals_dense(mode):
    from torch.nn.attention.flex_attention import create_mask

    lay = random_layout(5)
    bm = build_flex_block_mask(lay.time_ids, lay.branch_ids, mode, block_size=16)
    B, T = lay.time_ids.shape
    dense = create_mask(bm.mask_mod, B, 1, T, T, device="cpu")
    assert torch.equal(dense, build_attention_mask(lay.time_ids, lay.branch_ids, mode))


def test_query_chunk_plan_is_exact_and_skips_keys():
    lay = random_layout(2, random_offset=False)
    m = build_attention_mask(lay.time_ids, lay.branch_ids)
    B, _, T, _ = m.shape
    plan = query_chunk_plan(m, 4)
    assert plan[0][2] <= 4 + 0 and all(ke <= e for _, e, ke in plan)  # time-major: keys never after the chunk
    q, k, v = (torch.randn(B, 2, T, 8) for _ in range(3))
    full = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
    chunked = torch.cat([F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, :ke], v[:, :, :ke],
                                                        attn_mask=m[..., s:e, :ke]) for s, e, ke in plan], dim=2)
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-6)


def _branch_logits(model, samples, mode, branch_id):
    lay = build_flat_linear_layout(None, samples, branch_stride=16)
    mask = build_attention_mask(lay.time_ids, lay.branch_ids, mode)
    logits = model(lay.input_ids, attention_mask=mask, position_ids=lay.position_ids()).logits
    sel = lay.branch_ids[0] == branch_id
    return logits[0, sel]


def test_isolated_branches_do_not_see_each_other():
    model = tiny_minimind()
    base = [{"main": [5, 6, 7], "branches": [[10, 11, 12, 13], [20, 21, 22, 23], [30, 31]]}]
    other = [{"main": [5, 6, 7], "branches": [[10, 11, 12, 13], [40, 41, 42, 43], [50, 51]]}]
    a = _branch_logits(model, base, "isolated", 1)
    b = _branch_logits(model, other, "isolated", 1)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # the main is shared: changing it changes the branch
    changed_main = [{"main": [5, 6, 8], "branches": base[0]["branches"]}]
    assert (_branch_logits(model, changed_main, "isolated", 1) - a).abs().max() > 1e-4


def test_columnar_sees_earlier_times_only():
    model = tiny_minimind()
    base = [{"branches": [[10, 11, 12, 13], [20, 21, 22, 23]]}]
    same_time = [{"branches": [[10, 11, 12, 13], [20, 21, 22, 99]]}]  # branch 2's token at time 3
    earlier = [{"branches": [[10, 11, 12, 13], [20, 99, 22, 23]]}]  # branch 2's token at time 1
    a = _branch_logits(model, base, "columnar", 1)
    torch.testing.assert_close(_branch_logits(model, same_time, "columnar", 1), a, rtol=0, atol=1e-6)
    diff = (_branch_logits(model, earlier, "columnar", 1) - a).abs().amax(dim=-1)
    assert diff[:2].max() < 1e-6  # branch 1 at times 0 and 1 cannot see time 1 of branch 2
    assert diff[2:].min() > 1e-4  # at times 2 and 3 it does


@pytest.mark.parametrize("mode", ["columnar", "isolated"])
def test_minimind_flex_attention_path_equals_sdpa(mode):
    # on CPU flex_attention runs uncompiled (a reference implementation): this checks the BlockMask logic
    model = tiny_minimind(use_flex_attention=True)
    lay = random_layout(7, random_offset=False)
    dense = build_attention_mask(lay.time_ids, lay.branch_ids, mode)
    block = build_flex_block_mask(lay.time_ids, lay.branch_ids, mode, block_size=16)
    with torch.no_grad():
        a = model(lay.input_ids, attention_mask=dense, position_ids=lay.position_ids()).logits
        b = model(lay.input_ids, attention_mask=block, position_ids=lay.position_ids()).logits
    real = lay.token_mask
    torch.testing.assert_close(b[real], a[real], rtol=0, atol=1e-5)
