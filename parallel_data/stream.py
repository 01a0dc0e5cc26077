"""Training and evaluation batch streams over a parallel dataset.

`ParallelBatchStream` is an IterableDataset used with `DataLoader(batch_size=None)`: each DataLoader
worker of each rank is one *stream* (S = world size x workers) that reads its own share of the data,
builds units, groups them (`BranchGrouper`) and collates batches. Every batch carries the stream's
state after that batch (cursor, grouper buffer, packing carry, RNG states), so the trainer can save
exactly what has been consumed and a resumed run continues with the very next batch. Resuming with a
different number of streams re-deals the remaining data (`reshard_states`).

`eval_batches` groups held-out units globally (sample k goes to rank k mod W), so evaluation gives
the same samples, hence the same summed loss, for any number of ranks.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from torch.utils.data import IterableDataset, get_worker_info

from parallel_data.parallel_collator import BranchGrouper, ParallelCollator
from parallel_data.parallel_dataset import UnitStats, _ParallelDataset
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


def stream_seed(seed: int, stream: int, what: str) -> int:
    return random.Random(f"{what}:{seed}:{stream}").getrandbits(62)


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
        builder = self.dataset.new_builder()
        grouper = self.grouping.grouper(stream_seed(self.seed, sid, "group"))
        collator = ParallelCollator(**self.collator_kwargs, seed=stream_seed(self.seed, sid, "layout"))
        cursor = Cursor()
        epoch_units = [0]  # units produced in this epoch (for the packing quota)
        st = self.resume_states.get(sid)
        if st is not None:
            cursor = Cursor(**st["cursor"])
            if st.get("grouper") is not None:
                grouper.load_state_dict(st["grouper"])
            if st.get("collator") is not None:
                collator.load_state_dict(st["collator"])
            builder.carry[:] = st["carry"]
            epoch_units[0] = st.get("epoch_units", 0)
            builder.stats = UnitStats(**st["stats"])
            for u in st.get("pending_units", []):  # re-dealt from a run with another world size
                grouper.push(u)
            for smp in st.get("pending_samples", []):
                grouper.push(smp)

        def emit(batch):
            out = collator.collate(batch)
            out["stream"] = sid
            out["epoch"] = cursor.epoch
            out["state"] = {"cursor": cursor.state(), "grouper": grouper.state_dict(),
                            "collator": collator.state_dict(), "carry": list(builder.carry),
                            "epoch_units": epoch_units[0],
                            "stats": asdict(builder.stats)}
            return out

        while (batch := grouper.pop()) is not None:  # batches that were ready when the state was saved
            yield emit(batch)
        while cursor.epoch < self.epochs:
            quota = self.dataset.unit_quota(sid, num_streams)
            for units in self.dataset.iter_epoch_units(builder, cursor, sid, num_streams):
                if quota is not None:
                    kept = units[: max(0, quota - epoch_units[0])]
                    builder.stats.units -= len(units) - len(kept)  # built but beyond --max-samples: unused
                    builder.stats.packed_chunks -= len(units) - len(kept)
                    units = kept
                    epoch_units[0] += len(units)
                for u in units:
                    grouper.push(u)
                while (batch := grouper.pop()) is not None:
                    yield emit(batch)
                if quota is not None and epoch_units[0] >= quota:
                    break
            if quota is not None and epoch_units[0] >= quota:
                builder.carry.clear()  # tokens beyond --max-samples chunks are not used
            for u in builder.flush():
                grouper.push(u)
            grouper.flush()
            cursor.epoch, cursor.block, cursor.line, cursor.start = cursor.epoch + 1, 0, 0, 0
            epoch_units[0] = 0
            while (batch := grouper.pop()) is not None:
                yield emit(batch)


def reshard_states(states: dict[int, dict], old_streams: int, new_streams: int, source) -> dict[int, dict]:
    """Map saved per-stream states onto a different number of streams without losing data.

    Everything before the earliest unfinished block (local files) or row (Hub round-robin) of the
    earliest epoch is done; the new streams restart there. Texts waiting in old grouper buffers move
    to new stream 0. Blocks that some old streams had already finished past that point are read
    again (logged), which is the price of changing the world size mid-epoch.
    """
    if old_streams == new_streams:
        return states
    cursors = {s: Cursor(**st["cursor"]) for s, st in states.items()}
    epoch = min(c.epoch for c in cursors.values())
    same = {s: c for s, c in cursors.items() if c.epoch == epoch}
    missing = [s for s in range(old_streams) if s not in states]
    if missing:
        raise ValueError(f"resume state lacks the data position of streams {missing}")
    if isinstance(source, LocalJsonlSource):
        start = min(c.start + s + c.block * old_streams for s, c in same.items())
    else:
        start = min(c.start + s + c.line * old_streams for s, c in same.items())
    leftovers, pending = [], []
    for st in states.values():
        g = st["grouper"]
        if st.get("carry"):  # a packing remainder becomes a (shorter) unit of its own
            leftovers.append({"input_ids": list(st["carry"]), "answer_offset": 0, "time_offset": 0})
        leftovers.extend(g["buffer"])
        for batch in [g["current"], *g["ready"]]:
            pending.extend(batch)
    log.warning("resuming with %d data streams instead of %d: restarting epoch %d at global position %d; "
                "up to %d blocks/rows may be read twice", new_streams, old_streams, epoch, start, old_streams)
    out = {}
    for s in range(new_streams):
        st = {"cursor": {"epoch": epoch, "block": 0, "line": 0, "start": start},
              "grouper": None, "collator": None, "carry": [], "stats": asdict(UnitStats())}
        out[s] = st
    out[0]["pending_units"] = leftovers
    out[0]["pending_samples"] = pending
    return out


def estimate_micro_batches(dataset: _ParallelDataset, grouping: GroupingConfig, *, rank: int, world_size: int,
                           num_workers: int, epochs: int, seed: int, grouped_records: float) -> int | None:
    """Micro-batches this rank will produce, by replaying the grouper on the known record counts.

    `grouped_records` is the share of grouped ``{"main", "branches"}`` records (1.0: all). Exact when every
    record gives one unit and the file is not a mix (no text longer than max_seq_len, no packing); a mix
    is replayed with a seeded draw per record. None when the record count is unknown (a Hub stream
    without --max-samples).
    """
    nw = max(1, num_workers)
    total = 0
    for wid in range(nw):
        sid, n_streams = rank * nw + wid, world_size * nw
        g = grouping.grouper(stream_seed(seed, sid, "group"))
        for epoch in range(epochs):
            n = dataset.stream_unit_count(sid, n_streams, epoch)
            if n is None:
                return None
            sample, text = {"branches": [None]}, {"input_ids": None}
            mix = random.Random(f"mix:{seed}:{sid}:{epoch}")
            for _ in range(n):
                g.push(sample if (grouped_records >= 1 or (grouped_records > 0 and mix.random() < grouped_records))
                       else text)
                while g.pop() is not None:
                    total += 1
            g.flush()
            while g.pop() is not None:
                total += 1
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


def detect_grouped_records(dataset: _ParallelDataset, probe: int = 256) -> float:
    """Share of grouped ``{"main", "branches"}`` records among the first records of the data."""
    src = dataset.source
    it = src.iter_all() if hasattr(src, "iter_all") else iter(())
    n = grouped = 0
    for rec, _ in it:
        n += 1
        grouped += "branches" in rec
        if n >= probe:
            break
    return grouped / n if n else 0.0
