"""Training and evaluation batch streams over a parallel dataset.

`ParallelBatchStream` is an IterableDataset used with `DataLoader(batch_size=None)`: each DataLoader
worker of each rank is one *stream* (S = world size x workers) that reads its own share of the data,
builds units, groups them (`BranchGrouper`) and collates batches. Every batch carries a resume state
of bounded size, whatever the records are like (`batch["state"]`):

* ``anchor``: a snapshot of the stream (cursor, grouper contents, packing carry, grouper RNG, unit
  counters) at the latest batch boundary where little was waiting in the grouper, serialised once
  into a bytes object;
* ``skip``: the number of batches the stream emitted after that anchor, this one included;
* ``collator``: the collator's RNG state after this batch; ``stats``: the unit counters so far.

Normally the anchor is the state right after the batch itself (``skip`` = 0). A record that turns
into many units (a 1 MB text split at max_seq_len) fills the grouper with batches in waiting; the
anchor then stays where it was and only ``skip`` grows, so no batch carries those units. A resumed
run loads the anchor, rebuilds and discards ``skip`` batches (re-reading the records in between),
and continues with the very next batch. Resuming with a different number of streams re-deals the
remaining data (`reshard_states`).

`count_micro_batches` replays the same grouping on the per-line codes of the data pre-pass
(`parallel_data.prepass`), so the learning-rate schedule knows the exact number of steps.

`eval_batches` groups held-out units globally (sample k goes to rank k mod W), so evaluation gives
the same samples, hence the same summed loss, for any number of ranks.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from torch.utils.data import IterableDataset, get_worker_info

from parallel_data.hub_datasets import is_local_dataset
from parallel_data.parallel_collator import BranchGrouper, ParallelCollator
from parallel_data.parallel_dataset import UnitStats, _ParallelDataset
from parallel_data.prepass import record_code, scan_records
from parallel_data.sources import Cursor, LocalJsonlSource

log = logging.getLogger("parallelmind.data")


@dataclass
class GroupingConfig:
    batch_size: int
    branches_per_sample: int = 8
    min_branches: int = 1
    max_branches: int | None = None
    batch_by_samples: bool = False

    def grouper(self, seed: int) -> BranchGrouper:
        return BranchGrouper(batch_size=self.batch_size, branches_per_sample=self.branches_per_sample,
                             min_branches=self.min_branches, max_branches=self.max_branches,
                             batch_by_samples=self.batch_by_samples, seed=seed)

    def anchor_texts(self) -> int:
        """Texts that may wait in the grouper at an anchor: about two batches' worth."""
        per_sample = self.max_branches or self.branches_per_sample
        batch_texts = self.batch_size * per_sample if self.batch_by_samples else self.batch_size
        return 2 * batch_texts + per_sample


def stream_seed(seed: int, stream: int, what: str) -> int:
    return random.Random(f"{what}:{seed}:{stream}").getrandbits(62)


def pending_texts(grouper: BranchGrouper) -> int:
    """Texts held by a grouper: its buffer, the samples of its current batch and of the ready batches."""
    return len(grouper.buffer) + sum(len(s["branches"]) for batch in [grouper.current, *grouper.ready]
                                     for s in batch)


class _StreamRun:
    """One stream's pipeline (records -> units -> grouper -> batches of samples) and its snapshots."""

    def __init__(self, stream: ParallelBatchStream, sid: int, num_streams: int):
        self.dataset, self.epochs = stream.dataset, stream.epochs
        self.sid, self.num_streams = sid, num_streams
        self.builder = stream.dataset.new_builder()
        self.grouper = stream.grouping.grouper(stream_seed(stream.seed, sid, "group"))
        self.cursor = Cursor()
        self.epoch_units = 0  # units produced in this epoch (for the packing quota)

    def snapshot(self) -> bytes:
        """Everything `restore` needs to continue from here, as one bytes object."""
        return json.dumps({"cursor": self.cursor.state(), "grouper": self.grouper.state_dict(),
                           "carry": list(self.builder.carry), "epoch_units": self.epoch_units,
                           "stats": asdict(self.builder.stats)}).encode()

    def restore(self, anchor: dict) -> None:
        self.cursor = Cursor(**anchor["cursor"])
        if anchor.get("grouper") is not None:
            self.grouper.load_state_dict(anchor["grouper"])
        self.builder.carry[:] = anchor["carry"]
        self.epoch_units = anchor.get("epoch_units", 0)
        self.builder.stats = UnitStats(**anchor["stats"])
        for u in anchor.get("pending_units", []):  # re-dealt from a run with another world size
            self.grouper.push(u)
        for smp in anchor.get("pending_samples", []):
            self.grouper.push(smp)

    def batches(self) -> Iterator[list[dict]]:
        """Grouped batches (lists of samples) from the current state to the end of the last epoch."""
        yield from self._pop()  # batches that were ready at the snapshot
        while self.cursor.epoch < self.epochs:
            quota = self.dataset.unit_quota(self.sid, self.num_streams)
            if quota is None or self.epoch_units < quota:
                yield from self._epoch_records(quota)
            if quota is not None and self.epoch_units >= quota:
                self.builder.carry.clear()  # tokens beyond --max-samples chunks are not used
            for u in self.builder.flush():
                self.grouper.push(u)
            self.grouper.flush()
            c = self.cursor
            c.epoch, c.block, c.line, c.start = c.epoch + 1, 0, 0, 0
            self.epoch_units = 0
            yield from self._pop()

    def _epoch_records(self, quota: int | None) -> Iterator[list[dict]]:
        for units in self.dataset.iter_epoch_units(self.builder, self.cursor, self.sid, self.num_streams):
            if quota is not None:
                kept = units[: max(0, quota - self.epoch_units)]
                self.builder.stats.units -= len(units) - len(kept)  # built but beyond --max-samples: unused
                self.builder.stats.packed_chunks -= len(units) - len(kept)
                units = kept
                self.epoch_units += len(units)
            for u in units:
                self.grouper.push(u)
            yield from self._pop()
            if quota is not None and self.epoch_units >= quota:
                return

    def _pop(self) -> Iterator[list[dict]]:
        while (batch := self.grouper.pop()) is not None:
            yield batch


class ParallelBatchStream(IterableDataset):
    def __init__(self, dataset: _ParallelDataset, grouping: GroupingConfig, collator_kwargs: dict, *, rank: int,
                 world_size: int, epochs: int, seed: int, resume_states: dict[int, dict] | None = None):
        super().__init__()
        self.dataset = dataset
        self.grouping = grouping
        self.collator_kwargs = collator_kwargs
        self.rank, self.world_size = rank, world_size
        self.epochs = epochs
        self.seed = seed
        self.resume_states = resume_states or {}

    def stream_info(self) -> tuple[int, int]:
        wi = get_worker_info()
        nw, wid = (wi.num_workers, wi.id) if wi is not None else (1, 0)
        return self.rank * nw + wid, self.world_size * nw

    def __iter__(self) -> Iterator[dict]:
        sid, num_streams = self.stream_info()
        run = _StreamRun(self, sid, num_streams)
        collator = ParallelCollator(**self.collator_kwargs, seed=stream_seed(self.seed, sid, "layout"))
        anchor, skip, replay = run.snapshot(), 0, 0
        saved = self.resume_states.get(sid)
        if saved is not None:
            saved = stream_state(saved)
            anchor, skip = saved["anchor"], saved["skip"]
            run.restore(json.loads(anchor))
            replay = skip
            if saved.get("collator") is not None:  # the state after the last batch trained: skipped ones are
                collator.load_state_dict(saved["collator"])  # not collated again
        limit = self.grouping.anchor_texts()
        for samples in run.batches():
            if replay:  # emitted before the state was saved: rebuilt to reach the same place, not emitted again
                replay -= 1
                continue
            out = collator.collate(samples)
            if pending_texts(run.grouper) <= limit:
                anchor, skip = run.snapshot(), 0
            else:
                skip += 1
            out["stream"] = sid
            out["epoch"] = run.cursor.epoch
            out["state"] = {"anchor": anchor, "skip": skip, "collator": collator.state_dict(),
                            "stats": asdict(run.builder.stats)}
            yield out


def stream_state(state: dict) -> dict:
    """A saved stream state in the current form: `{"anchor": bytes, "skip", "collator", "stats"}`.

    Accepts an anchor given as a dict (`reshard_states`) and a state that is itself a whole snapshot
    (`{"cursor", "grouper", "collator", "carry", "epoch_units", "stats"}`, resumed with nothing to skip).
    """
    if "anchor" not in state:
        anchor = {k: v for k, v in state.items() if k != "collator"}
        state = {"anchor": anchor, "skip": 0, "collator": state.get("collator"), "stats": state["stats"]}
    anchor = state["anchor"]
    if not isinstance(anchor, (bytes, bytearray)):
        anchor = json.dumps(anchor).encode()
    return {**state, "anchor": bytes(anchor)}


def reshard_states(states: dict[int, dict], old_streams: int, new_streams: int, source) -> dict[int, dict]:
    """Map saved per-stream states onto a different number of streams without losing data.

    Everything before the earliest unfinished block (local files) or row (Hub round-robin) of the
    earliest epoch is done; the new streams restart there. Texts waiting in old grouper buffers move
    to new stream 0. Blocks that some old streams had already finished past that point are read
    again (logged), which is the price of changing the world size mid-epoch; so are the records a
    stream read after its anchor (see the module docstring), which is the latest batch boundary
    unless a very long record was being split.
    """
    if old_streams == new_streams:
        return states
    missing = [s for s in range(old_streams) if s not in states]
    if missing:
        raise ValueError(f"resume state lacks the data position of streams {missing}")
    anchors = {s: json.loads(stream_state(st)["anchor"]) for s, st in states.items()}
    cursors = {s: Cursor(**a["cursor"]) for s, a in anchors.items()}
    epoch = min(c.epoch for c in cursors.values())
    same = {s: c for s, c in cursors.items() if c.epoch == epoch}
    if isinstance(source, LocalJsonlSource):
        start = min(c.start + s + c.block * old_streams for s, c in same.items())
    else:
        start = min(c.start + s + c.line * old_streams for s, c in same.items())
    leftovers, pending = [], []
    for a in anchors.values():
        if a.get("carry"):  # a packing remainder becomes a (shorter) unit of its own
            leftovers.append({"input_ids": list(a["carry"]), "answer_offset": 0, "time_offset": 0})
        leftovers.extend(a.get("pending_units", []))
        pending.extend(a.get("pending_samples", []))
        g = a.get("grouper")
        if g is not None:
            leftovers.extend(g["buffer"])
            for batch in [g["current"], *g["ready"]]:
                pending.extend(batch)
    log.warning("resuming with %d data streams instead of %d: restarting epoch %d at global position %d; "
                "up to %d blocks/rows may be read twice", new_streams, old_streams, epoch, start, old_streams)
    out = {}
    for s in range(new_streams):
        anchor = {"cursor": {"epoch": epoch, "block": 0, "line": 0, "start": start}, "grouper": None, "carry": [],
                  "epoch_units": 0, "stats": asdict(UnitStats())}
        if s == 0:
            anchor.update(pending_units=leftovers, pending_samples=pending)
        out[s] = {"anchor": json.dumps(anchor).encode(), "skip": 0, "collator": None, "stats": anchor["stats"]}
    return out


_TEXT = {"input_ids": None}  # stand-ins for units when replaying the grouping (only their kind counts)


def _local_codes(source: LocalJsonlSource, codes, stream: int, num_streams: int, epoch: int) -> Iterator[int]:
    """The pre-pass codes of the lines stream `stream` reads in `epoch`, in its reading order."""
    for i in source.epoch_blocks(epoch, stream, num_streams):
        base = source.blocks[i].first_line - 1
        yield from codes[[base + k for k in source.block_order(i, epoch)]].tolist()


def _hub_codes(dataset: _ParallelDataset, stream: int, num_streams: int) -> list[int]:
    """Codes of the rows a Hub stream reads per epoch (every epoch reads the same rows): read once."""
    memo = dataset.__dict__.setdefault("_hub_codes", {})
    if (stream, num_streams) not in memo:
        builder, codes, made = dataset.new_builder(warn=False), [], 0  # training reports what it finds
        chunk, quota = getattr(builder, "chunk_length", None), dataset.unit_quota(stream, num_streams)
        for rec, line in dataset.source.iter_epoch(Cursor(), stream, num_streams):
            before = len(builder.carry)
            units = builder(rec, line)
            codes.append(record_code(units, len(builder.carry) - before, chunk))
            made += len(units)
            if quota is not None and made >= quota:
                break
        memo[(stream, num_streams)] = codes
    return memo[(stream, num_streams)]


def _replay_epoch(grouper: BranchGrouper, codes, chunk: int | None, quota: int | None) -> int:
    """Micro-batches one epoch of one stream gives: `_StreamRun.batches` on the codes instead of records."""
    n = made = carry = 0
    for code in codes:
        if code == 0:  # a blank line
            continue
        if code < 0:
            units = [{"branches": [None] * -code}]
        elif chunk:
            carry += code
            units, carry = [_TEXT] * (carry // chunk), carry % chunk
        else:
            units = [_TEXT] * code
        if quota is not None:
            units = units[: max(0, quota - made)]
            made += len(units)
        for u in units:
            grouper.push(u)
        while grouper.pop() is not None:
            n += 1
        if quota is not None and made >= quota:
            carry = 0
            break
    if carry:  # the packing remainder, flushed as a last unit
        grouper.push(_TEXT)
    grouper.flush()
    while grouper.pop() is not None:
        n += 1
    return n


def count_micro_batches(dataset: _ParallelDataset, grouping: GroupingConfig, *, rank: int, world_size: int,
                        num_workers: int, epochs: int, seed: int) -> int | None:
    """The exact number of micro-batches this rank's streams produce over `epochs` from a fresh start.

    Local data: the pre-pass (`parallel_data.prepass.scan_records`, cached beside the data) validates
    every record and gives each line's unit count; the grouping is then replayed per stream with the
    same seeds and reading order as `ParallelBatchStream`, so texts split at max_seq_len, packed
    chunks and grouped records are all counted. A Hugging Face source is read stream by stream when it
    is bounded (a local file or folder, or --max-samples); None for an endless Hub stream.
    """
    nw = max(1, num_workers)
    n_streams = world_size * nw
    source = dataset.source
    chunk = getattr(dataset.new_builder(warn=False), "chunk_length", None)  # packing: codes count tokens
    if isinstance(source, LocalJsonlSource):
        scan = scan_records(dataset)

        def codes_of(sid: int, epoch: int):
            return _local_codes(source, scan.codes, sid, n_streams, epoch)
    elif (source.max_samples is not None or dataset.chunk_quota is not None or is_local_dataset(source.name)
          or not getattr(source, "streaming", True)):
        def codes_of(sid: int, epoch: int):
            return _hub_codes(dataset, sid, n_streams)
    else:
        return None
    total = 0
    for wid in range(nw):
        sid = rank * nw + wid
        g = grouping.grouper(stream_seed(seed, sid, "group"))
        for epoch in range(epochs):
            total += _replay_epoch(g, codes_of(sid, epoch), chunk, dataset.unit_quota(sid, n_streams))
    return total


def eval_batches(units, *, rank: int, world_size: int, batch_size: int, collator: ParallelCollator,
                 branches: int | None = None, min_branches: int = 1, max_branches: int | None = None,
                 seed: int = 0, random_time_offset: bool = False) -> tuple[Iterator[dict], dict]:
    """Group held-out units globally and yield this rank's batches (`batch_size` samples each).

    Exactly `branches` per sample when given (the leftover texts are counted in the returned info,
    never silently evaluated with fewer branches), else a seeded count in [min, max] per sample.
    Random time offsets are drawn per sample from a seed of its global index, so they do not depend on
    the number of ranks either. Returns (batch iterator, info dict filled as the iterator runs: samples, texts, leftover).
    """
    info = {"samples": 0, "texts": 0, "leftover_texts": 0}

    def samples_iter():
        if branches is not None:  # grouped records are samples already and pass through whole
            buf = []
            for u in units:
                if "branches" in u:
                    yield u
                    continue
                buf.append(u)
                if len(buf) == branches:
                    yield {"branches": buf}
                    buf = []
            info["leftover_texts"] = len(buf)
            return
        rng = random.Random(f"eval:{seed}")
        buf, b = [], rng.randint(min_branches, max_branches or min_branches)
        for u in units:
            if "branches" in u:
                yield u
                continue
            buf.append(u)
            if len(buf) == b:
                yield {"branches": buf}
                buf, b = [], rng.randint(min_branches, max_branches or min_branches)
        if len(buf) >= min_branches:
            yield {"branches": buf}
        else:
            info["leftover_texts"] = len(buf)

    def batches():
        mine = []
        for k, s in enumerate(samples_iter()):
            info["samples"] += 1
            info["texts"] += len(s["branches"])
            if k % world_size == rank:
                if random_time_offset:
                    rng = random.Random(f"offset:{seed}:{k}")
                    s = {**s, "branches": [{**u, "time_offset": u.get("time_offset", 0) +
                                            rng.randint(0, len(u["input_ids"]))} for u in s["branches"]]}
                mine.append(s)
                if len(mine) == batch_size:
                    yield collator.collate(mine)
                    mine = []
        if mine:
            yield collator.collate(mine)

    return batches(), info
