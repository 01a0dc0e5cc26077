"""Losses: the parallel forward pass, the loss hook every training stage plugs in, and loss evaluation.

A loss hook is a `LossFn`: `loss_fn(model, batch) -> LossOutput(loss, targets, metrics, aux_loss)`
where `loss` is SUMMED over the batch's targets (never averaged), so the engine can weight by targets
across micro-batches, accumulation steps and ranks: each optimizer step divides the summed loss of
all its micro-batches on all ranks by their total number of targets (`LossFn.count_targets`, known
before the forward, is what the engine divides by). `CrossEntropyLoss` (next-token cross-entropy on
`labels`) is the default hook; DPO, distillation, reward models and RL bring their own.

`batch_loss` builds the attention mask once for the batch (dense bool for SDPA/MiniMind, additive
for eager HF attention, FlexAttention BlockMask on CUDA when enabled) and calls the model with explicit
`position_ids` `[B, T, 3]`. `evaluate_loss` gives the target-weighted loss over held-out batches
(training validation and scripts/eval_loss.py); it refuses batches without targets and non-finite
losses rather than reporting nan.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from parallel.masks import build_attention_mask, build_flex_block_mask
from trainer.distributed import all_reduce


def token_mask(batch: dict) -> torch.Tensor:
    """The real-token mask `[B, T]` of a collated batch (True = real token); the one place its key is read."""
    return batch["token_mask"]


@dataclass
class LossOutput:
    """What a loss hook returns for one micro-batch.

    loss: 0-dim tensor, summed over the `targets` (the engine scales it by world size / global targets).
    metrics: extra numbers, summed like the loss; logs show them divided by the targets of the window.
    aux_loss: an optional term added as it is (averaged over the step's micro-batches), e.g. the MoE balance loss.
    counts: the denominator of a metric that is not a mean over targets (a per-sequence reward when the
        targets are tokens): logs show `sum(metrics[k]) / sum(counts[k])` over the window for those keys.
    """

    loss: torch.Tensor
    targets: int
    metrics: dict[str, float] = field(default_factory=dict)
    aux_loss: torch.Tensor | None = None
    counts: dict[str, float] = field(default_factory=dict)


def metric_means(metrics: dict[str, float], counts: dict[str, float], targets: float) -> dict[str, float]:
    """Summed metrics -> means: over their own count where one is given, else over the targets."""
    return {k: v / max(counts.get(k, targets), 1e-12 if k in counts else 1.0) for k, v in metrics.items()}


class LossFn:
    """A training objective: `(model, batch) -> LossOutput`. Subclass it for a new stage's loss.

    `perplexity_metric`: the metric (a per-target cross-entropy) whose exponential is the reported
    perplexity, for a loss that is not a plain cross-entropy itself (weighted, mixed with a KL);
    None: the loss."""

    perplexity_metric: str | None = None

    def count_targets(self, batch: dict) -> int:
        """Targets in `batch` before any forward (the normaliser of the step): label tokens by default."""
        return int(batch["num_label_tokens"])

    def __call__(self, model: torch.nn.Module, batch: dict) -> LossOutput:
        raise NotImplementedError


class CrossEntropyLoss(LossFn):
    """Next-token cross-entropy summed over the targets (`labels != -100`); MoE models add their balance loss."""

    def __init__(self, mask_mode: str):
        self.mask_mode = mask_mode

    def __call__(self, model: torch.nn.Module, batch: dict) -> LossOutput:
        s, n, out = batch_loss(model, batch, self.mask_mode, minimind=is_minimind(model))
        return LossOutput(s, n, {}, moe_aux_loss(model, out))


def moe_aux_loss(model, out) -> torch.Tensor | None:
    """The MoE balance loss of a forward's output, for a MoE model (None otherwise)."""
    aux = getattr(out, "aux_loss", None)
    moe = getattr(getattr(getattr(model, "module", model), "config", None), "use_moe", False)
    return aux if aux is not None and moe else None


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
    other models return logits (at the target columns only, `target_columns`) and the loss is taken from
    them with the aligned labels (never through a model's own `labels=`, which would shift them again).
    """
    mask = batch_mask(model, batch, mask_mode)
    kw = dict(input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"], use_cache=False)
    if minimind:
        out = model(**kw, token_mask=token_mask(batch), labels=batch["labels"], compute_logits=False,
                    loss_reduction="sum")
        return out.loss, int((batch["labels"] != -100).sum()), out
    labels = batch["labels"]
    keep = target_columns(model, labels)
    if keep is not None:  # logits only where some row has a target: no [B, T, V] over prompts and pads
        kw["logits_to_keep"], labels = keep, labels[:, keep]
    out = model(**kw)
    s, n = lm_loss_sum(out.logits, labels)
    return s, n, out


def _takes_logits_to_keep(model) -> bool:
    inner = getattr(model, "module", model)
    cls = type(inner)
    if cls not in _LOGITS_TO_KEEP:
        try:
            _LOGITS_TO_KEEP[cls] = "logits_to_keep" in inspect.signature(inner.forward).parameters
        except (TypeError, ValueError):
            _LOGITS_TO_KEEP[cls] = False
    return _LOGITS_TO_KEEP[cls]


_LOGITS_TO_KEEP: dict[type, bool] = {}


def target_columns(model, labels: torch.Tensor) -> torch.Tensor | None:
    """Sequence positions `[K]` where any row of `labels` `[B, T]` has a target, for a Hugging Face model's
    `logits_to_keep` (the model computes its LM head there only); None when that is every position or the
    model does not take the argument."""
    cols = (labels != -100).any(0)
    if bool(cols.all()) or not _takes_logits_to_keep(model):
        return None
    return cols.nonzero().squeeze(1)


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


def to_device(batch: dict, device: torch.device, non_blocking: bool = False) -> dict:
    return {k: (v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _same_count(batches, max_batches: int) -> list:
    """This rank's batches, padded with repeats of its last one (marked None) to the most any rank has."""
    batches = list(batches)[: max_batches or None]
    most = int(all_reduce([float(len(batches))], op="max")[0])
    if most and not batches:
        raise ValueError("a rank has no evaluation batch while others do: with a sharded model every rank must "
                         "evaluate; hold out more records (at least one sample per rank)")
    return batches + [None] * (most - len(batches))


class _EvalSums:
    """Running sums of an evaluation: summed loss, targets, batches, the loss hook's metrics and counts."""

    def __init__(self):
        self.total, self.tokens, self.batches = 0.0, 0, 0
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def add(self, out: LossOutput) -> None:
        self.total += float(out.loss)
        self.tokens += out.targets
        self.batches += 1
        for k, v in out.metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        for k, v in out.counts.items():
            self.counts[k] = self.counts.get(k, 0.0) + float(v)


@torch.no_grad()
def evaluate_loss(model, batches, device, *, mask_mode: str, amp_dtype: torch.dtype | None = None,
                  max_batches: int = 0, progress=None, loss_fn: LossFn | None = None, prepare=None,
                  same_count: bool = False) -> dict:
    """Target-weighted mean loss over `batches` (this rank's share), summed over all ranks.

    Returns {"loss", "ppl", "tokens", "batches", "metrics"} ("metrics": the loss hook's metrics as means,
    over their own counts where `LossOutput.counts` gives them, else over the targets like the loss;
    "ppl": exp of the loss, or of `loss_fn.perplexity_metric`); identical on every rank.
    `prepare(k, batch) -> batch` turns the k-th batch into what the loss hook reads first (a rollout
    stage's held-out prompts -> generated answers). `same_count`: every rank runs as many forwards as the
    rank with the most batches (a sharded model's forward is a collective); the extra ones repeat a batch
    and are not counted. Raises ValueError when the batches hold no target at all, or when the loss is not
    finite: a report never shows nan.
    """
    loss_fn = loss_fn or CrossEntropyLoss(mask_mode)
    was_training = model.training
    model.eval()
    acc, last = _EvalSums(), None
    if same_count:
        batches = _same_count(batches, max_batches)
        last = next((b for b in reversed(batches) if b is not None), None)
        max_batches = 0
    for k, batch in enumerate(batches):
        real = batch if batch is not None else last
        if prepare is not None:
            real = prepare(k, real)
        with autocast_context(device, amp_dtype):
            out = loss_fn(model, to_device(real, device))
        if batch is not None:  # a padding repeat (same_count) is run but not counted
            acc.add(out)
        if progress is not None:
            progress(acc.batches)
        if max_batches and acc.batches >= max_batches:
            break
    total, tokens, n_batches, sums, counts = acc.total, acc.tokens, acc.batches, acc.sums, acc.counts
    names, cnames = sorted(sums), sorted(counts)
    total, tokens, n_batches, *rest = all_reduce([total, tokens, n_batches, *(sums[k] for k in names),
                                                  *(counts[k] for k in cnames)])
    sums, counts = dict(zip(names, rest[:len(names)])), dict(zip(cnames, rest[len(names):]))
    if was_training:
        model.train()
    if not tokens:
        raise ValueError(f"no target tokens in the {int(n_batches)} evaluated batches: there is nothing to take a "
                         "loss on (check the data's text field, answer_offset and --max_seq_len)")
    loss = total / tokens
    metrics = metric_means(sums, counts, tokens)
    nll = metrics.get(loss_fn.perplexity_metric, loss) if loss_fn.perplexity_metric else loss
    if not math.isfinite(loss):
        raise ValueError(f"the evaluated loss is {loss} over {int(tokens)} target tokens: the model gives "
                         "non-finite values (diverged or damaged weights)")
    return {"loss": loss, "ppl": math.exp(min(nll, 50.0)), "tokens": int(tokens), "batches": int(n_batches),
            "metrics": metrics}
