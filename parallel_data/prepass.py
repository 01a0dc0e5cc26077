"""The data pre-pass: validate every record before the first step and record what each line gives.

`scan_records(dataset)` reads every record of a local JSONL source once, in file order, through the
same record -> units builder training uses, so a bad record anywhere (line 55 of 60) is a `DataError`
naming file, line and field before any step runs. Per line it keeps one int32 *code*:

* 0: a blank line (no record);
* k > 0: a text record giving k units, or, when packing (`chunk_length`), k tokens including its EOS;
* -k: a grouped ``{"main", "branches"}`` record, one sample of k branches.

`parallel_data.stream.count_micro_batches` replays the batch streams on these codes to give the
exact number of micro-batches, hence an exact learning-rate schedule horizon. The scan also counts
the target tokens (`DataScan.targets`, so a run that would train on nothing can be refused) and the
records whose branches give no target token (logged with their file and line, or an error with
``strict_data``).

The result is cached beside the data as ``{data_path}.pm-lengths-<key>.npz``, or, where that folder is
not writable, under ``$XDG_CACHE_HOME/parallelmind/lengths/`` (default ``~/.cache``). The key hashes
the file's identity (resolved path, size, mtime and ctime in ns, inode), the tokenizer (its full
serialisation, special tokens and chat template), every builder setting (kind, max_seq_len,
text_column, chunk_length, fmt, EOS id), the strictness and the number of lines read, so a cache is
never used for data or settings it was not made from.

A Hugging Face source is not scanned here: a stream cannot be re-read cheaply and may be endless
(`scan_records` returns None). Bounded Hub sources are counted by reading each stream's share
(`count_micro_batches`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from parallel_data.io import DataError
from parallel_data.parallel_collator import is_sample
from parallel_data.parallel_dataset import UnitStats, unit_targets
from parallel_data.sources import LocalJsonlSource

log = logging.getLogger("parallelmind.data")
SCAN_VERSION = 1  # bump when the meaning of the codes changes


@dataclass
class DataScan:
    """What one pass over every record of a local source found."""

    codes: np.ndarray  # int32 [lines]: the code of each line of the source's window (see the module docstring)
    targets: int = 0  # target tokens the records give (before --max_total_tokens truncation)
    stats: UnitStats = field(default_factory=UnitStats)
    no_target_examples: list[str] = field(default_factory=list)  # "file:line: field ...: message", the first few
    seconds: float = 0.0
    cached: bool = False

    @property
    def records(self) -> int:
        return self.stats.records


def record_code(units: list[dict], carry_growth: int, chunk_length: int | None) -> int:
    """The code of one record from the units its builder returned (see the module docstring)."""
    if units and is_sample(units[0]):
        return -len(units[0]["branches"])
    if chunk_length:
        return carry_growth + chunk_length * len(units)
    return len(units)


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything about a tokenizer that changes token ids or rendered conversations."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    extra = [getattr(tokenizer, "chat_template", None), getattr(tokenizer, "eos_token_id", None),
             getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "all_special_tokens", None)]
    h.update(json.dumps(extra, default=str).encode())
    return h.hexdigest()


def _file_identity(path: str) -> dict:
    st = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


def cache_key(dataset, lines: int) -> str:
    ident = {"version": SCAN_VERSION, "file": _file_identity(dataset.source.path),
             "tokenizer": tokenizer_fingerprint(dataset.tokenizer), "settings": dataset.settings,
             "strict": dataset.strict_data, "lines": lines}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def cache_paths(data_path: str, key: str) -> list[Path]:
    """Where a scan is cached: beside the data, then the user's cache folder."""
    beside = Path(f"{data_path}.pm-lengths-{key[:20]}.npz")
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "parallelmind" / "lengths"
    name = hashlib.sha256(str(Path(data_path).resolve()).encode()).hexdigest()[:16]
    return [beside, root / f"{name}-{key[:20]}.npz"]


def _load(path: Path, key: str) -> DataScan | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("key") != key:
                return None
            return DataScan(codes=z["codes"].astype(np.int32), targets=meta["targets"],
                            stats=UnitStats(**meta["stats"]), no_target_examples=meta["examples"],
                            seconds=meta["seconds"], cached=True)
    except (OSError, ValueError, KeyError, TypeError):  # missing, partly written or foreign: scan again
        return None


def _save(paths: list[Path], key: str, scan: DataScan) -> Path | None:
    """Write the scan to the first of `paths` that can be written; None when none can (nothing cached)."""
    meta = json.dumps({"key": key, "targets": scan.targets, "stats": asdict(scan.stats),
                       "examples": scan.no_target_examples, "seconds": scan.seconds})
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError:
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, codes=scan.codes, meta=np.array(meta))
            os.replace(tmp, path)  # several ranks may write the same scan: the last complete one stays
            return path
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return None


def scan_local(dataset, source: LocalJsonlSource, on_record=None) -> DataScan:
    """One pass in file order over every line of the source's window (held-out lines included).

    `on_record(line_no, units, stats_before, stats_after)` sees what each record gave (the unit cache
    keeps it); the stats are `UnitStats` as dicts.
    """
    t0 = time.perf_counter()
    builder = dataset.new_builder(warn=False)
    chunk = getattr(builder, "chunk_length", None)
    codes = np.zeros(source.split.limit_lines, dtype=np.int32)
    targets = 0
    for rec, line_no in source.iter_all():
        before, stats_before = len(builder.carry), asdict(builder.stats) if on_record else None
        units = builder(rec, line_no)
        codes[line_no - 1] = record_code(units, len(builder.carry) - before, chunk)
        targets += sum(unit_targets(u) for u in units)
        if on_record is not None:
            on_record(line_no, units, stats_before, asdict(builder.stats))
    targets += sum(unit_targets(u) for u in builder.flush())
    return DataScan(codes=codes, targets=targets, stats=builder.stats, no_target_examples=list(builder.checks.examples),
                    seconds=time.perf_counter() - t0)


def scan_records(dataset) -> DataScan | None:
    """Validate and measure every record of a local source (cached; see the module docstring).

    Raises the first record's DataError, and DataError when no record gives a target token. Returns
    None for a Hugging Face source. The result is kept on
    the dataset (`dataset.scan`), so builders made afterwards do not log what the scan reported.
    """
    if dataset.scan is not None:
        return dataset.scan
    source = dataset.source
    if not isinstance(source, LocalJsonlSource):
        return None
    cacheable = hasattr(dataset, "settings") and hasattr(dataset, "tokenizer")  # else: no key, scanned every run
    key = cache_key(dataset, source.split.limit_lines) if cacheable else ""
    paths = cache_paths(source.path, key) if cacheable else []
    scan = next((s for s in (_load(p, key) for p in paths if p.is_file()) if s is not None), None)
    if scan is None:
        log.info("data: checking every record of %s (%s lines) before training", source.path,
                 f"{source.split.limit_lines:,}")
        scan = scan_local(dataset, source)
        where = _save(paths, key, scan)
        log.info("data: %s records, %s target tokens, checked in %.1f s%s", f"{scan.records:,}",
                 f"{scan.targets:,}", scan.seconds, f"; lengths cached in {where}" if where else "")
    return accept_scan(dataset, scan)


def accept_scan(dataset, scan: DataScan) -> DataScan:
    """The checks every scan passes before training (records, targets, what gives no target), then kept
    on the dataset (`dataset.scan`)."""
    source = dataset.source
    if scan.records == 0:
        raise DataError("has no records (only blank lines)", path=source.path)
    _report(scan)
    if scan.targets == 0:
        raise DataError(f"gives no target token in any of its {scan.records} records, so there is nothing to train "
                        "on (check answer_offset and max_seq_len)", path=source.path)
    dataset.scan = scan
    return scan


def _report(scan: DataScan) -> None:
    n = scan.stats.no_target
    if not n:
        return
    shown = "; ".join(scan.no_target_examples)
    more = f" (and {n - len(scan.no_target_examples)} more)" if n > len(scan.no_target_examples) else ""
    log.warning("data: %d record%s give no target token: %s%s; they are used as context only. --strict_data "
                "makes this an error", n, "" if n == 1 else "s", shown, more)
