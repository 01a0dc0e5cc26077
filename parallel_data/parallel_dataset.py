"""Parallel datasets: turn records into tokenised *units* ready for branch grouping.

A unit is either one branch, ``{"input_ids": [...], "answer_offset": int, "time_offset": int,
"loss_mask": [...] | None}``, or a whole grouped sample, ``{"main": [...], "branches": [units]}``.

* `ParallelPretrainDataset` reads local JSONL (``{"text"}`` one branch per line, ``{"text",
  "answer_offset"}``, pre-tokenised ``{"input_ids"}``, and grouped ``{"main", "branches"}`` records,
  keeping answer offsets) or a Hugging Face dataset (``--hf-dataset``; text column auto-detected;
  optional token packing into exact ``chunk_length`` pieces, documents joined by EOS, no
  decode/re-encode). Texts longer than ``max_seq_len`` are split into consecutive pieces, never cut.
* `ParallelSFTDataset` reads conversations (standard, OpenAI ``messages``, ShareGPT, Alpaca,
  prompt/response), renders them with the tokenizer's chat template and trains on the tokens of every
  assistant turn (``loss_mask``) and nowhere else. A conversation longer than ``max_seq_len`` is
  truncated there and counted. Branches never contain pad tokens.

Both read through `parallel_data.sources` (constant memory, per-rank shards, seeded held-out split).

A record whose branch gives no target token (an ``answer_offset`` at or past the end of the text) is
counted in `UnitStats.no_target` and reported with its file and line (`parallel_data.prepass` logs
the first few before training); with ``strict_data`` it is an error, and so is a branch or
conversation cut at ``max_seq_len``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from parallel_data.formats import conversation_branches, normalize_conversation, resolve_text_column
from parallel_data.io import DataError, check_input_file, describe_type
from parallel_data.sources import Cursor, HubSource, LocalJsonlSource

log = logging.getLogger("parallelmind.data")
MAX_EXAMPLES = 5  # located messages kept for the report of records without a target


@dataclass
class UnitStats:
    """What the unit builder did, summed over a run (reported at the end of training)."""

    records: int = 0
    units: int = 0
    split_texts: int = 0  # texts longer than max_seq_len, split into several branches
    truncated: int = 0  # SFT conversations / offset branches cut at max_seq_len
    truncated_tokens: int = 0
    packed_chunks: int = 0
    no_target: int = 0  # records with a branch that gives no target token

    def add(self, other: UnitStats) -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(other, k))


def unit_targets(unit: dict) -> int:
    """Target tokens the layout gives a unit (before any --max_total_tokens truncation).

    Token j of a branch is a target when j >= max(1, answer_offset) and, with a loss_mask, mask[j] is 1.
    """
    if "branches" in unit:
        return sum(unit_targets(b) for b in unit["branches"])
    first = max(1, unit.get("answer_offset", 0) or 0)
    mask = unit.get("loss_mask")
    if mask is not None:
        return int(sum(mask[first:]))
    return max(0, len(unit["input_ids"]) - first)


@dataclass
class RecordChecks:
    """Reports records that lose data or give no target: counted and logged, or DataError when strict."""

    strict: bool = False
    warn: bool = True  # log the first occurrences here (False when a pre-pass already reported them)
    examples: list[str] = field(default_factory=list)  # the first MAX_EXAMPLES messages

    def report(self, stats: UnitStats, err: DataError) -> None:
        if self.strict:
            raise err
        stats.no_target += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(str(err))
            if self.warn:
                log.warning("data: %s (counted; --strict_data makes this an error)", err)


def _int_field(rec, name, path, line, default=0):
    v = rec.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise DataError(f"must be a non-negative integer, got {describe_type(v)}", path=path, line=line, field=name)
    return v


@dataclass
class PretrainUnits:
    """Record -> units for pretraining, with optional token packing (its carry is part of the resume state)."""

    tokenizer: object
    max_seq_len: int
    path: str
    text_column: str | None = None
    chunk_length: int | None = None
    stats: UnitStats = field(default_factory=UnitStats)
    carry: list[int] = field(default_factory=list)
    checks: RecordChecks = field(default_factory=RecordChecks)
    _flagged: bool = False  # this record has been reported already

    def _ids(self, text: str, path, line, fld) -> list[int]:
        if not isinstance(text, str):
            raise DataError(f"expected a string, got {describe_type(text)}", path=path, line=line, field=fld)
        if not text.strip():
            raise DataError("empty text (an empty branch)", path=path, line=line, field=fld)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _branch(self, rec, line, fld_prefix="") -> list[dict]:
        if "input_ids" in rec:
            ids = rec["input_ids"]
            if not isinstance(ids, list) or not ids or not all(isinstance(t, int) for t in ids):
                raise DataError("must be a non-empty list of token ids", path=self.path, line=line,
                                field=fld_prefix + "input_ids")
        elif "text" in rec or "content" in rec:
            key = "text" if "text" in rec else "content"
            ids = self._ids(rec[key], self.path, line, fld_prefix + key)
        else:
            raise DataError("needs 'text', 'content' or 'input_ids'", path=self.path, line=line,
                            field=fld_prefix.rstrip(".") or None)
        ans = _int_field(rec, "answer_offset", self.path, line)
        toff = _int_field(rec, "time_offset", self.path, line)
        return self._checked(self._fit(ids, ans, toff, line, fld_prefix), ans, len(ids), line, fld_prefix)

    def _checked(self, units: list[dict], ans: int, n_tokens: int, line: int, fld_prefix: str) -> list[dict]:
        """Report a branch that gives no target token (once per record)."""
        if self._flagged or any(unit_targets(u) for u in units):
            return units
        self._flagged = True
        if ans:
            cut = f", cut at max_seq_len={self.max_seq_len}" if n_tokens > self.max_seq_len else ""
            err = DataError(f"answer_offset {ans} leaves no target token (the text has {n_tokens} tokens{cut})",
                            path=self.path, line=line, field=fld_prefix + "answer_offset")
        else:
            err = DataError(f"gives no target token (a text of {n_tokens} token has nothing to predict)",
                            path=self.path, line=line, field=fld_prefix.rstrip(".") or None)
        self.checks.report(self.stats, err)
        return units

    def _fit(self, ids: list[int], ans: int, toff: int, line: int, fld_prefix: str = "") -> list[dict]:
        n = self.max_seq_len
        if len(ids) <= n:
            return [{"input_ids": ids, "answer_offset": ans, "time_offset": toff}]
        if ans > 0:  # a prompt/answer branch cannot be split: keep its start, count the cut
            if self.checks.strict:
                raise DataError(f"a branch with an answer_offset is {len(ids)} tokens long, more than "
                                f"max_seq_len={n}; it would be cut (--strict_data)", path=self.path, line=line,
                                field=fld_prefix.rstrip(".") or None)
            self.stats.truncated += 1
            self.stats.truncated_tokens += len(ids) - n
            return [{"input_ids": ids[:n], "answer_offset": ans, "time_offset": toff}]
        self.stats.split_texts += 1
        return [{"input_ids": ids[i:i + n], "answer_offset": 0, "time_offset": toff if i == 0 else 0}
                for i in range(0, len(ids), n)]

    def __call__(self, rec: dict, line: int) -> list[dict]:
        self.stats.records += 1
        self._flagged = False
        if "branches" in rec:
            units = [self._grouped(rec, line)]
        elif self.chunk_length:
            units = self._pack(rec, line)
        elif self.text_column is not None and self.text_column in rec:
            ids = self._ids(rec[self.text_column], self.path, line, self.text_column)
            units = self._checked(self._fit(ids, 0, 0, line), 0, len(ids), line, self.text_column + ".")
        else:
            units = self._branch(rec, line)
        self.stats.units += len(units)
        return units

    def _grouped(self, rec, line) -> dict:
        branches = rec["branches"]
        if not isinstance(branches, list) or not branches:
            raise DataError("must be a non-empty list", path=self.path, line=line, field="branches")
        main = rec.get("main") or ""
        main_ids = self._ids(main, self.path, line, "main") if isinstance(main, str) and main else \
            (main if isinstance(main, list) else [])
        out = []
        for k, br in enumerate(branches):
            fld = f"branches[{k}]"
            br = {"text": br} if isinstance(br, str) else br
            if not isinstance(br, dict):
                raise DataError(f"expected a string or an object, got {describe_type(br)}", path=self.path,
                                line=line, field=fld)
            units = self._branch(br, line, fld + ".")
            if len(units) > 1:
                raise DataError(f"branch is longer than max_seq_len={self.max_seq_len} tokens", path=self.path,
                                line=line, field=fld)
            out.append(units[0])
        return {"main": main_ids, "branches": out}

    def _pack(self, rec, line) -> list[dict]:
        key = self.text_column or next((k for k in ("text", "content", "document") if k in rec), None)
        if key is None or key not in rec:
            raise DataError("no text column (pass --text-column)", path=self.path, line=line)
        self.carry.extend(self._ids(rec[key], self.path, line, key))
        self.carry.append(self.tokenizer.eos_token_id)
        out = []
        n = self.chunk_length
        while len(self.carry) >= n:
            out.append({"input_ids": self.carry[:n], "answer_offset": 0, "time_offset": 0})
            del self.carry[:n]
        self.stats.packed_chunks += len(out)
        return out

    def flush(self) -> list[dict]:
        """End of data: the packing remainder becomes one last (shorter) unit; nothing is dropped."""
        if not self.carry:
            return []
        out = [{"input_ids": list(self.carry), "answer_offset": 0, "time_offset": 0}]
        self.carry.clear()
        self.stats.packed_chunks += 1
        self.stats.units += 1
        return out


@dataclass
class SFTUnits:
    """Conversation record -> one branch unit with the loss on every assistant turn."""

    tokenizer: object
    max_seq_len: int
    path: str
    fmt: str = "auto"
    stats: UnitStats = field(default_factory=UnitStats)
    carry: list[int] = field(default_factory=list)  # unused (no packing); kept for a uniform state
    checks: RecordChecks = field(default_factory=RecordChecks)

    def __call__(self, rec: dict, line: int) -> list[dict]:
        self.stats.records += 1
        messages = normalize_conversation(rec, self.fmt, path=self.path, line=line)
        turns = conversation_branches(self.tokenizer, messages, path=self.path, line=line)
        full_text = turns[-1][0]
        ids = self.tokenizer(full_text, add_special_tokens=False)["input_ids"]
        mask = [0] * len(ids)
        for text, offset in turns:
            turn_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            end = len(turn_ids)
            if ids[:end] != turn_ids:
                raise DataError("an earlier turn does not tokenise as a prefix of the whole conversation",
                                path=self.path, line=line)
            mask[offset:end] = [1] * (end - offset)
        if len(ids) > self.max_seq_len:
            if self.checks.strict:
                raise DataError(f"the conversation is {len(ids)} tokens long, more than max_seq_len="
                                f"{self.max_seq_len}; it would be cut (--strict_data)", path=self.path, line=line)
            self.stats.truncated += 1
            self.stats.truncated_tokens += len(ids) - self.max_seq_len
            ids, mask = ids[: self.max_seq_len], mask[: self.max_seq_len]
        if sum(mask[1:]) == 0:
            raise DataError(f"no assistant token within max_seq_len={self.max_seq_len}", path=self.path, line=line)
        self.stats.units += 1
        return [{"input_ids": ids, "answer_offset": 0, "time_offset": 0, "loss_mask": mask,
                 **self.unit_extras(full_text, len(ids))}]

    def unit_extras(self, text: str, n_tokens: int) -> dict:
        """Extra per-token fields of the unit made from `text` (its first `n_tokens` tokens are kept), e.g. a
        `loss_weight` (parallel_data/reasoning.py); none here."""
        return {}

    def flush(self) -> list[dict]:
        return []


class _ParallelDataset:
    """Common part: a record source plus a record -> units builder."""

    def __init__(self, source, builder_factory, strict_data: bool = False):
        self.source = source
        self._builder_factory = builder_factory
        self.strict_data = strict_data
        self.scan = None  # the pre-pass result (`parallel_data.prepass.scan_records`), once it has run
        self.unit_cache = None  # tokenised units on disk (`parallel_data.unit_cache.open_unit_cache`)

    def new_builder(self, *, warn: bool | None = None):
        """A fresh record -> units builder; it logs data warnings itself unless a pre-pass reported them.
        With a unit cache, the units come from the cache (the records are not tokenised again)."""
        checks = RecordChecks(strict=self.strict_data, warn=self.scan is None if warn is None else warn)
        if self.unit_cache is not None:
            return self.unit_cache.builder(checks)
        builder = self._builder_factory()
        builder.checks = checks
        return builder

    def iter_epoch_units(self, builder, cursor: Cursor, stream: int, num_streams: int) -> Iterator[list[dict]]:
        """Units per record of the cursor's epoch (a list per record, so callers can checkpoint per record)."""
        for rec, line in self.source.iter_epoch(cursor, stream, num_streams):
            yield builder(rec, line)

    def iter_units(self, records) -> Iterator[dict]:
        builder = self.new_builder()
        for rec, line in records:
            yield from builder(rec, line)
        yield from builder.flush()

    def val_units(self) -> Iterator[dict]:
        """Held-out units in a fixed order (identical on every rank)."""
        return self.iter_units(self.source.iter_val())

    def all_units(self) -> Iterator[dict]:
        """Every unit in file order (evaluation of a whole file)."""
        return self.iter_units(self.source.iter_all())

    chunk_quota: int | None = None  # total units per epoch over all streams (packing), None = no limit

    def unit_quota(self, stream: int, num_streams: int) -> int | None:
        """Units stream `stream` may produce per epoch (packing with --max-samples), None = unlimited."""
        q = self.chunk_quota
        if q is None:
            return None
        return q // num_streams + (1 if stream < q % num_streams else 0)


def make_source(*, data_path: str | None, hf_dataset: str | None, hf_subset: str | None = None,
                hf_split: str = "train", val_samples: int = 0, max_samples: int | None = None, seed: int = 0,
                shuffle: bool = True, streaming: bool = True):
    if hf_dataset:
        return HubSource(hf_dataset, hf_subset, hf_split, val_samples=val_samples, max_samples=max_samples,
                         streaming=streaming)
    if not data_path:
        raise ValueError("give --data_path (a local JSONL file) or --hf-dataset")
    if not Path(data_path).exists():
        raise FileNotFoundError(f"data file {data_path} does not exist (build the bundled demo data with "
                                "`python scripts/build_demo_data.py`)")
    check_input_file(data_path, "data file")
    return LocalJsonlSource(data_path, seed=seed, shuffle=shuffle, val_samples=val_samples, max_samples=max_samples)


class ParallelPretrainDataset(_ParallelDataset):
    """Pretraining units from a local JSONL file or a Hugging Face dataset (see the module docstring)."""

    def __init__(self, tokenizer, *, data_path: str | None = None, hf_dataset: str | None = None,
                 hf_subset: str | None = None, hf_split: str = "train", text_column: str | None = None,
                 max_samples: int | None = None, chunk_length: int | None = None, max_seq_len: int = 512,
                 val_samples: int = 0, seed: int = 0, shuffle: bool = True, strict_data: bool = False,
                 streaming: bool = True):
        # with packing, --max-samples counts chunks (rows are read until the chunks are there)
        source = make_source(data_path=data_path, hf_dataset=hf_dataset, hf_subset=hf_subset, hf_split=hf_split,
                             val_samples=val_samples, max_samples=None if chunk_length else max_samples, seed=seed,
                             shuffle=shuffle, streaming=streaming)
        self.chunk_quota = max_samples if chunk_length else None
        if hf_dataset and text_column is None and not chunk_length:
            cols = getattr(source.dataset, "column_names", None) or []
            text_column = resolve_text_column(cols, None, path=hf_dataset) if cols else None
        if chunk_length is not None and chunk_length < 1:
            raise ValueError(f"--chunk-length must be positive, got {chunk_length}")
        name = hf_dataset or data_path
        self.settings = {"kind": "pretrain", "max_seq_len": max_seq_len, "text_column": text_column,
                         "chunk_length": chunk_length, "eos": getattr(tokenizer, "eos_token_id", None)}
        self.tokenizer = tokenizer
        super().__init__(source, lambda: PretrainUnits(tokenizer, max_seq_len, name, text_column, chunk_length),
                         strict_data)


class ParallelSFTDataset(_ParallelDataset):
    """SFT units: one branch per conversation, loss on every assistant turn (see the module docstring)."""

    def __init__(self, tokenizer, *, data_path: str | None = None, hf_dataset: str | None = None,
                 hf_subset: str | None = None, hf_split: str = "train", max_samples: int | None = None,
                 max_seq_len: int = 512, val_samples: int = 0, seed: int = 0, fmt: str = "auto",
                 shuffle: bool = True, strict_data: bool = False, streaming: bool = True):
        source = make_source(data_path=data_path, hf_dataset=hf_dataset, hf_subset=hf_subset, hf_split=hf_split,
                             val_samples=val_samples, max_samples=max_samples, seed=seed, shuffle=shuffle,
                             streaming=streaming)
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("SFT needs a tokenizer with a chat template (the repo tokenizer in model/ has one)")
        name = hf_dataset or data_path
        self.settings = {"kind": "sft", "max_seq_len": max_seq_len, "fmt": fmt}
        self.tokenizer = tokenizer
        super().__init__(source, lambda: SFTUnits(tokenizer, max_seq_len, name, fmt), strict_data)
