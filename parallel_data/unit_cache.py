"""The unit cache (`--parallel_cache_dir`): every record's tokenised units on disk, so a run whose data,
tokenizer and settings were seen before starts at once and never tokenises again.

    cache = open_unit_cache(dataset, "out/parallel_cache")   # build (one pass, the data pre-pass) or load
    builder = dataset.new_builder()                           # now serves units from the cache

One entry per data file, tokenizer and builder settings, a folder `{cache_dir}/{file name}-{key[:20]}/`:

    units.npy      int64 [U, 6]   per unit: line, role (0 a unit, 1 a grouped record's main, 2 one of its
                                  branches), first token, length, answer_offset, time_offset
    has_mask.npy   bool  [U]      the unit carries a loss mask (conversations)
    tokens.npy     int32 [N]      every unit's token ids, concatenated
    loss_mask.npy  uint8 [N]      their loss mask (0 where a unit has none)
    lines.npy      int64 [L + 1]  line l (1-based) owns units[lines[l - 1]:lines[l]]
    stats.npy      int32 [L, 7]   the `UnitStats` increments of each line's record (records, units, ...)
    codes.npy      int32 [L]      the pre-pass codes (exact step counts, parallel_data/prepass.py)
    meta.json                     the key, target count, counters, located warnings, version

The key is the data pre-pass key (parallel_data/prepass.py `cache_key`): the file's identity (path,
size, modification and change times, inode), the tokenizer's full serialisation (vocabulary, merges,
special tokens, chat template), every builder setting (kind, max_seq_len, text column, format, EOS),
the strictness and the lines read. Any change gives another key, hence a new entry: a cache is never
used for data or settings it was not made from. Entries are written to a temporary folder and renamed
into place (a reader never sees half an entry) and loaded memory-mapped. Grouping into samples is not
cached: it is seeded and replayed from the codes in microseconds, and depends on batch settings.

Only local JSONL files are cached (a Hub dataset is a stream; packing with `chunk_length` carries
tokens across records and is not cached either).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from array import array
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from parallel_data.io import DataError
from parallel_data.parallel_dataset import RecordChecks, UnitStats
from parallel_data.prepass import DataScan, accept_scan, cache_key, scan_local
from parallel_data.sources import LocalJsonlSource

log = logging.getLogger("parallelmind.data")
CACHE_VERSION = 1
STAT_FIELDS = [f.name for f in fields(UnitStats)]
ROLE_UNIT, ROLE_MAIN, ROLE_BRANCH = 0, 1, 2
_ARRAYS = ("units", "has_mask", "tokens", "loss_mask", "lines", "stats", "codes")


class _Collector:
    """Receives each record's units during the pre-pass and lays them out as the entry's arrays."""

    def __init__(self, lines: int):
        self.rows: list[tuple[int, int, int, int, int, int]] = []
        self.has_mask: list[bool] = []
        self.tokens, self.mask = array("i"), array("B")
        self.first_row = np.zeros(lines + 1, dtype=np.int64)
        self.stats = np.zeros((lines, len(STAT_FIELDS)), dtype=np.int32)

    def _unit(self, line: int, role: int, ids, unit: dict | None) -> None:
        mask = unit.get("loss_mask") if unit else None
        self.rows.append((line, role, len(self.tokens), len(ids), int((unit or {}).get("answer_offset", 0) or 0),
                          int((unit or {}).get("time_offset", 0) or 0)))
        self.has_mask.append(mask is not None)
        self.tokens.extend(int(t) for t in ids)
        if mask is not None:
            self.mask.extend(int(m) for m in mask)
        else:
            self.mask.extend(bytes(len(ids)))

    def __call__(self, line: int, units: list[dict], before: dict, after: dict) -> None:
        for u in units:
            if "branches" in u:
                self._unit(line, ROLE_MAIN, u["main"] or [], None)
                for b in u["branches"]:
                    self._unit(line, ROLE_BRANCH, b["input_ids"], b)
            else:
                self._unit(line, ROLE_UNIT, u["input_ids"], u)
        self.stats[line - 1] = [after[k] - before[k] for k in STAT_FIELDS]
        self.first_row[line] = len(self.rows)

    def arrays(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        rows = np.array(self.rows, dtype=np.int64).reshape(-1, 6)
        lines = np.maximum.accumulate(self.first_row)  # lines without a record own no rows
        return {"units": rows, "has_mask": np.array(self.has_mask, dtype=bool),
                "tokens": np.frombuffer(self.tokens, dtype=np.int32).copy(),
                "loss_mask": np.frombuffer(self.mask, dtype=np.uint8).copy(), "lines": lines, "stats": self.stats,
                "codes": codes}


class UnitCache:
    """A loaded entry: units by line number, plus the pre-pass scan it was built with."""

    def __init__(self, folder: Path, meta: dict, arrays: dict[str, np.ndarray]):
        self.folder, self.meta = folder, meta
        for name in _ARRAYS:
            setattr(self, name, arrays[name])
        self.scan = DataScan(codes=np.asarray(self.codes, dtype=np.int32), targets=meta["targets"],
                             stats=UnitStats(**meta["stats"]), no_target_examples=meta["examples"],
                             seconds=meta["seconds"], cached=True)

    def units_of(self, line: int) -> list[dict]:
        """The units line `line` (1-based) gave, as the record -> units builder returns them."""
        out: list[dict] = []
        lo, hi = int(self.lines[line - 1]), int(self.lines[line])
        for row in range(lo, hi):
            _, role, start, length, ans, toff = (int(x) for x in self.units[row])
            if role == ROLE_MAIN:
                out.append({"main": self.tokens[start:start + length].tolist(), "branches": []})
                continue
            unit = {"input_ids": self.tokens[start:start + length].tolist(), "answer_offset": ans, "time_offset": toff}
            if self.has_mask[row]:
                unit["loss_mask"] = self.loss_mask[start:start + length].tolist()
            (out[-1]["branches"] if role == ROLE_BRANCH else out).append(unit)
        return out

    def builder(self, checks: RecordChecks) -> CachedUnits:
        return CachedUnits(self, checks)


class CachedUnits:
    """The record -> units builder over a cache: the line number picks the units, the record is not read."""

    chunk_length = None  # packing is never cached

    def __init__(self, cache: UnitCache, checks: RecordChecks):
        self.cache, self.checks = cache, checks
        self.stats = UnitStats()
        self.carry: list[int] = []  # no packing: always empty (kept for the stream's snapshots)

    def __call__(self, rec: dict, line: int) -> list[dict]:
        for name, inc in zip(STAT_FIELDS, self.cache.stats[line - 1].tolist()):
            setattr(self.stats, name, getattr(self.stats, name) + inc)
        return self.cache.units_of(line)

    def flush(self) -> list[dict]:
        return []


def entry_folder(cache_dir: str | Path, data_path: str, key: str) -> Path:
    return Path(cache_dir) / f"{Path(data_path).name}-{key[:20]}"


def _load(folder: Path, key: str) -> UnitCache | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("key") != key or meta.get("version") != CACHE_VERSION:
            return None
        arrays = {n: np.load(folder / f"{n}.npy", mmap_mode="r", allow_pickle=False) for n in _ARRAYS}
    except (OSError, ValueError, KeyError):  # missing, partly written or foreign: built again
        return None
    return UnitCache(folder, meta, arrays)


def _write(folder: Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=str(folder.parent)))
    try:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def open_unit_cache(dataset, cache_dir: str | Path, *, rebuild: bool = False, build: bool = True) -> UnitCache:
    """Load the dataset's entry in `cache_dir`, or build it with one pre-pass over the data (which also
    validates every record). `rebuild`: build even when a valid entry exists. `build=False` (the other
    ranks, after rank 0 built it): the entry must be there. The dataset then serves its units from it."""
    source = dataset.source
    if not isinstance(source, LocalJsonlSource):
        raise ValueError("--parallel_cache_dir caches local JSONL files (--data_path); a Hugging Face dataset is "
                         "read as a stream")
    if getattr(dataset.new_builder(warn=False), "chunk_length", None):
        raise ValueError("--parallel_cache_dir cannot cache packed data (--chunk-length)")
    key = cache_key(dataset, source.split.limit_lines)
    folder = entry_folder(cache_dir, source.path, key)
    cache = None if rebuild else _load(folder, key)
    if cache is None and not build:
        raise DataError(f"the unit cache {folder} is missing after it was built (is --parallel_cache_dir on a "
                        "folder every rank shares?)", path=source.path)
    if cache is None:
        cache = _build(dataset, source, folder, key, rebuild)
    else:
        log.info("data: %s records of %s loaded from the unit cache %s (tokenised in %.1f s when it was built)",
                 f"{cache.scan.records:,}", source.path, folder, cache.scan.seconds)
    accept_scan(dataset, cache.scan)
    dataset.unit_cache = cache
    return cache


def _build(dataset, source: LocalJsonlSource, folder: Path, key: str, rebuild: bool) -> UnitCache:
    why = "rebuilding (--rebuild_parallel_cache)" if rebuild else "building (no entry for this data, tokenizer " \
                                                                  "and settings)"
    log.info("data: %s the unit cache %s: tokenising %s lines of %s", why, folder,
             f"{source.split.limit_lines:,}", source.path)
    t0 = time.perf_counter()
    collect = _Collector(source.split.limit_lines)
    scan = scan_local(dataset, source, on_record=collect)
    meta = {"version": CACHE_VERSION, "key": key, "data": str(Path(source.path).resolve()),
            "settings": dataset.settings, "targets": scan.targets, "stats": asdict(scan.stats),
            "examples": scan.no_target_examples, "seconds": scan.seconds, "built": time.time()}
    _write(folder, meta, collect.arrays(scan.codes))
    cache = _load(folder, key)
    if cache is None:
        raise OSError(f"the unit cache {folder} could not be read back after writing it")
    log.info("data: unit cache %s written (%s units, %s tokens, %.1f s)", folder, f"{len(cache.units):,}",
             f"{len(cache.tokens):,}", time.perf_counter() - t0)
    return cache
