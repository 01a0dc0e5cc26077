"""DPO on pair batches: sequence log-probabilities, the sigmoid / IPO / hinge losses, a precomputed reference.

    loss_fn = DPOLoss(reference_model, beta=0.1, loss_type="sigmoid")     # or a ReferenceTable
    out = loss_fn(policy, batch)      # LossOutput: loss summed over the batch's pairs, targets = pairs
    chosen, rejected, out = pair_logps(policy, batch)                    # [P] summed response log-probs
    table = precompute_reference(reference_model, pair_batches(units, tokenizer, 8), device=..., amp=...)

A batch holds one pair per row (`parallel_data.preference`): branch 1 is the chosen response,
branch 2 the rejected one, after the shared prompt. `pair_logps` puts every branch at coordinate 0
and runs the isolated mask, so each response is scored exactly as in its own sequence; only the
response tokens are targets. Losses (logits = (pi_c - pi_r) - (ref_c - ref_r), as in TRL):

* ``sigmoid`` (DPO, arXiv 2305.18290): -log sigmoid(beta * logits);
* ``ipo`` (arXiv 2310.12036): (logits - 1 / (2 beta))^2, on log-probabilities averaged per token;
* ``hinge`` (SLiC): max(0, 1 - beta * logits).

Metrics use TRL's names (sums over pairs; the engine logs them per pair): rewards/chosen and
rewards/rejected (beta * (pi - ref)), rewards/accuracies (chosen reward > rejected), rewards/margins,
logps/chosen, logps/rejected (policy, summed over the response). At the start the policy equals the
reference, so the sigmoid loss is exactly ln 2 = 0.693; a run whose margins stay at zero is warned about.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from parallel.names import DPO_LOSS_TYPES
from parallel_data.parallel_collator import ParallelCollator
from parallel_data.preference import CHOSEN, REJECTED, pair_key, shared_prompt_positions
from trainer.distributed import broadcast_object, gather_objects, rank_and_world
from trainer.engine.interrupt import exit_code_for
from trainer.engine.stage import samples_from_batch
from trainer.logprobs import per_branch_sum, target_logits, token_logprobs
from trainer.loss import LossFn, LossOutput, autocast_context, moe_aux_loss, to_device

log = logging.getLogger("parallelmind")
LOSS_TYPES = DPO_LOSS_TYPES
PAIR_MASK = "isolated"  # a response sees the prompt and itself, never the other response
STUCK_CHECK_CALLS = 50  # training calls after which margins that never left zero are reported


def pair_logps(model, batch: dict, *, average: bool = False) -> tuple[torch.Tensor, torch.Tensor, object]:
    """-> (chosen `[P]`, rejected `[P]` response log-probabilities, summed or per-token averages; model output)."""
    counts = batch["branch_counts"]
    if bool((counts != 2).any()):
        raise ValueError(f"a pair batch has exactly 2 branches per row (chosen, rejected); got {counts.tolist()}")
    logits, labels, out = target_logits(model, shared_prompt_positions(batch), PAIR_MASK)
    lp = token_logprobs(logits, labels)
    per = per_branch_sum(lp, batch)
    if average:
        per = per / per_branch_sum(torch.ones_like(lp), batch).clamp_min(1)
    return per[:, CHOSEN], per[:, REJECTED], out


def dpo_losses(pol_c: torch.Tensor, pol_r: torch.Tensor, ref_c: torch.Tensor, ref_r: torch.Tensor, *, beta: float,
               loss_type: str = "sigmoid") -> torch.Tensor:
    """`[P]` per-pair losses from policy and reference log-probabilities (see the module docstring)."""
    logits = (pol_c - pol_r) - (ref_c - ref_r)
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * logits)
    if loss_type == "ipo":
        return (logits - 1.0 / (2.0 * beta)) ** 2
    if loss_type == "hinge":
        return torch.relu(1.0 - beta * logits)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def batch_pair_keys(batch: dict) -> list[bytes]:
    """The `pair_key` of every row of a pair batch (the same for either pair layout)."""
    keys = []
    for s in samples_from_batch(batch):
        main = s["main"] or []
        keys.append(pair_key(main + s["branches"][0], main + s["branches"][1]))
    return keys


class ReferenceTable:
    """Reference log-probabilities (summed over each response) of every pair, keyed by `pair_key`."""

    def __init__(self, values: dict[bytes, tuple[float, float]]):
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def lookup(self, batch: dict, *, average: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (chosen `[P]`, rejected `[P]`) for the rows of `batch`, on its device."""
        try:
            pairs = [self.values[k] for k in batch_pair_keys(batch)]
        except KeyError:
            raise ValueError("a pair of this batch has no precomputed reference log-probability (the data changed "
                             "since the table was made)") from None
        ref = torch.tensor(pairs, dtype=torch.float32, device=batch["input_ids"].device)
        if average:
            n = per_branch_sum(torch.ones(int((batch["labels"] != -100).sum()), device=ref.device), batch)
            ref = ref / n[:, [CHOSEN, REJECTED]].clamp_min(1)
        return ref[:, 0], ref[:, 1]


def pair_batches(units, tokenizer, batch_size: int):
    """Collated batches of `batch_size` pair samples from an iterable of them (the last one may be smaller)."""
    collator, buf = ParallelCollator(tokenizer, branch_stride=1), []  # pair_logps puts every branch at 0 anyway
    for unit in units:
        buf.append(unit)
        if len(buf) == batch_size:
            yield collator.collate(buf)
            buf = []
    if buf:
        yield collator.collate(buf)


@torch.no_grad()
def precompute_reference(reference, batches, *, device: torch.device, amp: torch.dtype | None = None,
                         progress=None, stop=None) -> ReferenceTable:
    """Score every pair of `batches` once with the frozen `reference` (each rank a share, then merged).
    `progress(batches_done)` is called after each batch; a `stop` flag (trainer.engine.interrupt.StopFlag)
    that is set ends the work with SystemExit(130 / 143): nothing is trained or saved yet."""
    rank, world = rank_and_world()
    values: dict[bytes, tuple[float, float]] = {}
    for k, batch in enumerate(batches):
        if stop is not None and stop.requested:
            log.warning("stopped while precomputing the reference log-probabilities (nothing was trained)")
            raise SystemExit(exit_code_for(stop.signum))
        if k % world != rank:
            continue
        batch = to_device(batch, device)
        with autocast_context(device, amp):
            c, r, _ = pair_logps(reference, batch)
        values.update(zip(batch_pair_keys(batch), zip(c.float().tolist(), r.float().tolist())))
        if progress is not None:
            progress(k + 1)
    if world > 1:
        parts = gather_objects(values, rank == 0)
        values = broadcast_object({k: v for part in parts for k, v in part.items()} if rank == 0 else None)
    return ReferenceTable(values)


class DPOLoss(LossFn):
    """The DPO loss hook: pairs are the targets; the reference is a frozen model or a `ReferenceTable`."""

    def __init__(self, reference, *, beta: float = 0.1, loss_type: str = "sigmoid"):
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
        if not beta > 0:
            raise ValueError(f"beta must be positive, got {beta}")
        self.reference, self.beta, self.loss_type = reference, float(beta), loss_type
        self.average = loss_type == "ipo"
        self._calls, self._abs_margin, self._warned = 0, 0.0, False

    def count_targets(self, batch: dict) -> int:
        return int(batch["num_samples"])

    def reference_logps(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.reference, ReferenceTable):
            return self.reference.lookup(batch, average=self.average)
        with torch.no_grad():
            c, r, _ = pair_logps(self.reference, batch, average=self.average)
        return c, r

    def __call__(self, model, batch: dict) -> LossOutput:
        pol_c, pol_r, out = pair_logps(model, batch, average=self.average)
        ref_c, ref_r = self.reference_logps(batch)
        losses = dpo_losses(pol_c, pol_r, ref_c, ref_r, beta=self.beta, loss_type=self.loss_type)
        rew_c, rew_r = (self.beta * (pol_c - ref_c)).detach(), (self.beta * (pol_r - ref_r)).detach()
        margins = rew_c - rew_r
        if model.training:
            self._watch(margins)
        metrics = {"rewards/chosen": float(rew_c.sum()), "rewards/rejected": float(rew_r.sum()),
                   "rewards/accuracies": float((margins > 0).sum()), "rewards/margins": float(margins.sum()),
                   "logps/chosen": float(pol_c.detach().sum()), "logps/rejected": float(pol_r.detach().sum())}
        return LossOutput(losses.sum(), int(losses.numel()), metrics, moe_aux_loss(model, out))

    def _watch(self, margins: torch.Tensor) -> None:
        """Warn once when, after STUCK_CHECK_CALLS training batches, the policy has not moved from the reference
        (the loss then stays at ln 2 = 0.693: usually a learning rate far too small for the run's length)."""
        self._calls += 1
        self._abs_margin += float(margins.abs().mean())
        if self._calls == STUCK_CHECK_CALLS and not self._warned and self._abs_margin / self._calls < 1e-3:
            self._warned = True
            log.warning("DPO: after %d batches the mean |reward margin| is %.1e: the policy has hardly moved from "
                        "the reference, so the loss stays near ln 2 = %.3f; raise --learning_rate (or --beta)",
                        self._calls, self._abs_margin / self._calls, math.log(2))
