"""CUDA-only checks (compiled FlexAttention, bf16 training); skipped cleanly on CPU-only machines."""

import pytest
import torch
from conftest import tiny_minimind

from parallel.columnar import build_attention_mask, build_flat_linear_layout, build_flex_block_mask

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _layout(device):
    samples = [{"main": list(range(5, 40)), "branches": [list(range(50, 50 + n)) for n in (90, 130, 60, 200)]}] * 2
    return build_flat_linear_layout(None, samples, branch_stride=16).to(device)


@pytest.mark.parametrize("mode", ["columnar", "isolated"])
def test_compiled_flex_training_step_equals_sdpa(mode):
    lay = _layout("cuda")
    grads = []
    for flex in (False, True):
        model = tiny_minimind(seed=1, use_flex_attention=flex).cuda().train()
        mask = build_flex_block_mask(lay.time_ids, lay.branch_ids, mode) if flex else \
            build_attention_mask(lay.time_ids, lay.branch_ids, mode)
        out = model(lay.input_ids, attention_mask=mask, position_ids=lay.position_ids(), labels=lay.labels)
        out.loss.backward()
        grads.append((out.loss.detach(), model.lm_head.weight.grad.clone()))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-3, atol=1e-4)


def test_block_mask_memory_is_blockwise():
    t = torch.arange(4096, device="cuda").div(16, rounding_mode="floor").expand(4, 4096).contiguous()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    bm = build_flex_block_mask(t, None, "columnar")
    peak = torch.cuda.max_memory_allocated() - before
    assert bm.shape[-1] == 4096 and peak < 16 * 2 ** 20  # far below a dense 4 x 4096^2 mask (64 MiB)


def test_bf16_autocast_training_runs(tmp_path):
    model = tiny_minimind(seed=2).cuda().train()
    lay = _layout("cuda")
    mask = build_attention_mask(lay.time_ids, lay.branch_ids)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(lay.input_ids, attention_mask=mask, position_ids=lay.position_ids(), labels=lay.labels,
                    token_mask=lay.token_mask)
    out.loss.backward()
    assert torch.isfinite(out.loss)
