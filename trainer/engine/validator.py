"""The validator: target-weighted loss on the held-out records, by steps, samples or target tokens.

Held-out records (`--val_samples`, the same on every rank) are grouped globally (sample k goes to
rank k mod W), so the loss is the same for any number of ranks. Their units are tokenised once and
kept when there are at most 50,000 of them. `check_has_targets` runs before the first step: a
validation set without any target token is an error, never a nan in the logs.
"""

from __future__ import annotations

from parallel_data.io import DataError
from parallel_data.parallel_collator import ParallelCollator
from parallel_data.stream import eval_batches
from trainer.args import eval_branch_setting
from trainer.distributed import DistInfo, all_reduce
from trainer.engine.data import collator_kwargs, data_name
from trainer.engine.state import TrainState
from trainer.loss import LossFn, evaluate_loss

CACHE_LIMIT = 50_000


def _next_multiple(value: int, interval: int) -> float:
    if not interval:
        return float("inf")
    return (value // interval + 1) * interval


class Validator:
    def __init__(self, args, dataset, tokenizer, branch_stride: int, dist: DistInfo, amp, loss_fn: LossFn,
                 rollout: bool = False, *, sharded: bool = False):
        """rollout: the held-out batches are prompts a rollout turns into the loss hook's batches (RL stages).
        sharded: every rank must run the same number of forwards (FSDP)."""
        self.args, self.dataset, self.dist, self.amp, self.loss_fn = args, dataset, dist, amp, loss_fn
        self.rollout = rollout
        self.sharded = sharded
        self.collator_kwargs = collator_kwargs(args, tokenizer, branch_stride, training=False)
        self.settings = eval_branch_setting(args)  # --val_*_branches_per_sample, else the training ones
        self._cache: list | None = None
        self._next = {"samples": float("inf"), "tokens": float("inf")}

    def _units(self):
        if self._cache is not None:
            return self._cache
        units = self.dataset.val_units()
        if self.args.val_samples <= CACHE_LIMIT:
            self._cache = units = list(units)
        return units

    def _batches(self):
        a = self.args
        coll = ParallelCollator(**self.collator_kwargs, seed=a.seed)
        per_batch = max(1, a.batch_size if a.batch_by_samples else a.batch_size // max(1, self.settings.get("branches", 1)))
        return eval_batches(iter(self._units()), rank=self.dist.rank, world_size=self.dist.world_size,
                            batch_size=per_batch, collator=coll, seed=a.seed, **self.settings)

    def check_has_targets(self) -> None:
        """Collate the validation set once (no forward): it must hold at least one target token."""
        batches, _ = self._batches()
        count = (lambda b: b["num_texts"]) if self.rollout else self.loss_fn.count_targets  # prompts, or targets
        (targets,) = all_reduce([sum(count(b) for b in batches)])
        if not targets:
            raise DataError(f"the validation set (--val_samples {self.args.val_samples} held-out records) has no "
                            "target tokens: every held-out record is empty or has no text after its answer_offset",
                            path=data_name(self.args))

    def schedule_from(self, state: TrainState) -> None:
        """The next sample / target-token counts at which validation is due."""
        a = self.args
        self._next = {"samples": _next_multiple(state.samples_seen, a.val_interval_samples),
                      "tokens": _next_multiple(state.targets_seen, a.val_interval_tokens)}

    def due(self, state: TrainState) -> bool:
        a = self.args
        return bool((a.val_interval and state.step % a.val_interval == 0)
                    or (a.val_interval_samples and state.samples_seen >= self._next["samples"])
                    or (a.val_interval_tokens and state.targets_seen >= self._next["tokens"]))

    def run(self, model, prepare=None) -> dict:
        """{"loss", "ppl", "tokens", "batches", "metrics", "samples", "texts", "leftover_texts"}, the same on
        every rank. `prepare(k, batch)`: the rollout of held-out batch k (see `evaluate_loss`)."""
        batches, info = self._batches()
        res = evaluate_loss(model, batches, self.dist.device, mask_mode=self.args.mask_mode, amp_dtype=self.amp,
                            loss_fn=self.loss_fn, prepare=prepare, same_count=self.sharded)
        res.update({k: info[k] for k in ("samples", "texts", "leftover_texts")})
        return res
