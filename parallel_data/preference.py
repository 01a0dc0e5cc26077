"""Preference pairs (chosen / rejected) as parallel samples: one pair = one sample, the prompt computed once.

API (used by DPO, trainer/train_dpo.py, and the reward model):

    ds = PreferenceDataset(tokenizer, data_path="dataset/dpo_demo.jsonl", max_seq_len=512, val_samples=64)
    sample = pair_sample(tokenizer, chosen_msgs, rejected_msgs)       # {"main", "branches": [chosen, rejected]}
    rows = pair_rows(sample)                                          # the same pair as two plain sequences
    chosen_ids, rejected_ids = pair_sequences(sample)                 # full token ids of each sequence
    key = pair_key(chosen_ids, rejected_ids)                          # 16-byte digest (precomputed tables)

Records (JSONL, one pair per line), both conversational:

* ``{"chosen": [msgs], "rejected": [msgs]}`` (MiniMind / MiniLLM): two whole conversations that end with
  the assistant's response; everything before it is the prompt;
* ``{"prompt": str | [msgs], "chosen": str | [msgs], "rejected": str | [msgs]}`` (TRL): a string prompt is
  one user turn, a string response one assistant turn.

Messages are ``{"role", "content"}`` (or ShareGPT ``{"from", "value"}``), rendered with the tokenizer's
chat template (`parallel_data.formats.conversation_branches`). Only the final assistant turn is a target.

Layout ``shared`` (default): the main is the longest common token prefix of the two prompts except its
last token; each branch repeats that last prompt token (so the first response token has a target) and
continues with its response: ``{"main": prompt[:-1], "branches": [{"input_ids": prompt[-1:] + response,
"answer_offset": 1}, ...]}``. Branch 1 is chosen, branch 2 rejected. With the isolated mask and every
branch at coordinate 0 (`shared_prompt_positions`), each branch sees exactly what it would see as its
own sequence, so log-probabilities equal those of two separate sequences while the prompt is computed
once. Layout ``separate``: no main, each branch the whole sequence (the reference layout).

A sequence longer than ``max_seq_len`` loses its response tail (counted; an error with ``strict_data``);
a prompt that leaves no response token within ``max_seq_len`` is a `DataError` naming file and line.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from parallel.names import PAIR_LAYOUTS
from parallel_data.formats import conversation_branches, normalize_conversation
from parallel_data.io import DataError, describe_type
from parallel_data.parallel_dataset import RecordChecks, UnitStats, _ParallelDataset, make_source

CHOSEN, REJECTED = 1, 2  # branch ids of the two responses in a pair sample


def _messages(value, key: str, role: str, path, line) -> list[dict]:
    """A record field as standard messages: a string is one `role` turn, a list is a conversation."""
    if isinstance(value, str):
        value = [{"role": role, "content": value}]
    if not isinstance(value, list) or not value:
        raise DataError(f"expected a non-empty list of messages or a string, got {describe_type(value)}",
                        path=path, line=line, field=key)
    try:
        return normalize_conversation({"conversations": value}, "auto", path=path, line=line) if role == "assistant" \
            else _prompt_messages(value, path, line)
    except DataError as e:
        raise DataError(e.reason, path=path, line=line,
                        field=(e.field or key).replace("conversations", key, 1)) from None


def _prompt_messages(value: list, path, line) -> list[dict]:
    """Prompt turns (no assistant turn needed): normalised with a stand-in reply that is dropped again."""
    msgs = normalize_conversation({"conversations": [*value, {"role": "assistant", "content": "-"}]}, "auto",
                                  path=path, line=line)
    return msgs[:-1]


def record_conversations(rec: dict, path=None, line=None) -> tuple[list[dict], list[dict]]:
    """-> (chosen conversation, rejected conversation), each ending with the assistant's response."""
    if not isinstance(rec, dict):
        raise DataError(f"expected a JSON object, got {describe_type(rec)}", path=path, line=line)
    for key in ("chosen", "rejected"):
        if key not in rec:
            raise DataError("missing (a preference record has 'chosen' and 'rejected')", path=path, line=line,
                            field=key)
    prompt = _messages(rec["prompt"], "prompt", "user", path, line) if "prompt" in rec else []
    out = []
    for key in ("chosen", "rejected"):
        conv = prompt + _messages(rec[key], key, "assistant", path, line)
        if conv[-1]["role"] != "assistant":
            raise DataError("the last message must be the assistant's response", path=path, line=line,
                            field=f"{key}[{len(rec[key]) - 1 if isinstance(rec[key], list) else 0}]")
        out.append(conv)
    return out[0], out[1]


def _tokens(tokenizer, conv: list[dict], key: str, path, line) -> tuple[list[int], int]:
    """-> (token ids of the whole conversation, number of prompt tokens)."""
    try:
        text, n = conversation_branches(tokenizer, conv, path=path, line=line)[-1]
    except DataError as e:
        raise DataError(e.reason, path=path, line=line, field=key) from None
    return tokenizer(text, add_special_tokens=False)["input_ids"], n


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def layout_pair(chosen: list[int], n_chosen: int, rejected: list[int], n_rejected: int,
                layout: str = "shared") -> dict:
    """Two token sequences and their prompt lengths -> one pair sample (see the module docstring)."""
    if layout not in PAIR_LAYOUTS:
        raise ValueError(f"pair layout must be one of {PAIR_LAYOUTS}, got {layout!r}")
    m = 0
    if layout == "shared":
        m = min(_common_prefix(chosen[:n_chosen], rejected[:n_rejected]), n_chosen - 1, n_rejected - 1)
    return {"main": chosen[:m], "branches": [{"input_ids": chosen[m:], "answer_offset": n_chosen - m},
                                             {"input_ids": rejected[m:], "answer_offset": n_rejected - m}]}


def pair_sample(tokenizer, chosen: list[dict], rejected: list[dict], layout: str = "shared") -> dict:
    """Two normalised conversations -> one pair sample (no length limit)."""
    c, nc = _tokens(tokenizer, chosen, "chosen", None, None)
    r, nr = _tokens(tokenizer, rejected, "rejected", None, None)
    return layout_pair(c, nc, r, nr, layout)


def pair_sequences(sample: dict) -> tuple[list[int], list[int]]:
    """(chosen ids, rejected ids): the two whole sequences of a pair sample, in either layout."""
    main = list(sample.get("main") or [])
    c, r = sample["branches"]
    return main + list(c["input_ids"]), main + list(r["input_ids"])


def pair_rows(sample: dict) -> list[dict]:
    """The pair as two samples of one branch each (chosen first): separate sequences, for reference checks."""
    m = len(sample.get("main") or [])
    return [{"branches": [{"input_ids": ids, "answer_offset": b["answer_offset"] + m}]}
            for ids, b in zip(pair_sequences(sample), sample["branches"])]


def pair_key(chosen: list[int], rejected: list[int]) -> bytes:
    """A 16-byte digest of a pair's two sequences (the same for every layout of the pair)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(torch.tensor(chosen, dtype=torch.int64).numpy().tobytes())
    h.update(b"|")
    h.update(torch.tensor(rejected, dtype=torch.int64).numpy().tobytes())
    return h.digest()


def shared_prompt_positions(batch: dict) -> dict:
    """Every branch at branch coordinate 0 and the flat index equal to time: each branch of a pair batch then
    has the positions of its own plain sequence (under every 2D RoPE scheme). Returns the batch, updated."""
    pos = batch["position_ids"].clone()
    pos[..., 0] = 0
    pos[..., 2] = batch["time_ids"].clamp_min(0)
    batch["position_ids"] = pos
    batch["pos2d"] = pos[..., :2].clone()
    return batch


@dataclass
class PairUnits:
    """Preference record -> one pair sample (the dataset's record -> units builder)."""

    tokenizer: object
    max_seq_len: int
    path: str
    layout: str = "shared"
    stats: UnitStats = field(default_factory=UnitStats)
    carry: list[int] = field(default_factory=list)  # unused (no packing); kept for a uniform state
    checks: RecordChecks = field(default_factory=RecordChecks)

    def _fit(self, ids: list[int], n: int, key: str, line: int) -> list[int]:
        limit = self.max_seq_len
        if n >= limit:
            raise DataError(f"the prompt is {n} tokens long and leaves no response token within max_seq_len={limit}",
                            path=self.path, line=line, field=key)
        if len(ids) <= limit:
            return ids
        if self.checks.strict:
            raise DataError(f"the sequence is {len(ids)} tokens long, more than max_seq_len={limit}; its response "
                            "would be cut (--strict_data)", path=self.path, line=line, field=key)
        self.stats.truncated += 1
        self.stats.truncated_tokens += len(ids) - limit
        return ids[:limit]

    def __call__(self, rec: dict, line: int) -> list[dict]:
        self.stats.records += 1
        chosen, rejected = record_conversations(rec, self.path, line)
        c, nc = _tokens(self.tokenizer, chosen, "chosen", self.path, line)
        r, nr = _tokens(self.tokenizer, rejected, "rejected", self.path, line)
        c, r = self._fit(c, nc, "chosen", line), self._fit(r, nr, "rejected", line)
        self.stats.units += 1
        return [layout_pair(c, nc, r, nr, self.layout)]

    def flush(self) -> list[dict]:
        return []


class PreferenceDataset(_ParallelDataset):
    """Pair samples from a local JSONL file or a Hugging Face dataset (see the module docstring)."""

    def __init__(self, tokenizer, *, data_path: str | None = None, hf_dataset: str | None = None,
                 hf_subset: str | None = None, hf_split: str = "train", max_samples: int | None = None,
                 max_seq_len: int = 512, val_samples: int = 0, seed: int = 0, layout: str = "shared",
                 shuffle: bool = True, strict_data: bool = False):
        if layout not in PAIR_LAYOUTS:
            raise ValueError(f"pair layout must be one of {PAIR_LAYOUTS}, got {layout!r}")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("preference data needs a tokenizer with a chat template (the repo tokenizer in model/ "
                             "has one)")
        source = make_source(data_path=data_path, hf_dataset=hf_dataset, hf_subset=hf_subset, hf_split=hf_split,
                             val_samples=val_samples, max_samples=max_samples, seed=seed, shuffle=shuffle)
        name = hf_dataset or data_path
        self.settings = {"kind": "preference", "max_seq_len": max_seq_len, "layout": layout}
        self.tokenizer = tokenizer
        super().__init__(source, lambda: PairUnits(tokenizer, max_seq_len, name, layout), strict_data)
