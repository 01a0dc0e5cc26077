"""Reinforcement-learning pieces shared by the PPO and GRPO fronts: KL estimators, advantages, clipped
objectives, rewards and the two loss hooks.

Per-token quantities travel as flat `[N]` tensors over the targets of a batch (`labels != -100`, in
row-major order), which is the order `model.value_head.RLPolicy` returns log-probabilities in.
`TargetSegments` regroups them per sequence (one segment per (row, branch)), e.g. for GAE.

    kl_estimate(logp, ref_logp, "k3")          exp(ref - logp) - (ref - logp) - 1 >= 0 (Schulman's k3)
    group_advantages(rewards [P, G], scale)    (r - mean_group) / std, std per group | batch | none
    gae(rewards, values, mask, gamma, lam)     generalised advantage estimation over [S, L]
    clipped_policy_loss / clipped_value_loss   PPO's clipped surrogate and clipped value regression
    exact_match_reward(texts, answers)         1.0 when the answer (or the last <answer>...</answer>) matches
    GRPOLoss (loss_type grpo | dapo | dr_grpo), PPOLoss   the loss hooks of the two fronts

Normalisation with the engine's summed losses: each hook returns a sum and its number of targets; the
engine divides by the global count of the step. GRPOLoss counts sequences for `grpo` (each sequence's
mean token loss, averaged over sequences) and `dr_grpo` (token sums over sequences x --max_new_tokens),
tokens for `dapo` (every token of the global batch weighs the same), so accumulation and ranks give
exactly the one-big-batch value. Metrics carry their own denominators (`LossOutput.counts`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from parallel.names import GRPO_LOSS_TYPES, KL_ESTIMATORS, SCALE_REWARDS
from trainer.loss import LossFn, LossOutput, batch_mask, token_mask

STD_EPS = 1e-4  # added to a reward standard deviation before dividing (a group with equal rewards gives 0)


# --- KL and advantages ----------------------------------------------------------------------------------

def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi.

    k1 = logp - ref (unbiased, can be negative), k2 = (logp - ref)^2 / 2, k3 = exp(ref - logp) -
    (ref - logp) - 1 (unbiased, never negative, low variance).
    """
    d = ref_logp - logp
    if kind == "k1":
        return -d
    if kind == "k2":
        return 0.5 * d * d
    if kind == "k3":
        return torch.exp(d) - d - 1.0
    raise ValueError(f"KL estimator must be one of {KL_ESTIMATORS}, got {kind!r}")


def group_advantages(rewards: torch.Tensor, scale: str = "group") -> torch.Tensor:
    """`[P, G]` rewards of G answers per prompt -> advantages: minus the group mean, divided by the group's
    standard deviation (`group`), the whole batch's (`batch`) or nothing (`none`, Dr. GRPO)."""
    if scale not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {SCALE_REWARDS}, got {scale!r}")
    adv = rewards - rewards.mean(dim=1, keepdim=True)
    if scale == "none" or rewards.numel() < 2:
        return adv
    std = rewards.std(dim=1, keepdim=True) if scale == "group" else rewards.std()
    return adv / (torch.nan_to_num(std, nan=0.0) + STD_EPS)


def whiten(x: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over all elements (the mean is kept when `shift_mean` is False)."""
    if x.numel() < 2:
        return x - x.mean() if shift_mean else x
    mean, std = x.mean(), x.std()
    out = (x - mean) / (std + 1e-8)
    return out if shift_mean else out + mean


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over `[S, L]` sequences whose valid steps are a prefix (`mask`).

    delta_t = r_t + gamma V_{t+1} - V_t (V past the end is 0); A_t = delta_t + gamma lam A_{t+1}.
    Returns (advantages, returns = advantages + values), 0 outside the mask.
    """
    S, L = rewards.shape
    m = mask.to(rewards.dtype)
    adv = torch.zeros_like(rewards)
    last = rewards.new_zeros(S)
    for t in reversed(range(L)):
        next_v = values[:, t + 1] * m[:, t + 1] if t + 1 < L else rewards.new_zeros(S)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = (delta + gamma * lam * last) * m[:, t]
        adv[:, t] = last
    return adv, (adv + values) * m


class TargetSegments:
    """The targets of a batch grouped per sequence: segment s = one (row, branch), its targets in time order.

    `pack(x [N]) -> [S, L]` (zeros past each length), `unpack(y [S, L]) -> [N]`; `lengths` [S],
    `rows` / `branches` [S]. Segments are sorted by (row, branch id), so with one sequence per branch
    they come in the order the samples list their branches.
    """

    def __init__(self, labels: torch.Tensor, branch_ids: torch.Tensor):
        sel = labels != -100
        rows, cols = sel.nonzero(as_tuple=True)
        nb = int(branch_ids.max()) + 1 if branch_ids.numel() else 1
        key = rows * nb + branch_ids[rows, cols]
        self.order = torch.argsort(key, stable=True)
        uniq, self.lengths = torch.unique_consecutive(key[self.order], return_counts=True)
        self.rows, self.branches = uniq // nb, uniq % nb
        S = len(uniq)
        self.seg = torch.repeat_interleave(torch.arange(S, device=labels.device), self.lengths)
        self.pos = torch.arange(len(self.order), device=labels.device) - (torch.cumsum(self.lengths, 0)
                                                                          - self.lengths)[self.seg]
        self.shape = (S, int(self.lengths.max()) if S else 0)

    @property
    def mask(self) -> torch.Tensor:
        return torch.arange(self.shape[1], device=self.lengths.device)[None, :] < self.lengths[:, None]

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(self.shape)
        out[self.seg, self.pos] = x[self.order]
        return out

    def unpack(self, y: torch.Tensor) -> torch.Tensor:
        out = y.new_empty(len(self.order))
        out[self.order] = y[self.seg, self.pos]
        return out

    def per_target(self, per_segment: torch.Tensor) -> torch.Tensor:
        """A value per segment `[S]` -> that value at each of its targets `[N]`."""
        out = per_segment.new_empty(len(self.order))
        out[self.order] = per_segment[self.seg]
        return out

    def sums(self, x: torch.Tensor) -> torch.Tensor:
        """Per-segment sums `[S]` of a per-target tensor `[N]`."""
        return x.new_zeros(self.shape[0]).index_add_(0, self.seg, x[self.order])


# --- clipped objectives ---------------------------------------------------------------------------------

def clipped_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, eps_low: float,
                        eps_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate per token: -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A), r = exp(logp - old).

    -> (loss `[N]`, bool `[N]` where the clipped term is the smaller one, i.e. the token gives no gradient).
    """
    ratio = torch.exp(logp - old_logp)
    unclipped, clipped = ratio * adv, torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv
    return -torch.minimum(unclipped, clipped), clipped < unclipped


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 max((V - R)^2, (V_clipped - R)^2) per token, V_clipped within `clip` of the rollout's value.

    -> (loss `[N]`, bool `[N]` where the clipped error is the larger one)."""
    v_clip = old_values + torch.clamp(values - old_values, -clip, clip)
    a, b = (values - returns) ** 2, (v_clip - returns) ** 2
    return 0.5 * torch.maximum(a, b), b > a


# --- rewards --------------------------------------------------------------------------------------------

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def extract_answer(text: str) -> str:
    """The content of the last `<answer>...</answer>` when there is one, else the whole text; stripped."""
    found = _ANSWER_TAG.findall(text)
    return (found[-1] if found else text).strip()


def exact_match_reward(texts: Sequence[str], answers: Sequence[str]) -> torch.Tensor:
    """1.0 where `extract_answer(text)` equals the reference answer (both stripped), else 0.0."""
    return torch.tensor([float(extract_answer(t) == str(a).strip()) for t, a in zip(texts, answers)])


# --- the loss hooks -------------------------------------------------------------------------------------

def policy_forward(model, batch: dict, mask_mode: str):
    """The `RLPolicy` forward on a rollout batch (through DDP when wrapped) -> `PolicyOutput`."""
    return model(batch["input_ids"], batch_mask(model, batch, mask_mode), batch["position_ids"], token_mask(batch),
                 batch["labels"])


def _moe_aux(model, aux):
    cfg = getattr(getattr(model, "module", model), "config", None)
    return aux if getattr(cfg, "use_moe", False) else None


def _rollout_metrics(batch: dict, n_seq: int, n_tok: int) -> tuple[dict, dict]:
    """What the rollout measured (sums) and their denominators: per sequence, per token, per group."""
    metrics = {"reward": batch["reward_sum"], "completion_length": float(n_tok),
               "clipped_completions": batch["num_unfinished"]}
    counts = {"reward": n_seq, "completion_length": n_seq, "clipped_completions": n_seq}
    if "group_std_sum" in batch:
        metrics.update(reward_std=batch["group_std_sum"], frac_reward_zero_std=batch["zero_std_groups"])
        counts.update(reward_std=batch["num_groups"], frac_reward_zero_std=batch["num_groups"])
    return metrics, counts


class GRPOLoss(LossFn):
    """GRPO's clipped objective on group-normalised advantages, plus beta x k3 KL to the reference."""

    def __init__(self, mask_mode: str, loss_type: str = "grpo", beta: float = 0.0, epsilon: float = 0.2,
                 epsilon_high: float | None = None):
        if loss_type not in GRPO_LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {GRPO_LOSS_TYPES}, got {loss_type!r}")
        self.mask_mode, self.loss_type, self.beta = mask_mode, loss_type, beta
        self.eps_low, self.eps_high = epsilon, epsilon if epsilon_high is None else epsilon_high

    def count_targets(self, batch: dict) -> int:
        return int(batch["num_label_tokens"] if self.loss_type == "dapo" else batch["num_sequences"])

    def __call__(self, model, batch: dict) -> LossOutput:
        out = policy_forward(model, batch, self.mask_mode)
        old = batch["old_logps"] if "old_logps" in batch else out.logps.detach()
        per_token, clipped = clipped_policy_loss(out.logps, old, batch["advantages"], self.eps_low, self.eps_high)
        n_tok, n_seq = out.logps.numel(), int(batch["num_sequences"])
        metrics, counts = _rollout_metrics(batch, n_seq, n_tok)
        if self.beta:
            kl = kl_estimate(out.logps, batch["ref_logps"], "k3")
            per_token = per_token + self.beta * kl
            metrics["kl"], counts["kl"] = float(kl.detach().sum()), n_tok
        loss = (per_token * batch["target_weights"]).sum()
        metrics.update(clip_ratio=float(clipped.sum()), entropy=float(out.entropy.detach().sum()))
        counts.update(clip_ratio=n_tok, entropy=n_tok)
        return LossOutput(loss, self.count_targets(batch), metrics, _moe_aux(model, out.aux_loss), counts)


class PPOLoss(LossFn):
    """PPO: the clipped surrogate on GAE advantages plus vf_coef x the clipped value loss, per generated token."""

    def __init__(self, mask_mode: str, clip: float = 0.2, value_clip: float = 0.2, vf_coef: float = 0.5):
        self.mask_mode, self.clip, self.value_clip, self.vf_coef = mask_mode, clip, value_clip, vf_coef

    def __call__(self, model, batch: dict) -> LossOutput:
        out = policy_forward(model, batch, self.mask_mode)
        old = batch["old_logps"]
        pg, clipped = clipped_policy_loss(out.logps, old, batch["advantages"], self.clip, self.clip)
        vf, v_clipped = clipped_value_loss(out.values, batch["old_values"], batch["returns"], self.value_clip)
        n_tok, n_seq = out.logps.numel(), int(batch["num_sequences"])
        metrics, counts = _rollout_metrics(batch, n_seq, n_tok)
        log_ratio = (out.logps - old).detach()
        metrics.update(policy_loss=float(pg.detach().sum()), value_loss=float(vf.detach().sum()),
                       clip_ratio=float(clipped.sum()), value_clip_ratio=float(v_clipped.sum()),
                       approx_kl=float((0.5 * log_ratio ** 2).sum()), entropy=float(out.entropy.detach().sum()),
                       kl=batch["kl_sum"], non_score_reward=batch["non_score_reward_sum"])
        counts.update(policy_loss=n_tok, value_loss=n_tok, clip_ratio=n_tok, value_clip_ratio=n_tok,
                      approx_kl=n_tok, entropy=n_tok, kl=n_tok, non_score_reward=n_seq)
        return LossOutput((pg + self.vf_coef * vf).sum(), n_tok, metrics, _moe_aux(model, out.aux_loss), counts)
