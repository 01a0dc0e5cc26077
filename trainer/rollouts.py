"""Rollouts of the RL stages: the prompts of a data batch -> answers generated with the current weights
by the parallel engine -> the training batch the loss hooks of trainer/rl.py read.

GRPO (`GRPORollout`): each prompt becomes ONE sample of G isolated branches at branch coordinate 0
(prefix sharing, `ParallelGenerator.shared_prompt_sample`): the prompt is prefilled once and every
branch decodes exactly as that prompt alone would. Training uses the same layout
(`{"main": prompt[:-1], "branches": [prompt[-1:] + answer_k]}`, coordinates 0), so the prompt is
also computed once per group in every forward, and each branch's log-probabilities are those of
its own plain sequence.

PPO (`PPORollout`): each sample of the data batch is decoded as it is, its prompts being isolated
branches at the model's branch coordinates, then trained in that layout; the critic's values, the
old and reference log-probabilities are taken on the same batch.

Randomness: branch j of the rollout of micro-batch m at step s samples from a stream seeded
`seed(--seed, rank, s, m) + j` (see `RolloutContext.seed`), so a rollout never depends on what else is
in the batch, and a resumed run generates the same answers. A validation rollout (`ctx.validation`)
decodes greedily, one answer per prompt. Answers end with the EOS token when the model produced it
(it is trained on, so the policy learns to stop), else at `max_new_tokens` ("clipped").

Rewards: a callable `reward(ctx, completions) -> [N]` tensor; `exact_match` (the record's `answer`)
and `RewardModelScore` (the frozen reward model companion, scoring prompt + answer as one plain
sequence at its last token) are the built-in ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.parallel_generation import ParallelGenerator
from parallel.sampling import SamplingParams
from parallel_data.parallel_collator import ParallelCollator
from parallel_data.preference import shared_prompt_positions
from trainer.engine.stage import Rollout, RolloutContext, samples_from_batch
from trainer.logprobs import target_logits, token_logprobs
from trainer.loss import batch_mask, to_device, token_mask
from trainer.rl import TargetSegments, exact_match_reward, gae, group_advantages, kl_estimate, whiten

ROLLOUT_MASK = "isolated"  # every rollout and training forward of the RL stages


@dataclass
class Prompt:
    ids: list[int]  # the chat-rendered prompt, generation prompt included
    meta: dict  # {"answer", "source"} from parallel_data.prompt_dataset


@dataclass
class Completion:
    prompt: Prompt
    token_ids: list[int]  # generated tokens, the EOS included when the answer ended on it
    text: str  # decoded, special tokens skipped
    finished: bool  # ended on EOS (False: cut at max_new_tokens)


def batch_prompts(batch: dict) -> list[list[Prompt]]:
    """The prompts of a data batch, per sample (one per branch), with each branch unit's `meta`."""
    samples = samples_from_batch(batch)
    metas = batch.get("branch_meta") or [[None] * len(s["branches"]) for s in samples]
    return [[Prompt(ids, m or {}) for ids, m in zip(s["branches"], mm)] for s, mm in zip(samples, metas)]


def generate(gen: ParallelGenerator, samples: list[dict], prompts: list[list[Prompt]], *, sampling: SamplingParams,
             max_new_tokens: int, seed: int, eos_id: int) -> list[list[Completion]]:
    """Decode `samples` with `gen` -> per sample, one Completion per branch (`prompts` gives each its prompt)."""
    results = gen.generate(samples, sampling, max_new_tokens=max_new_tokens, seed=seed, eos_token_ids=[eos_id])
    return [[Completion(p, b.token_ids + ([eos_id] if b.finish_reason == "eos" else []), b.text,
                        b.finish_reason == "eos") for p, b in zip(ps, r.branches)] for ps, r in zip(prompts, results)]


def collate(samples: list[dict], tokenizer, stride: int, device: torch.device) -> dict:
    """Training layout of rollout samples on `device`; stride 0 puts every branch at coordinate 0 with the flat
    index equal to time, so each branch has the positions of its own plain sequence."""
    batch = ParallelCollator(tokenizer, branch_stride=max(stride, 1)).collate(samples)
    if stride == 0:
        batch = shared_prompt_positions(batch)
    batch.pop("branch_meta", None)
    return to_device(batch, device)


def logprobs(model, batch: dict) -> torch.Tensor:
    """log p(target) `[N]` of a frozen causal LM (the reference, the rollout's policy) on a rollout batch."""
    return token_logprobs(*target_logits(model, batch, ROLLOUT_MASK)[:2])


def forward_args(model, batch: dict) -> tuple:
    """The positional inputs of `RLPolicy` / `ValueModel` for a rollout batch."""
    return batch["input_ids"], batch_mask(model, batch, ROLLOUT_MASK), batch["position_ids"], token_mask(batch)


def exact_match(ctx: RolloutContext, completions: list[Completion]) -> torch.Tensor:
    """1.0 for an answer equal to the record's `answer` (or to the last <answer>...</answer> in it)."""
    return exact_match_reward([c.text for c in completions], [c.prompt.meta.get("answer") for c in completions])


class RewardModelScore:
    """The frozen reward model (companion "reward") scores prompt + answer as one plain sequence."""

    def __call__(self, ctx: RolloutContext, completions: list[Completion]) -> torch.Tensor:
        model = ctx.companions["reward"]
        batch = collate([{"branches": [c.prompt.ids + c.token_ids]} for c in completions], ctx.tokenizer, 0,
                        ctx.device)
        mask = token_mask(batch)
        last = torch.zeros_like(mask)
        last[torch.arange(mask.shape[0], device=mask.device), mask.sum(1) - 1] = True
        with ctx.autocast():
            scores, _ = model(*forward_args(model, batch), last)
        return scores.float().cpu()


def _rollout_stats(batch: dict, completions: list[Completion], scores: torch.Tensor) -> None:
    batch.update(num_sequences=len(completions), reward_sum=float(scores.sum()),
                 num_unfinished=float(sum(not c.finished for c in completions)))


class GRPORollout(Rollout):
    """G answers per prompt as one shared-prompt sample; group-normalised advantages (module docstring)."""

    def __init__(self, *, num_generations: int, sampling: SamplingParams, max_new_tokens: int, reward,
                 scale_rewards: str, loss_type: str, beta: float, num_iterations: int, eos_id: int):
        self.G, self.sampling, self.max_new, self.reward = num_generations, sampling, max_new_tokens, reward
        self.scale, self.loss_type, self.beta, self.updates, self.eos_id = (scale_rewards, loss_type, beta,
                                                                            num_iterations, eos_id)

    def __call__(self, ctx: RolloutContext, batch: dict) -> dict:
        prompts = [p for ps in batch_prompts(batch) for p in ps]
        G = 1 if ctx.validation else self.G
        actor = ctx.policy.actor
        gen = ParallelGenerator(actor, ctx.tokenizer, mask_mode=ROLLOUT_MASK, branch_stride=0)
        samples = [gen.shared_prompt_sample(p.ids, G) for p in prompts]
        sampling = SamplingParams() if ctx.validation else self.sampling
        groups = generate(gen, samples, [[p] * G for p in prompts], sampling=sampling, max_new_tokens=self.max_new,
                          seed=ctx.seed, eos_id=self.eos_id)
        flat = [c for g in groups for c in g]
        rewards = self.reward(ctx, flat).float().view(len(prompts), G)
        adv = torch.zeros_like(rewards) if ctx.validation else group_advantages(rewards, self.scale)
        train = collate([{"main": p.ids[:-1], "branches": [{"input_ids": p.ids[-1:] + c.token_ids, "answer_offset": 1}
                                                          for c in g]} for p, g in zip(prompts, groups)],
                        ctx.tokenizer, 0, ctx.device)
        seg = TargetSegments(train["labels"], train["branch_ids"])  # one segment per answer, in `flat` order
        train["advantages"] = seg.per_target(adv.flatten().to(ctx.device))
        per_seq = {"grpo": 1.0 / seg.lengths.float(), "dapo": torch.ones(len(flat), device=ctx.device),
                   "dr_grpo": torch.full((len(flat),), 1.0 / self.max_new, device=ctx.device)}[self.loss_type]
        train["target_weights"] = seg.per_target(per_seq)
        with ctx.autocast():
            if self.updates > 1 and not ctx.validation:  # one update: the old log-probs are the current ones
                train["old_logps"] = logprobs(actor, train)
            if self.beta:
                train["ref_logps"] = logprobs(ctx.companions["reference"], train)
        _rollout_stats(train, flat, rewards)
        std = rewards.std(dim=1) if G > 1 else torch.zeros(len(prompts))
        train.update(group_std_sum=float(std.sum()), zero_std_groups=float((std == 0).sum()),
                     num_groups=len(prompts))
        return train


class PPORollout(Rollout):
    """Sampled answers, rewards with a per-token KL penalty, GAE on the critic's values (module docstring)."""

    def __init__(self, *, sampling: SamplingParams, max_new_tokens: int, reward, kl_coef: float, kl_estimator: str,
                 gamma: float, lam: float, ppo_epochs: int, eos_id: int):
        self.sampling, self.max_new, self.reward = sampling, max_new_tokens, reward
        self.kl_coef, self.kl_estimator, self.gamma, self.lam = kl_coef, kl_estimator, gamma, lam
        self.updates, self.eos_id = ppo_epochs, eos_id

    def __call__(self, ctx: RolloutContext, batch: dict) -> dict:
        prompts = batch_prompts(batch)
        policy = ctx.policy
        sampling = SamplingParams() if ctx.validation else self.sampling
        gen = ParallelGenerator(policy.actor, ctx.tokenizer, mask_mode=ROLLOUT_MASK, branch_stride=ctx.branch_stride)
        groups = generate(gen, [{"branches": [p.ids for p in ps]} for ps in prompts], prompts, sampling=sampling,
                          max_new_tokens=self.max_new, seed=ctx.seed, eos_id=self.eos_id)
        flat = [c for g in groups for c in g]
        scores = self.reward(ctx, flat).float().to(ctx.device)
        train = collate([{"branches": [{"input_ids": c.prompt.ids + c.token_ids, "answer_offset": len(c.prompt.ids)}
                                       for c in g]} for g in groups], ctx.tokenizer, ctx.branch_stride, ctx.device)
        with ctx.autocast():
            out = policy(*forward_args(policy, train), train["labels"])
            ref = ctx.companions.get("reference")
            ref_logps = logprobs(ref, train) if ref is not None else out.logps
        kl = kl_estimate(out.logps, ref_logps, self.kl_estimator)
        seg = TargetSegments(train["labels"], train["branch_ids"])  # one segment per answer, in `flat` order
        rewards = seg.pack(-self.kl_coef * kl)
        rewards[torch.arange(len(flat), device=ctx.device), seg.lengths - 1] += scores
        adv, returns = gae(rewards, seg.pack(out.values), seg.mask, self.gamma, self.lam)
        train.update(old_logps=out.logps, old_values=out.values, advantages=whiten(seg.unpack(adv)),
                     returns=seg.unpack(returns), kl_sum=float(kl.sum()),
                     non_score_reward_sum=float((-self.kl_coef * kl).sum()))
        _rollout_stats(train, flat, scores)
        return train
