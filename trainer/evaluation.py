"""The parallel forward pass and token-weighted loss, shared by training, validation and scripts/eval_loss.py.

`batch_loss` builds the attention mask once for the batch (dense bool for SDPA/MiniMind, additive
for eager HF attention, FlexAttention BlockMask on CUDA when enabled) and calls the model with explicit
`position_ids` `[B, T, 3]`. `lm_loss_sum` returns the summed cross-entropy and the number of target
tokens, so callers can weight by tokens across batches, accumulation steps and ranks.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from parallel.masks import build_attention_mask, build_flex_block_mask
from trainer.distributed import all_reduce


def attention_impl(model) -> str:
    cfg = getattr(getattr(model, "module", model), "config", None)
    if getattr(cfg, "model_type", None) == "minimind":
        return "flex" if getattr(cfg, "use_flex_attention", False) else "sdpa"
    return getattr(cfg, "_attn_implementation", None) or "sdpa"


def model_dtype(model) -> torch.dtype:
    return next(getattr(model, "module", model).parameters()).dtype


def batch_mask(model, batch: dict, mask_mode: str):
    """The 4-D mask (or BlockMask) this model needs for the batch; built once per forward."""
    impl = attention_impl(model)
    t, b = batch["time_ids"], batch["branch_ids"]
    if impl in ("flex", "flex_attention") and t.is_cuda:
        return build_flex_block_mask(t, b, mask_mode)
    if impl == "eager":
        return build_attention_mask(t, b, mask_mode, dtype=model_dtype(model))
    return build_attention_mask(t, b, mask_mode)


def batch_loss(model, batch: dict, mask_mode: str, *, minimind: bool = True):
    """-> (summed CE over the batch's targets, number of targets, model output).

    MiniMind computes the loss at the target positions only and skips pads (no `[B, T, V]` logits);
    other models return logits and the loss is taken from them.
    """
    mask = batch_mask(model, batch, mask_mode)
    kw = dict(input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"], use_cache=False)
    if minimind:
        out = model(**kw, token_mask=batch["token_mask"], labels=batch["labels"], compute_logits=False,
                    loss_reduction="sum")
        return out.loss, int((batch["labels"] != -100).sum()), out
    out = model(**kw)
    s, n = lm_loss_sum(out.logits, batch["labels"])
    return s, n, out


def lm_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed CE over target tokens (labels already aligned, -100 = none) and their count."""
    sel = labels != -100
    n = int(sel.sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    return F.cross_entropy(logits[sel].float(), labels[sel], reduction="sum"), n


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def is_minimind(model) -> bool:
    return getattr(getattr(getattr(model, "module", model), "config", None), "model_type", None) == "minimind"


@torch.no_grad()
def evaluate_loss(model, batches, device, *, mask_mode: str, amp_dtype: torch.dtype | None = None,
                  max_batches: int = 0, progress=None) -> dict:
    """Token-weighted mean loss over `batches` (this rank's share), summed over all ranks.

    Returns {"loss", "ppl", "tokens", "batches"}; identical on every rank.
    """
    was_training = model.training
    model.eval()
    total, tokens, n_batches = 0.0, 0, 0
    mm = is_minimind(model)
    for batch in batches:
        batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        with autocast_context(device, amp_dtype):
            s, n, _ = batch_loss(model, batch, mask_mode, minimind=mm)
        total += float(s)
        tokens += n
        n_batches += 1
        if progress is not None:
            progress(n_batches)
        if max_batches and n_batches >= max_batches:
            break
    total, tokens, n_batches = all_reduce([total, tokens, n_batches])
    if was_training:
        model.train()
    loss = total / tokens if tokens else float("nan")
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)) if tokens else float("nan"), "tokens": int(tokens),
            "batches": int(n_batches)}
