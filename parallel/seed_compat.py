"""Backward compatibility with the seed API (the original ParallelMind `parallel/columnar.py`).

This module exists so that code, snippets and commands written against the seed keep working.
New code uses the core modules: `parallel.layout`, `parallel.rope2d` and `parallel.masks`, which
take positions explicitly, number rotary pairs from 0 and use the names of docs/DESIGN.md.
`parallel.columnar` re-exports the seed API from here, under the seed's names.

| seed API (here)                                                     | core equivalent                                         |
|---------------------------------------------------------------------|---------------------------------------------------------|
| `build_flat_linear_layout(..., interleave_branches=False, ...)`     | `parallel.layout.build_flat_linear_layout` (no flag)    |
| `auto_pair_indices(model, ratio)`: 1-based pairs                    | `rope2d.select_pairs(num_pairs, ratio)`: 0-based        |
| `Interleaved2DRoPE(inv_freq, pair_indices)`: 1-based, positional    | `rope2d.Interleaved2DRoPE(inv_freq, pairs=...)`         |
| `patch_model_with_interleaved_2d_rope(model, pair_indices)`         | the `rope2d` function of that name, `pairs=` keyword    |
| `set_rope_pos2d(model, pos2d)`: a side channel for the next forward | `model(..., position_ids=layout.position_ids())`        |
| `build_columnar_causal_mask(time_ids, pad_mask)`                    | `masks.build_attention_mask(time_ids, branch_ids, mode)`|
| `BatchLayout.metadata`, `LayoutMetadata` (per sample)               | the `[B, NB]` per-branch tensors of `BatchLayout`       |
| `BatchLayout.attention_mask` `[B, T]` (1 = real token)              | `BatchLayout.token_mask` (bool); `attention_mask` now only means the 4-D mask given to a model |
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
from torch import nn

from parallel import layout as _layout
from parallel import masks as _masks
from parallel import rope2d as _rope2d

# --- layouts -----------------------------------------------------------------------------------------


def check_interleave_branches(interleave_branches) -> bool:
    """The seed's `interleave_branches` flag: both values give the same time-major layout, as in the seed.

    In the seed, the interleave path (taken only for samples without a main) walked the branches
    round-robin and gave every token the same time as the default path; both paths then sorted every
    token by (time, branch id). The layout is that time-major order whatever the flag says, so there
    is nothing for it to select; it is still checked to be a bool, so that a mistyped value is an
    error rather than silently taken.
    """
    if not isinstance(interleave_branches, bool):
        raise TypeError(f"interleave_branches must be True or False, got {interleave_branches!r}")
    return interleave_branches


def build_flat_linear_layout(tokenizer, samples, device=None, pad_to: int | None = None, branch_stride: int = 128,
                             align_to: str = "left", random_time_offset: bool = False,
                             interleave_branches: bool = False, *, max_tokens: int | None = None,
                             generator: torch.Generator | None = None) -> _layout.BatchLayout:
    """The seed's signature of `parallel.layout.build_flat_linear_layout` (see `check_interleave_branches`)."""
    check_interleave_branches(interleave_branches)
    return _layout.build_flat_linear_layout(tokenizer, samples, device, pad_to, branch_stride, align_to,
                                            random_time_offset, max_tokens=max_tokens, generator=generator)


@dataclass
class LayoutMetadata:
    """The seed's per-sample description of a layout, one entry per branch present (main first)."""

    branch_ids: list[int]  # 0 = main (if present), then 1..n
    branch_positions: list[int]  # branch coordinate of each entry of branch_ids
    branch_lengths: list[int]  # tokens kept
    branch_start_y: list[int]  # time of each branch's first token
    branch_pos1d_end: list[int]  # flat index of each branch's last kept token
    answer_token_starts: list[int]  # branch-local index where the targets start (main: its length)
    background_branch_id: int  # 0 when a main exists, else -1
    truncated_tokens: int = 0


def layout_metadata(layout: _layout.BatchLayout) -> list[LayoutMetadata]:
    """`[B, NB]` per-branch tensors of a `BatchLayout` -> the seed's `LayoutMetadata` per sample."""
    present = (layout.branch_length > 0).tolist()
    coord, length = layout.branch_coord.tolist(), layout.branch_length.tolist()
    start, last = layout.branch_start_time.tolist(), layout.branch_last_index.tolist()
    answer, truncated = layout.branch_answer_offset.tolist(), layout.truncated_tokens.tolist()
    out = []
    for b, row in enumerate(present):
        ids = [k for k, here in enumerate(row) if here]
        out.append(LayoutMetadata(
            branch_ids=ids, branch_positions=[coord[b][k] for k in ids], branch_lengths=[length[b][k] for k in ids],
            branch_start_y=[start[b][k] for k in ids], branch_pos1d_end=[last[b][k] for k in ids],
            answer_token_starts=[answer[b][k] for k in ids], background_branch_id=0 if row[0] else -1,
            truncated_tokens=truncated[b]))
    return out


# --- 2D RoPE: 1-based pair indices -------------------------------------------------------------------


def pairs_from_seed(pair_indices) -> tuple[int, ...]:
    """The seed's 1-based rotary pair indices -> 0-based pairs (pair 0 = highest frequency)."""
    pairs = tuple(int(i) - 1 for i in pair_indices)
    if any(p < 0 for p in pairs):
        raise ValueError(f"pair indices are 1-based in the seed API, got {tuple(pair_indices)}")
    return pairs


def auto_pair_indices(model_or_head_dim, ratio: float, scheme: str = "additive") -> tuple[int, ...]:
    """1-based indices of the selected rotary pairs for a model (or a head_dim), as the seed numbered them."""
    num_pairs = _rope2d.head_dim_of(model_or_head_dim) // 2
    return tuple(i + 1 for i in _rope2d.select_pairs(num_pairs, ratio, scheme))


class Interleaved2DRoPE(_rope2d.Interleaved2DRoPE):
    """The seed's constructor: `pair_indices` 1-based and positional; otherwise the core module."""

    def __init__(self, inv_freq: torch.Tensor, pair_indices: list[int] | tuple[int, ...] | None = None, *,
                 ratio: float | None = None, scheme: str = "additive", attention_scaling: float = 1.0):
        pairs = None if pair_indices is None else pairs_from_seed(pair_indices)
        super().__init__(inv_freq, pairs=pairs, ratio=ratio, scheme=scheme, attention_scaling=attention_scaling)


def patch_model_with_interleaved_2d_rope(model: nn.Module, pair_indices: list[int] | tuple[int, ...] | None = None,
                                         *, ratio: float | None = None, scheme: str = "additive",
                                         branch_stride: int = 128,
                                         mask_mode: str = "columnar") -> _rope2d.Interleaved2DRoPE:
    """The seed's signature: `pair_indices` 1-based and positional (see `auto_pair_indices`), or `ratio`."""
    pairs = None if pair_indices is None else pairs_from_seed(pair_indices)
    return _rope2d.patch_model_with_interleaved_2d_rope(model, pairs=pairs, ratio=ratio, scheme=scheme,
                                                        branch_stride=branch_stride, mask_mode=mask_mode)


# --- 2D RoPE: the set_rope_pos2d side channel --------------------------------------------------------

# pos2d waiting for the next forward of a rotary module: per thread, keyed by module id, used once.
# It lives here, not on the module, so that models stay picklable and deep-copyable.
_PENDING = threading.local()
_HOOK_LOCK = threading.Lock()  # two threads patching the same module register the hook once


def _pending() -> dict[int, torch.Tensor]:
    if not hasattr(_PENDING, "by_module"):
        _PENDING.by_module = {}
    return _PENDING.by_module


def _merge_pending(pos2d: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """`[B, T, 2]` pos2d + the forward's `[1 | B, T]` flat positions -> `[B, T, 3]`."""
    if position_ids.dim() != 2:
        raise ValueError("positions were given both by set_rope_pos2d and as 2D position_ids; use one")
    if pos2d.dim() != 3 or pos2d.shape[-1] != 2:
        raise ValueError(f"set_rope_pos2d expects [B, T, 2], got {tuple(pos2d.shape)}")
    B, T, _ = pos2d.shape
    if position_ids.shape[-1] != T or position_ids.shape[0] not in (1, B):
        raise ValueError(f"pos2d set by set_rope_pos2d has shape {tuple(pos2d.shape)} but this forward has "
                         f"positions of shape {tuple(position_ids.shape)}; set it again before every forward")
    pos2d = pos2d.to(position_ids.device)
    flat = position_ids.expand(B, T).to(pos2d.dtype)  # Hugging Face models pass [1, T] even for batch B
    return torch.cat([pos2d, flat[..., None]], dim=-1)


def _side_channel_pre_hook(module: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook of a rotary module: replace its flat positions by the pending pos2d, once."""
    pos2d = _pending().pop(id(module), None)
    if pos2d is None:
        return None
    if "position_ids" in kwargs:
        kwargs = {**kwargs, "position_ids": _merge_pending(pos2d, kwargs["position_ids"])}
    else:
        args = (args[0], _merge_pending(pos2d, args[1]), *args[2:])
    return args, kwargs


def set_rope_pos2d(model: nn.Module, pos2d: torch.Tensor | None) -> None:
    """Use `pos2d` `[B, T, 2]` in this thread's next forward of `model` (then it is cleared).

    The seed passed positions this way. Passing them explicitly (`position_ids=pos2d`) needs no
    state; this keeps seed code working. Shapes are checked against the forward's positions.
    """
    rotary = _rope2d.get_rotary(model)
    with _HOOK_LOCK:
        if _side_channel_pre_hook not in rotary._forward_pre_hooks.values():
            rotary.register_forward_pre_hook(_side_channel_pre_hook, with_kwargs=True)
    if pos2d is None:
        _pending().pop(id(rotary), None)
    else:
        _pending()[id(rotary)] = pos2d


# --- masks -------------------------------------------------------------------------------------------


def build_columnar_causal_mask(time_ids: torch.Tensor, pad_mask: torch.Tensor | None = None, *,
                               branch_ids: torch.Tensor | None = None, mode: str = "columnar",
                               dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """The seed's mask builder: `[B, T]` times and `pad_mask` (the seed's name for `token_mask`,
    1 = real token) -> `[B, 1, T, T]`.

    Returns a boolean mask by default (True = attend), which SDPA takes directly; pass a floating
    `dtype` for an additive mask (eager attention).
    """
    if pad_mask is not None:
        time_ids = torch.where(pad_mask.bool(), time_ids, torch.full_like(time_ids, -1))
    return _masks.build_attention_mask(time_ids, branch_ids, mode, dtype=dtype)
