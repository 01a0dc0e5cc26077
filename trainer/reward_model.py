"""Bradley-Terry reward model on preference pairs: a scalar head scores each response at its last real token.

    sel = last_token_select(batch)                       # [B, T] bool: the last token of branch 1 and 2 per row
    chosen, rejected, aux = pair_rewards(model, batch)   # [P] rewards of a `model.value_head.ValueModel`
    loss_fn = BradleyTerryLoss(center_coef=0.01)         # LossOutput: summed over pairs, targets = pairs

A batch holds one pair per row (`parallel_data.preference`): branch 1 is the chosen response, branch 2
the rejected one. In the `shared` layout every branch sits at coordinate 0 and the isolated mask is used
(`shared_prompt_positions`), so the final hidden state at the last token of a response is exactly that
of prompt + response as its own sequence: the reward a pair gets here is the reward the RL stages read
(`trainer.rollouts.RewardModelScore` scores prompt + answer as one plain sequence at its last token).

Loss per pair: -log sigmoid(r_chosen - r_rejected) (Bradley-Terry, as in InstructGPT / TRL's
RewardTrainer), plus `center_coef` x (r_chosen + r_rejected)^2 (TRL's center_rewards_coefficient,
arXiv 2312.09244), which keeps rewards centred on zero without changing which answer wins. Metrics
(sums over pairs; the engine logs them per pair): accuracy (r_chosen > r_rejected), margin, and the
mean chosen / rejected rewards.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from parallel_data.preference import CHOSEN, REJECTED, shared_prompt_positions
from trainer.loss import LossFn, LossOutput, batch_mask, token_mask

PAIR_MASK = "isolated"  # a response sees the prompt and itself, never the other response


def last_token_select(batch: dict) -> torch.Tensor:
    """`[B, T]` bool: the last real token of the chosen and of the rejected branch of every row."""
    bids = batch["branch_ids"]
    counts = batch["branch_counts"]
    if bool((counts != 2).any()):
        raise ValueError(f"a pair batch has exactly 2 branches per row (chosen, rejected); got {counts.tolist()}")
    T = bids.shape[1]
    idx = torch.arange(T, device=bids.device).expand_as(bids)
    sel = torch.zeros_like(bids, dtype=torch.bool)
    rows = torch.arange(bids.shape[0], device=bids.device)
    for b in (CHOSEN, REJECTED):
        last = torch.where(bids == b, idx, -1).max(dim=1).values  # [B] flat index of the branch's last token
        sel[rows, last] = True
    return sel


def pair_rewards(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (chosen `[P]`, rejected `[P]` rewards in float32, MoE aux loss) of a `ValueModel` (or its DDP wrapper)."""
    batch = shared_prompt_positions(batch)
    sel = last_token_select(batch)
    values, aux = model(batch["input_ids"], batch_mask(model, batch, PAIR_MASK), batch["position_ids"],
                        token_mask(batch), sel)
    branch = batch["branch_ids"][sel]  # row-major: each row's two selected positions, in either order
    return values[branch == CHOSEN], values[branch == REJECTED], aux


def bradley_terry_losses(chosen: torch.Tensor, rejected: torch.Tensor, center_coef: float = 0.0) -> torch.Tensor:
    """`[P]` per-pair losses: -log sigmoid(r_c - r_r) + center_coef * (r_c + r_r)^2."""
    losses = -F.logsigmoid(chosen - rejected)
    if center_coef:
        losses = losses + center_coef * (chosen + rejected) ** 2
    return losses


class BradleyTerryLoss(LossFn):
    """The reward-model loss hook: pairs are the targets (see the module docstring)."""

    def __init__(self, center_coef: float = 0.0):
        if not center_coef >= 0:
            raise ValueError(f"center_coef must be >= 0, got {center_coef}")
        self.center_coef = float(center_coef)

    def count_targets(self, batch: dict) -> int:
        return int(batch["num_samples"])

    def __call__(self, model, batch: dict) -> LossOutput:
        chosen, rejected, aux = pair_rewards(model, batch)
        losses = bradley_terry_losses(chosen, rejected, self.center_coef)
        c, r = chosen.detach(), rejected.detach()
        metrics = {"accuracy": float((c > r).sum()), "margin": float((c - r).sum()),
                   "reward_chosen": float(c.sum()), "reward_rejected": float(r.sum())}
        moe = getattr(getattr(model, "module", model).config, "use_moe", False)
        return LossOutput(losses.sum(), int(losses.numel()), metrics, aux if moe else None)
