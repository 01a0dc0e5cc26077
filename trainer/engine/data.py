"""The data component: dataset -> per-rank batch stream -> DataLoader, its position, and the step count.

Each DataLoader worker of each rank is one stream (parallel_data.stream); every batch carries its
stream's state after that batch, and `commit` records it when the batch is trained on, so a save
holds exactly what has been consumed. `count_steps` is the one place the number of micro-batches
per rank is computed (the learning-rate schedule's horizon).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict

from torch.utils.data import DataLoader

from parallel_data.io import DataError
from parallel_data.parallel_dataset import UnitStats
from parallel_data.stream import (
    GroupingConfig,
    ParallelBatchStream,
    count_micro_batches,
    reshard_states,
)
from trainer.distributed import DistInfo
from trainer.engine.interrupt import ignore_stop_signals
from trainer.engine.resume import data_identity

log = logging.getLogger("parallelmind")


def grouping_config(args) -> GroupingConfig:
    return GroupingConfig(batch_size=args.batch_size, branches_per_sample=args.branches_per_sample,
                          min_branches=args.min_branches_per_sample, max_branches=args.max_branches_per_sample,
                          batch_by_samples=args.batch_by_samples)


def collator_kwargs(args, tokenizer, branch_stride: int, *, training: bool) -> dict:
    """Training batches get the random augmentations (time offsets, branch slots); validation none."""
    return dict(tokenizer=tokenizer, branch_stride=branch_stride, align_to=args.align_to,
                random_time_offset=args.random_time_offset and training, max_total_tokens=args.max_total_tokens,
                random_branch_slots=args.random_branch_slots if training else 0)


def data_name(args) -> str:
    return args.hf_dataset or args.data_path


class DataComponent:
    def __init__(self, args, dataset, tokenizer, branch_stride: int, dist: DistInfo, saved: dict | None):
        self.args, self.dataset, self.dist = args, dataset, dist
        self.tokenizer, self.branch_stride = tokenizer, branch_stride
        self.grouping = grouping_config(args)
        self.num_streams = dist.world_size * max(1, args.num_workers)
        states = None
        if saved is not None:
            states = saved["data_states"]
            if saved["num_streams"] != self.num_streams:
                states = reshard_states(states, saved["num_streams"], self.num_streams, dataset.source)
        self.stream_states: dict[int, dict] = dict(states or {})
        stream = ParallelBatchStream(dataset, self.grouping, collator_kwargs(args, tokenizer, branch_stride,
                                                                             training=True),
                                     rank=dist.rank, world_size=dist.world_size, epochs=args.epochs, seed=args.seed,
                                     resume_states=states)
        self.loader = DataLoader(stream, batch_size=None, num_workers=args.num_workers, persistent_workers=False,
                                 worker_init_fn=ignore_stop_signals if args.num_workers else None)
        self._batches = None
        self.epoch = 0
        self.truncated_tokens = 0  # cut by --max_total_tokens in the batches this run fetched

    def identity(self) -> dict:
        return data_identity(self.dataset.source)

    def count_steps(self) -> int:
        """Optimizer steps one pass over the data gives on every rank (the shortest rank's), or --max_steps."""
        a, d = self.args, self.dist
        per_rank = [count_micro_batches(self.dataset, self.grouping, rank=r, world_size=d.world_size,
                                        num_workers=a.num_workers, epochs=a.epochs, seed=a.seed)
                    for r in range(d.world_size)]
        if any(m == 0 for m in per_rank if m is not None) and any(m for m in per_rank if m):
            empty = [r for r, m in enumerate(per_rank) if m == 0]
            raise SystemExit(f"ranks {empty} would get no data: the data is too small to give each of the "
                             f"{self.num_streams} streams (ranks x DataLoader workers) a share; use fewer ranks or "
                             "workers, or more data")
        if a.max_steps:
            return a.max_steps
        if any(m is None for m in per_rank):
            raise SystemExit("the number of training records is unknown (a streamed Hub dataset): pass --max-samples "
                             "or --max_steps so the learning-rate schedule has a horizon")
        total = min(math.ceil(m / a.accumulation_steps) for m in per_rank)
        if total < 1:
            raise DataError("no training data: the data gives no batch (every record is held out by --val_samples, "
                            "or the file has no records)", path=data_name(a))
        return total

    def next_micro_batches(self, n: int) -> list[dict]:
        """Up to `n` batches (fewer at the end of the data)."""
        if self._batches is None:
            self._batches = iter(self.loader)
        out = []
        for _ in range(n):
            try:
                out.append(next(self._batches))
            except StopIteration:
                break
        self.truncated_tokens += sum(b["truncated_tokens"] for b in out)
        return out

    def commit(self, batches: list[dict]) -> None:
        """These batches are trained on: the data position moves past them."""
        for b in batches:
            self.stream_states[b["stream"]] = b["state"]
        if batches:
            self.epoch = batches[-1]["epoch"]

    def state_dict(self) -> dict[int, dict]:
        return dict(self.stream_states)

    def unit_stats(self) -> UnitStats:
        """Counts of this rank's streams (texts split at max_seq_len, branches cut, ...)."""
        stats = UnitStats()
        for st in self.stream_states.values():
            stats.add(UnitStats(**st["stats"]))
        return stats

    @staticmethod
    def stat_fields() -> list[str]:
        return list(asdict(UnitStats()))
