"""The seed API (parallel/seed_compat.py, exported by parallel.columnar) maps onto the core exactly."""

import copy
import pickle

import pytest
import torch

from parallel import columnar, layout, rope2d, seed_compat


def test_columnar_exports_the_seed_api():
    for name in ("build_flat_linear_layout", "Interleaved2DRoPE", "patch_model_with_interleaved_2d_rope",
                 "auto_pair_indices", "set_rope_pos2d", "build_columnar_causal_mask", "LayoutMetadata"):
        assert getattr(columnar, name) is getattr(seed_compat, name)


def test_interleave_branches_gives_the_same_time_major_layout():
    samples = [{"branches": [[10, 11, 12], [20, 21], [30, 31, 32, 33]]}, {"main": [1, 2], "branches": [[5], [6, 7]]}]
    core = layout.build_flat_linear_layout(None, samples, None, None, 128, "left", False)
    for flag in (False, True):
        seed = seed_compat.build_flat_linear_layout(None, samples, None, None, 128, "left", False, flag)
        assert torch.equal(seed.input_ids, core.input_ids) and torch.equal(seed.pos2d, core.pos2d)
    with pytest.raises(TypeError, match="interleave_branches must be True or False"):
        seed_compat.build_flat_linear_layout(None, samples, interleave_branches="yes")
    with pytest.raises(TypeError):  # the core has no such argument: nothing is accepted and dropped
        layout.build_flat_linear_layout(None, samples, interleave_branches=True)


def test_seed_metadata_is_derived_from_the_per_branch_tensors():
    lay = columnar.build_flat_linear_layout(None, [{"main": [1, 2], "branches": [[10, 11, 12],
                                                                                 {"input_ids": [20, 21],
                                                                                  "answer_offset": 1}]},
                                                   {"branches": [[5, 6]]}], branch_stride=100, max_tokens=6)
    m0, m1 = lay.metadata
    assert m0 == seed_compat.LayoutMetadata(branch_ids=[0, 1, 2], branch_positions=[0, 100, 200],
                                            branch_lengths=[2, 2, 2], branch_start_y=[0, 2, 2],
                                            branch_pos1d_end=[1, 4, 5], answer_token_starts=[2, 0, 1],
                                            background_branch_id=0, truncated_tokens=1)
    assert m1.branch_ids == [1] and m1.background_branch_id == -1 and m1.branch_pos1d_end == [1]


def test_pair_indices_are_one_based_only_in_the_seed_api():
    inv = 1.0 / (10000 ** (torch.arange(0, 16, 2).float() / 16))
    seed = seed_compat.Interleaved2DRoPE(inv, (1, 3, 6, 8))
    core = rope2d.Interleaved2DRoPE(inv, pairs=(0, 2, 5, 7))
    assert seed.pairs == core.pairs == (0, 2, 5, 7) and torch.equal(seed.coefficients, core.coefficients)
    assert isinstance(seed, rope2d.Interleaved2DRoPE)
    assert seed_compat.auto_pair_indices(16, 0.5) == tuple(p + 1 for p in rope2d.select_pairs(8, 0.5))
    with pytest.raises(TypeError):  # positional pairs in the core would silently mean something else
        rope2d.Interleaved2DRoPE(inv, (1, 3))
    with pytest.raises(ValueError, match="1-based"):
        seed_compat.pairs_from_seed((0, 1))


def test_side_channel_keeps_models_copyable():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1)).eval()
    seed_compat.patch_model_with_interleaved_2d_rope(model, ratio=0.5)
    lay = columnar.build_flat_linear_layout(None, [{"branches": [[3, 4, 5], [6, 7]]}], branch_stride=16)
    seed_compat.set_rope_pos2d(model, lay.pos2d)
    seed_compat.set_rope_pos2d(model, lay.pos2d)  # the hook is registered once
    rotary = rope2d.get_rotary(model)
    assert len(rotary._forward_pre_hooks) == 1
    twin = copy.deepcopy(model)
    pickle.loads(pickle.dumps(model))
    mask = columnar.build_attention_mask(lay.time_ids, lay.branch_ids)
    with torch.no_grad():
        side = model(lay.input_ids, attention_mask=mask).logits
        explicit = twin(lay.input_ids, attention_mask=mask, position_ids=lay.position_ids()).logits
    assert torch.allclose(side, explicit, atol=1e-6)
    seed_compat.set_rope_pos2d(model, None)  # clearing: the next forward uses plain positions
    assert id(rotary) not in seed_compat._pending()
