"""Reasoning distillation pieces: a cross-entropy weighted per target token, and format accuracy by generation.

    loss_fn = WeightedCrossEntropyLoss(mask_mode)      # sum of label_weights x CE over the targets
    res = format_accuracy(ctx, prompts, max_new_tokens=128)   # {"format_accuracy", "format_samples"}

`WeightedCrossEntropyLoss` reads `batch["label_weights"]` (parallel_data/reasoning.py puts `tag_weight`
on the R1 tags; a batch without them weighs every target 1). The engine divides the summed loss by
the number of targets, not by the sum of the weights (as MiniMind's reasoning distillation does), so
the weights raise the tags' share of the gradient without shrinking every other token's. Its metric
"ce" is the plain, unweighted cross-entropy, comparable with SFT.

`format_accuracy` decodes each held-out prompt greedily with the generation engine over the current
weights (each prompt its own sequence; ranks take turns) and counts the completions that
`check_r1_format` accepts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from parallel.sampling import SamplingParams
from parallel_data.reasoning import check_r1_format
from trainer.distributed import all_reduce, rank_and_world
from trainer.engine.stage import RolloutContext
from trainer.logprobs import target_logits, target_mask
from trainer.loss import LossFn, LossOutput, moe_aux_loss


class WeightedCrossEntropyLoss(LossFn):
    """Next-token cross-entropy with a weight per target token (`label_weights`, default 1), summed."""

    perplexity_metric = "ce"  # the perplexity of the plain cross-entropy on the labels

    def __init__(self, mask_mode: str):
        self.mask_mode = mask_mode

    def __call__(self, model, batch: dict) -> LossOutput:
        logits, labels, out = target_logits(model, batch, self.mask_mode)
        ce = F.cross_entropy(logits.float(), labels, reduction="none")
        weights = batch.get("label_weights")
        loss = (weights[target_mask(batch)] * ce).sum() if weights is not None else ce.sum()
        return LossOutput(loss, int(labels.numel()), {"ce": float(ce.detach().sum())}, moe_aux_loss(model, out))


@torch.no_grad()
def format_accuracy(ctx: RolloutContext, prompts: list[list[int]], *, max_new_tokens: int) -> dict[str, float]:
    """Share of greedy completions of `prompts` (token ids) in the R1 format, over every rank's share."""
    rank, world = rank_and_world()
    mine = prompts[rank::world]
    ok = 0
    if mine:
        results = ctx.generator().generate([{"branches": [p]} for p in mine], SamplingParams(),
                                           max_new_tokens=max_new_tokens, seed=ctx.seed)
        ok = sum(check_r1_format(r.branches[0].text) for r in results)
    ok, n = all_reduce([ok, len(mine)])
    return {"format_accuracy": ok / max(n, 1.0), "format_samples": n}
