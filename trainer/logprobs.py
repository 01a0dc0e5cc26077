"""Logits and log-probabilities at the targets of a collated batch: what preference, distillation and RL losses read.

    logits, labels, out = target_logits(model, batch, mask_mode)   # [N, V], [N] at labels != -100 (row-major)
    lp = token_logprobs(logits, labels)                            # [N] log p(label), float32
    per_seq = per_branch_sum(lp, batch)                            # [B, NB] summed per (row, branch id)
    n_tok = per_branch_sum(torch.ones_like(lp), batch)             # [B, NB] target tokens per branch

A MiniMind model computes its output head at the N target positions only (`logits_to_keep` as a
`[B, T]` map), so no `[B, T, V]` tensor is made; any other causal LM returns full logits, and the
targets are selected from them. The forward goes through the module given (a DDP wrapper included),
with the batch's 4-D mask for `mask_mode` and its explicit `position_ids`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.loss import batch_mask, is_minimind, token_mask


def target_mask(batch: dict) -> torch.Tensor:
    """`[B, T]` bool: the positions that have a target (labels != -100)."""
    return batch["labels"] != -100


def target_logits(model, batch: dict, mask_mode: str) -> tuple[torch.Tensor, torch.Tensor, object]:
    """-> (logits `[N, V]` at the target positions, their labels `[N]`, the model output)."""
    sel = target_mask(batch)
    kw = dict(input_ids=batch["input_ids"], attention_mask=batch_mask(model, batch, mask_mode),
              position_ids=batch["position_ids"], use_cache=False)
    if is_minimind(model):
        out = model(**kw, token_mask=token_mask(batch), logits_to_keep=sel)
        return out.logits, batch["labels"][sel], out
    out = model(**kw)
    return out.logits[sel], batch["labels"][sel], out


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`[N, V]`, `[N]` -> `[N]` log-probability of each label (computed in float32)."""
    return -F.cross_entropy(logits.float(), labels, reduction="none")


def per_branch_sum(values: torch.Tensor, batch: dict) -> torch.Tensor:
    """`[N]` values at the target positions -> `[B, NB]` sums per (row, branch id); NB = largest branch id + 1."""
    sel = target_mask(batch)
    bids = batch["branch_ids"]
    B, nb = bids.shape[0], int(bids.max()) + 1 if bids.numel() else 1
    rows = torch.arange(B, device=bids.device)[:, None].expand_as(bids)
    index = (rows * nb + bids.clamp_min(0))[sel]
    return values.new_zeros(B * nb).index_add_(0, index, values).view(B, nb)

