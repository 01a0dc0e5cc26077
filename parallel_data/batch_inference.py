"""Batch inference over a prompt file: read the records, plan the batches, shard them over ranks, merge the outputs.

Input, one record per line (the prompt-file formats of parallel_data/prompts.py):

* ``{"main": ..., "branches": [...]}`` or ``{"branches": [...]}``: a sample, decoded whole (its branches
  as given; a main is the shared context every branch continues);
* ``{"text": ...}`` (or ``{"prompt"}`` / ``{"question"}``), or a line of a text file: one prompt (``||`` is
  text here, not a separator). Prompts
  are grouped, in input order, into samples of ``branches_per_sample`` (fixed mode) or of a seeded
  random size in [min, max] (dynamic mode); the last sample takes what is left.

Every other field of a record is passed through to its output record (a field named like an output
field is an error). Output: one record per input record, in input order::

    sample: {...the record, "line": 3, "outputs": [...], "finish_reasons": [...], "num_new_tokens": [...]}
    prompt: {...the record, "line": 4, "output": "...", "finish_reason": "eos", "num_new_tokens": 12,
             "sample": 2, "branch": 0}      # the sample it was decoded in and its branch there

Sharding: the plan (grouping and batches, `parallel_data.parallel_collator.BranchGrouper`, seeded) is a
pure function of the records and the flags, so every rank computes the same plan, and rank r of W
decodes batches r, r + W, r + 2W, ... Each batch is decoded exactly as one process decodes it, and the
j-th branch of the plan samples with seed + j, so the merged output equals the one-process output byte
for byte. `merge_results` refuses a sample decoded twice or never.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from parallel_data.io import DataError
from parallel_data.parallel_collator import BranchGrouper, is_sample
from parallel_data.prompts import PromptSample, iter_prompt_file

OUTPUT_KEYS = ("line", "output", "outputs", "finish_reason", "finish_reasons", "num_new_tokens", "sample", "branch")
BranchOutput = tuple[str, str, int]  # (text, finish reason, new tokens) of one decoded branch


@dataclass
class PromptRecord:
    line: int  # 1-based line in the input file
    record: dict  # the record as read (a text line: {"text": line})
    item: PromptSample | str  # a sample, or one prompt to be grouped


def read_records(path: str | Path, max_records: int | None = None) -> list[PromptRecord]:
    """Every record of the file (the first `max_records`), checked; errors name the file, line and field."""
    out: list[PromptRecord] = []
    for line, rec, item in iter_prompt_file(path):
        if max_records is not None and len(out) >= max_records:
            break
        if rec is None:
            rec = {"text": item}
        elif "branches" not in rec and isinstance(item, PromptSample):
            item = rec["text"]  # {"text": "a||b"} is one prompt here: '||' may be part of the text (code)
        for key in OUTPUT_KEYS:
            if key in rec:
                raise DataError("is a field this tool writes in its output; rename it in the input", path=path,
                                line=line, field=key)
        out.append(PromptRecord(line, rec, item))
    return out


@dataclass
class PlannedSample:
    index: int  # position in the plan (the order the batches are made in)
    main: str
    branches: list[str]
    records: list[int]  # the record index of each branch (all the same for a sample record)
    first_branch: int  # plan-wide number of its first branch: branch k samples with seed + first_branch + k
    grouped: bool  # made of single prompts (one record per branch), not a sample record


@dataclass
class Plan:
    samples: list[PlannedSample]
    batches: list[list[int]]  # sample indices of each batch

    @property
    def num_branches(self) -> int:
        return sum(len(s.branches) for s in self.samples)

    def shard(self, rank: int, world_size: int) -> list[list[PlannedSample]]:
        """The batches rank `rank` of `world_size` decodes: r, r + W, r + 2W, ..."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        return [[self.samples[i] for i in b] for b in self.batches[rank::world_size]]


def plan_batches(records: list[PromptRecord], *, batch_size: int, batch_by_samples: bool, branches_per_sample: int,
                 min_branches: int = 1, max_branches: int | None = None, seed: int = 0) -> Plan:
    """Group the single prompts into samples and the samples into batches (the same on every rank).

    A batch holds `batch_size` samples (`batch_by_samples`) or at most `batch_size` branches (a sample
    with more branches is a batch of its own); sample records pass through whole.
    """
    grouper = BranchGrouper(batch_size=batch_size, branches_per_sample=branches_per_sample,
                            min_branches=min_branches, max_branches=max_branches,
                            batch_by_samples=batch_by_samples, seed=seed)
    samples: list[PlannedSample] = []
    batches: list[list[int]] = []
    first = 0

    def take(batch: list[dict]) -> None:
        nonlocal first
        ids = []
        for unit in batch:
            if "record" in unit:  # a sample record
                s = PlannedSample(len(samples), unit["main"], list(unit["branches"]),
                                  [unit["record"]] * len(unit["branches"]), first, grouped=False)
            else:  # single prompts grouped by the grouper: unit["branches"] holds their units
                s = PlannedSample(len(samples), "", [u["text"] for u in unit["branches"]],
                                  [u["prompt_record"] for u in unit["branches"]], first, grouped=True)
            first += len(s.branches)
            ids.append(s.index)
            samples.append(s)
        batches.append(ids)

    for i, r in enumerate(records):
        if isinstance(r.item, PromptSample):
            unit = {"record": i, "main": r.item.main, "branches": list(r.item.branches)}
        else:
            unit = {"prompt_record": i, "text": r.item}
        assert is_sample(unit) == isinstance(r.item, PromptSample)
        grouper.push(unit)
        while (b := grouper.pop()) is not None:
            take(b)
    grouper.flush()
    while (b := grouper.pop()) is not None:
        take(b)
    return Plan(samples, batches)


def merge_results(parts: list[dict[int, list[BranchOutput]]], plan: Plan) -> dict[int, list[BranchOutput]]:
    """The results of every rank as one map sample index -> branch outputs; every sample exactly once."""
    merged: dict[int, list[BranchOutput]] = {}
    for rank, part in enumerate(parts):
        for idx, outs in part.items():
            if idx in merged:
                raise RuntimeError(f"sample {idx} was decoded twice (again by rank {rank})")
            if not 0 <= idx < len(plan.samples) or len(outs) != len(plan.samples[idx].branches):
                raise RuntimeError(f"rank {rank} returned a result that is not in the plan (sample {idx})")
            merged[idx] = outs
    missing = [i for i in range(len(plan.samples)) if i not in merged]
    if missing:
        raise RuntimeError(f"{len(missing)} sample(s) were never decoded (first: {missing[0]})")
    return merged


def output_records(records: list[PromptRecord], plan: Plan, results: dict[int, list[BranchOutput]]) -> list[dict]:
    """One output record per input record, in input order (see the module docstring)."""
    per_record: dict[int, dict] = {}
    for s in plan.samples:
        outs = results[s.index]
        if not s.grouped:
            rec = records[s.records[0]]
            per_record[s.records[0]] = {**rec.record, "line": rec.line, "outputs": [o[0] for o in outs],
                                           "finish_reasons": [o[1] for o in outs],
                                           "num_new_tokens": [o[2] for o in outs]}
            continue
        for k, (ri, (text, reason, n)) in enumerate(zip(s.records, outs)):
            rec = records[ri]
            per_record[ri] = {**rec.record, "line": rec.line, "output": text, "finish_reason": reason,
                              "num_new_tokens": n, "sample": s.index, "branch": k}
    if len(per_record) != len(records):
        raise RuntimeError(f"{len(records) - len(per_record)} record(s) have no output")
    return [per_record[i] for i in range(len(records))]
