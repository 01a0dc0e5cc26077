"""Branch grouping and batch collation.

`BranchGrouper` turns a stream of units into batches of samples: fixed `branches_per_sample`, or a
seeded random count in [min, max] per sample (dynamic mode); a batch holds `batch_size` samples
(`batch_by_samples`) or at most `batch_size` texts. Every text is used exactly once: leftovers wait in
the grouper's buffer for the next batch (its state is part of the resume state) and the end of the
data flushes them as a last, possibly smaller, sample. Grouped records (``{"main", "branches"}``)
are samples already and pass through whole.

`ParallelCollator.collate(samples)` lays a batch out with `build_flat_linear_layout` (vectorised)
and returns tensors: input_ids, token_mask `[B, T]` (bool, True = real token), labels (next token of
the same branch), pos2d `[B, T, 2]`, time_ids, branch_ids, position_ids `[B, T, 3]`, plus counts,
`branch_meta` (each branch unit's optional `meta`, e.g. an RL prompt's reference answer) and
label_weights `[B, T]` (float) when units carry a per-token `loss_weight`.

`ParallelPretrainCollator` / `ParallelSFTCollator` have the seed's call style (a list of records in,
a batch out) on top of the same two pieces.
"""

from __future__ import annotations

import random
from collections import deque

import torch

from parallel.layout import build_flat_linear_layout
from parallel.seed_compat import check_interleave_branches


def is_sample(unit: dict) -> bool:
    return "branches" in unit


def unit_text_count(unit: dict) -> int:
    return len(unit["branches"]) if is_sample(unit) else 1


class BranchGrouper:
    """Units -> batches of samples, with no text lost or used twice (see the module docstring)."""

    def __init__(self, *, batch_size: int, branches_per_sample: int = 8, min_branches: int = 1,
                 max_branches: int | None = None, batch_by_samples: bool = False, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_branches is not None:
            if not 1 <= min_branches <= max_branches:
                raise ValueError(f"need 1 <= min_branches_per_sample ({min_branches}) <= max_branches_per_sample "
                                 f"({max_branches})")
        elif branches_per_sample < 1:
            raise ValueError(f"branches_per_sample must be >= 1, got {branches_per_sample}")
        self.batch_size = batch_size
        self.fixed = branches_per_sample
        self.min_b, self.max_b = min_branches, max_branches
        self.batch_by_samples = batch_by_samples
        self.rng = random.Random(seed)
        self.buffer: list[dict] = []
        self.current: list[dict] = []
        self.ready: deque[list[dict]] = deque()
        self.next_b = self._draw()

    def _draw(self) -> int:
        return self.fixed if self.max_b is None else self.rng.randint(self.min_b, self.max_b)

    def _texts(self, samples) -> int:
        return sum(len(s["branches"]) for s in samples)

    def _add_sample(self, sample: dict) -> None:
        if self.batch_by_samples:
            self.current.append(sample)
            if len(self.current) >= self.batch_size:
                self.ready.append(self.current)
                self.current = []
            return
        if self.current and self._texts(self.current) + len(sample["branches"]) > self.batch_size:
            self.ready.append(self.current)
            self.current = []
        self.current.append(sample)
        if self._texts(self.current) >= self.batch_size:
            self.ready.append(self.current)
            self.current = []

    def push(self, unit: dict) -> None:
        if is_sample(unit):
            self._add_sample(unit)
            return
        self.buffer.append(unit)
        if len(self.buffer) >= self.next_b:
            self._add_sample({"branches": self.buffer})
            self.buffer = []
            self.next_b = self._draw()

    def flush(self) -> None:
        """End of data: leftover texts become a last sample, a partial batch becomes a last batch."""
        if self.buffer:
            self._add_sample({"branches": self.buffer})
            self.buffer = []
            self.next_b = self._draw()
        if self.current:
            self.ready.append(self.current)
            self.current = []

    def pop(self) -> list[dict] | None:
        return self.ready.popleft() if self.ready else None

    def state_dict(self) -> dict:
        return {"buffer": [dict(u) for u in self.buffer], "current": list(self.current), "ready": list(self.ready),
                "rng": self.rng.getstate(), "next_b": self.next_b}

    def load_state_dict(self, st: dict) -> None:
        self.buffer = list(st["buffer"])
        self.current = list(st["current"])
        self.ready = deque(st["ready"])
        self.rng.setstate(_as_rng_state(st["rng"]))
        self.next_b = st["next_b"]


def _as_rng_state(st):
    """random.Random state survives torch.save as nested lists/tuples; setstate needs tuples."""
    version, internal, gauss = st
    return (version, tuple(internal), gauss)


def branch_meta(samples: list[dict]) -> list[list]:
    """`[sample][branch]` the `meta` of each branch unit (None where it has none): what a record carries
    besides its text, e.g. the reference answer of an RL prompt, passed through to the batch."""
    return [[b.get("meta") if isinstance(b, dict) else None for b in s["branches"]] for s in samples]


class ParallelCollator:
    """Samples -> a batch of tensors via the vectorised layout builder (and `branch_meta`)."""

    def __init__(self, tokenizer=None, *, branch_stride: int = 128, align_to: str = "left",
                 random_time_offset: bool = False, max_total_tokens: int = 0, pad_to: int | None = None,
                 seed: int = 0, pad_id: int | None = None, random_branch_slots: int = 0):
        """random_branch_slots K > 0: each sample's branches take a seeded random, sorted subset of the
        coordinate slots 0..K-1 (1..K with a main) instead of 0..n-1, so a model trained on a few branches
        per sample has seen every coordinate up to K branches."""
        self.tokenizer = tokenizer
        self.random_branch_slots = random_branch_slots
        self.branch_stride = branch_stride
        self.align_to = align_to
        self.random_time_offset = random_time_offset
        self.max_total_tokens = max_total_tokens or None
        self.pad_to = pad_to
        self.generator = torch.Generator().manual_seed(seed)
        self.pad_id = pad_id

    def _with_random_slots(self, samples: list[dict]) -> list[dict]:
        K, out = self.random_branch_slots, []
        for s in samples:
            n = len(s["branches"])
            if n > K:
                raise ValueError(f"a sample has {n} branches but --random_branch_slots is {K}; it must be at least "
                                 "the largest number of branches per sample")
            first = 1 if s.get("main") else 0
            slots = (torch.randperm(K, generator=self.generator)[:n].sort().values + first).tolist()
            branches = [{**(b if isinstance(b, dict) else {"input_ids": b}), "branch_slot": k}
                        for b, k in zip(s["branches"], slots)]
            out.append({**s, "branches": branches})
        return out

    def collate(self, samples: list[dict]) -> dict:
        if self.random_branch_slots:
            samples = self._with_random_slots(samples)
        layout = build_flat_linear_layout(self.tokenizer, samples, None, pad_to=self.pad_to,
                                          branch_stride=self.branch_stride, align_to=self.align_to,
                                          random_time_offset=self.random_time_offset,
                                          max_tokens=self.max_total_tokens, generator=self.generator)
        if self.pad_id is not None and self.pad_id != layout.pad_id:
            layout.input_ids[~layout.token_mask] = self.pad_id
        batch = {
            "input_ids": layout.input_ids, "token_mask": layout.token_mask, "labels": layout.labels,
            "pos2d": layout.pos2d, "time_ids": layout.time_ids, "branch_ids": layout.branch_ids,
            "position_ids": layout.position_ids(), "branch_counts": layout.branch_counts,
            "num_label_tokens": int((layout.labels != -100).sum()), "num_tokens": int(layout.token_mask.sum()),
            "truncated_tokens": layout.num_truncated, "num_samples": len(samples),
            "num_texts": int(layout.branch_counts.sum()), "branch_meta": branch_meta(samples),
        }
        if layout.label_weights is not None:  # units with a per-token loss_weight
            batch["label_weights"] = layout.label_weights
        return batch

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, st: dict) -> None:
        self.generator.set_state(st["generator"])


def _as_unit(tokenizer, item, i: int) -> dict:
    if isinstance(item, str):
        item = {"text": item}
    if not isinstance(item, dict):
        raise ValueError(f"item {i}: expected a dict or a string, got {type(item).__name__}")
    if is_sample(item):
        return item
    if "input_ids" in item:
        return dict(item)
    text = item.get("text", item.get("content"))
    if not isinstance(text, str) or not text:
        raise ValueError(f"item {i}: needs a non-empty 'text' or 'input_ids'")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return {"input_ids": ids, "answer_offset": item.get("answer_offset", 0) or 0,
            "time_offset": item.get("time_offset", 0) or 0}


class ParallelPretrainCollator:
    """Seed-style collator: `collator(records) -> batch`, grouping the given records into samples.

    Every record of the call is used: with fixed `branches_per_sample` the last sample may hold fewer
    branches when the count does not divide; `batch_by_samples` is a DataLoader-level setting here.
    `interleave_branches` is the seed's flag; both values give the same time-major layout
    (`parallel.seed_compat.check_interleave_branches`).
    """

    def __init__(self, tokenizer, branches_per_sample: int = 8, pad_to: int | None = None,
                 max_branches_per_sample: int | None = None, min_branches_per_sample: int = 1,
                 random_time_offset: bool = True, interleave_branches: bool = False, branch_stride: int = 128,
                 align_to: str = "left", max_total_tokens: int = 0, seed: int = 0):
        self.interleave_branches = check_interleave_branches(interleave_branches)
        self.tokenizer = tokenizer
        self.grouping = dict(branches_per_sample=branches_per_sample, min_branches=min_branches_per_sample,
                             max_branches=max_branches_per_sample)
        self.rng_seed = seed
        self.collator = ParallelCollator(tokenizer, branch_stride=branch_stride, align_to=align_to,
                                         random_time_offset=random_time_offset, max_total_tokens=max_total_tokens,
                                         pad_to=pad_to, seed=seed)
        self._calls = 0

    def __call__(self, items) -> dict:
        units = [_as_unit(self.tokenizer, it, i) for i, it in enumerate(items)]
        grouper = BranchGrouper(batch_size=max(1, sum(unit_text_count(u) for u in units)), seed=self.rng_seed
                                + self._calls, **self.grouping)
        self._calls += 1
        for u in units:
            grouper.push(u)
        grouper.flush()
        samples = [s for batch in grouper.ready for s in batch]
        return self.collator.collate(samples)


class ParallelSFTCollator(ParallelPretrainCollator):
    """The same for SFT units (conversations already rendered into branches with loss masks)."""

    def __init__(self, tokenizer, branches_per_sample: int = 4, pad_to: int | None = None,
                 max_branches_per_sample: int | None = None, min_branches_per_sample: int = 1,
                 random_time_offset: bool = True, branch_stride: int = 128, align_to: str = "left",
                 max_total_tokens: int = 0, seed: int = 0):
        super().__init__(tokenizer, branches_per_sample, pad_to, max_branches_per_sample, min_branches_per_sample,
                         random_time_offset, False, branch_stride, align_to, max_total_tokens, seed)
