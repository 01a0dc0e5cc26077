"""The mask rule per row: a batch may mix columnar samples with isolated ones.

Each function takes `rule`: a mode name (every row follows it: the plain `parallel.masks` builders)
or a `[B]` bool tensor, True where the row's sample uses the isolated rule.
"""

from __future__ import annotations

import torch

from parallel.masks import build_attention_mask, build_incremental_mask, visible


def rows_visible(q_time, q_branch, k_time, k_branch, rule: str | torch.Tensor) -> torch.Tensor:
    """`parallel.masks.visible` with the rule of each row (the tensors' first dimension is the row)."""
    if isinstance(rule, str):
        return visible(q_time, q_branch, k_time, k_branch, rule)
    iso = rule.view(-1, *([1] * (q_time.dim() - 1)))  # [B, 1, 1]
    own = (k_branch == q_branch) | (k_branch == 0)
    return visible(q_time, q_branch, k_time, k_branch, "columnar") & (~iso | own)


def rows_incremental_mask(q_time, q_branch, past_time, past_branch, rule: str | torch.Tensor, *,
                          dtype: torch.dtype) -> torch.Tensor:
    """`parallel.masks.build_incremental_mask` with the rule of each row: `[B, 1, K, L + K]`."""
    if isinstance(rule, str):
        return build_incremental_mask(q_time, q_branch, past_time, past_branch, rule, dtype=dtype)
    col, iso = (build_incremental_mask(q_time, q_branch, past_time, past_branch, m, dtype=dtype)
                for m in ("columnar", "isolated"))
    return torch.where(rule[:, None, None, None], iso, col)


def rows_attention_mask(time_ids, branch_ids, rule: str | torch.Tensor, *, dtype: torch.dtype) -> torch.Tensor:
    """`parallel.masks.build_attention_mask` with the rule of each row: `[B, 1, T, T]`."""
    if isinstance(rule, str):
        return build_attention_mask(time_ids, branch_ids, rule, dtype=dtype)
    col, iso = (build_attention_mask(time_ids, branch_ids, m, dtype=dtype) for m in ("columnar", "isolated"))
    return torch.where(rule[:, None, None, None], iso, col)
