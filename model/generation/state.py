"""Decoding state: one `BranchState` per branch (Python side) and one `DecodeBatch` (the tensors).

The running batch holds one row per sample and `width` branch places per row. Every per-branch
tensor is flat, `[B * width]`, indexed by the **flat branch index** `f = row * width + k` (k = the
branch's index in its sample); places beyond a sample's branch count are invalid. Rows leave the
batch (`select_rows`) when their sample is finished or cancelled and join it (`extend`) when new
samples are prefilled; the KV cache and the record of what it holds (`hist_time`, `hist_branch`)
move with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from model.generation.text import IncrementalDecoder, find_stop, held_back
from model.kv_cache import GrowingCache
from parallel.sampling import SamplingTensors


@dataclass(eq=False, slots=True)
class BranchState:
    """One branch's decoding state on the Python side: its tokens, its text, why it finished."""

    sample: int  # id of the sample in its session
    branch: int  # index of the branch in its sample
    max_new: int  # token limit
    eos: frozenset[int]
    stops: tuple[str, ...] = ()
    decoder: IncrementalDecoder | None = None  # set when text is streamed or stop strings are checked
    keep_logits: bool = False
    generator: torch.Generator | None = None  # the branch's own random stream (sampled branches)
    prompt_ids: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)  # generated, EOS excluded, a stop string's tokens included
    finish: str | None = None  # "eos" | "stop" | "length" | "cancelled"
    stop_at: int = -1  # index in decoder.text where the stop string starts
    emitted: int = 0  # characters of decoder.text already streamed
    logits: list[torch.Tensor] = field(default_factory=list)  # [V] raw logits that sampled each token

    @property
    def finished(self) -> bool:
        return self.finish is not None

    @property
    def remaining(self) -> int:
        return self.max_new - len(self.token_ids)

    def accept(self, token: int, logits: torch.Tensor) -> str:
        """Record one sampled token; -> the text that became final ("" while it may begin a stop string)."""
        if self.keep_logits:
            self.logits.append(logits.cpu())
        if token in self.eos:
            self.finish = "eos"
            return self._release() if self.decoder is not None else ""
        self.token_ids.append(token)
        if self.decoder is None:
            if len(self.token_ids) >= self.max_new:
                self.finish = "length"
            return ""
        text = self._advance_text(self.decoder.push(token))
        if self.finish is None and len(self.token_ids) >= self.max_new:
            self.finish = "length"
        if self.finish is not None:
            text += self._release()
        return text

    def cancel(self) -> None:
        if self.finish is None:
            self.finish = "cancelled"

    def _advance_text(self, delta: str) -> str:
        """Check the stop strings in the new text; -> the text that is now safe to stream."""
        text, stops = self.decoder.text, self.stops
        if stops and delta:
            longest = max(len(s) for s in stops)
            at = find_stop(text, max(0, len(text) - len(delta) - longest + 1), stops)
            if at >= 0:
                self.finish, self.stop_at = "stop", at
                return ""  # _release hands out text[emitted:at]
        end = len(text) - held_back(text, stops) if stops else len(text)
        if end <= self.emitted:
            return ""
        piece, self.emitted = text[self.emitted:end], end
        return piece

    def _release(self) -> str:
        """At the finish: the text held back so far (up to the stop string, if one was found)."""
        if self.finish != "stop":
            self.decoder.flush()
        end = self.stop_at if self.finish == "stop" else len(self.decoder.text)
        piece = self.decoder.text[self.emitted:end]
        self.emitted = max(self.emitted, end)
        return piece

    def final_text(self, tokenizer) -> str:
        """The whole generation as text, cut before the stop string."""
        if tokenizer is None:
            return ""
        text = tokenizer.decode(self.token_ids, skip_special_tokens=True)
        if self.finish == "stop":
            at = find_stop(text, 0, self.stops)
            text = text[:at] if at >= 0 else self.decoder.text[:self.stop_at]
        return text


# Per-branch tensors of a DecodeBatch and the value of an empty branch place.
_BRANCH_FILL = {"valid": False, "active": False, "coord": 0, "gen_start": -1, "first_time": 0, "next_time": -1,
                "last_tok": 0}
_ROW_FIELDS = ("n_real", "sync", "isolated")


@dataclass(eq=False)
class DecodeBatch:
    """The running batch's tensors (see the module docstring). F = B * width."""

    width: int  # branch places per row
    samples: list[int]  # [B] sample id of each row
    branches: list[BranchState | None]  # [F]
    valid: torch.Tensor  # [F] bool: the place holds a branch
    active: torch.Tensor  # [F] bool: the branch still generates
    coord: torch.Tensor  # [F] branch coordinate
    gen_start: torch.Tensor  # [F] time of the branch's first generated token
    first_time: torch.Tensor  # [F] time of the branch's first prompt token
    next_time: torch.Tensor  # [F] the time the branch feeds next
    last_tok: torch.Tensor  # [F] last sampled token
    prompt: torch.Tensor  # [F, Lp] prompt token ids by time - first_time
    params: SamplingTensors  # [F]
    seen: torch.Tensor | None  # [F, V] bool, tokens seen (prompt + generated); only with a repetition penalty
    n_real: torch.Tensor  # [B] real tokens fed so far: the next flat index of the row
    sync: torch.Tensor  # [B] bool: the row decodes time-synchronously (one time column per step)
    isolated: torch.Tensor  # [B] bool: the row's mask rule is "isolated" (else "columnar")
    cache: GrowingCache  # [B, H, L, D] per layer
    hist_time: torch.Tensor  # [B, cap] time of every cached token, -1 on pads
    hist_branch: torch.Tensor  # [B, cap] branch id of every cached token, -1 on pads
    length: int  # cached tokens per row (pads included)
    pad_id: int = 0

    @property
    def rows(self) -> int:
        return len(self.samples)

    def mask_rule(self) -> str | torch.Tensor:
        """"columnar" or "isolated" when every row has that rule, else the `[B]` isolated flags."""
        iso = self.isolated
        if bool(iso.all()):
            return "isolated"
        return "columnar" if not bool(iso.any()) else iso

    def select_rows(self, keep: torch.Tensor) -> None:
        """Keep rows `keep` (`[B']` long), in that order: tensors, cache and history alike."""
        w = self.width
        f = (keep[:, None] * w + torch.arange(w, device=keep.device)[None, :]).reshape(-1)
        for name in _BRANCH_FILL:
            setattr(self, name, getattr(self, name)[f])
        self.prompt, self.params = self.prompt[f], self.params[f]
        self.seen = self.seen[f] if self.seen is not None else None
        for name in _ROW_FIELDS:
            setattr(self, name, getattr(self, name)[keep])
        keep_l, f_l = keep.tolist(), f.tolist()
        self.samples = [self.samples[r] for r in keep_l]
        self.branches = [self.branches[i] for i in f_l]
        self.cache.batch_select_indices(keep)
        self.hist_time, self.hist_branch = self.hist_time[keep], self.hist_branch[keep]

    def extend(self, other: DecodeBatch) -> None:
        """Append the rows of `other` (newly prefilled samples); widths and lengths are padded to match."""
        w = max(self.width, other.width)
        self._widen(w)
        other._widen(w)
        for name in _BRANCH_FILL:
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))
        self.prompt = _cat_padded([self.prompt, other.prompt], 0)
        self.params = SamplingTensors.cat([self.params, other.params])
        if self.seen is not None or other.seen is not None:
            V = (self.seen if self.seen is not None else other.seen).shape[1]
            self.seen = torch.cat([s if s is not None else torch.zeros((b.rows * w, V), dtype=torch.bool,
                                                                        device=b.valid.device)
                                   for s, b in ((self.seen, self), (other.seen, other))])
        for name in _ROW_FIELDS:
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))
        self.samples += other.samples
        self.branches += other.branches
        length = max(self.length, other.length)
        self.cache.extend_rows(other.cache)
        self.hist_time = _cat_padded([self.hist_time, other.hist_time], -1)
        self.hist_branch = _cat_padded([self.hist_branch, other.hist_branch], -1)
        self.length = length

    def _widen(self, width: int) -> None:
        """Give every row `width` branch places (the new places are empty)."""
        if width == self.width:
            return
        B, w, extra = self.rows, self.width, width - self.width

        def pad(t: torch.Tensor, value) -> torch.Tensor:
            t2 = t.view(B, w, *t.shape[1:])
            filler = t2.new_full((B, extra, *t.shape[1:]), value)
            return torch.cat([t2, filler], dim=1).reshape(B * width, *t.shape[1:])
        for name, value in _BRANCH_FILL.items():
            setattr(self, name, pad(getattr(self, name), value if name != "last_tok" else self.pad_id))
        self.prompt = pad(self.prompt, 0)
        self.seen = pad(self.seen, False) if self.seen is not None else None
        defaults = SamplingTensors.default(B * extra, self.valid.device)
        self.params = SamplingTensors(**{
            f.name: pad_rows(getattr(self.params, f.name), getattr(defaults, f.name), B, w, extra)
            for f in fields(SamplingTensors)})
        self.branches = [b for r in range(B) for b in self.branches[r * w:(r + 1) * w] + [None] * extra]
        self.width = width


def pad_rows(t: torch.Tensor, filler: torch.Tensor, B: int, w: int, extra: int) -> torch.Tensor:
    """`[B * w]` -> `[B * (w + extra)]`, each row followed by `extra` entries of `filler` (`[B * extra]`)."""
    return torch.cat([t.view(B, w), filler.view(B, extra)], dim=1).reshape(-1)


def _cat_padded(ts: list[torch.Tensor], value) -> torch.Tensor:
    """Concatenate `[n_i, L_i]` tensors along dim 0, padding dim 1 to the longest with `value`."""
    L = max(t.shape[1] for t in ts)
    return torch.cat([t if t.shape[1] == L else torch.cat([t, t.new_full((t.shape[0], L - t.shape[1]), value)], 1)
                      for t in ts])


def prompt_by_time(input_ids: torch.Tensor, branch_ids: torch.Tensor, time_ids: torch.Tensor,
                   width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Layout `[B, T]` tensors -> (`[B * width, Lp]` prompt ids indexed by time - start, `[B * width]` start times)."""
    B, T = input_ids.shape
    own = branch_ids > 0
    row = torch.arange(B, device=time_ids.device)[:, None].expand(B, T)
    f = (row * width + branch_ids - 1)[own]
    big = torch.iinfo(torch.long).max
    start = torch.full((B * width,), big, dtype=torch.long, device=time_ids.device).scatter_reduce_(
        0, f, time_ids[own], reduce="amin")
    start = torch.where(start == big, 0, start)
    off = time_ids[own] - start[f]
    mat = torch.zeros((B * width, int(off.max()) + 1 if off.numel() else 1), dtype=torch.long,
                      device=time_ids.device)
    mat[f, off] = input_ids[own]
    return mat, start


def prompt_seen(input_ids: torch.Tensor, branch_ids: torch.Tensor, width: int, V: int) -> torch.Tensor:
    """`[B * width, V]` bool: the tokens of each branch's prompt, its sample's main included."""
    B, T = input_ids.shape
    row = torch.arange(B, device=input_ids.device)[:, None].expand(B, T)
    seen = torch.zeros((B * width, V), dtype=torch.bool, device=input_ids.device)
    own = (branch_ids > 0) & (input_ids < V)
    seen[(row * width + branch_ids - 1)[own], input_ids[own]] = True
    main = (branch_ids == 0) & (input_ids < V)
    if bool(main.any()):  # every branch of the row sees the main
        f = row[main][:, None] * width + torch.arange(width, device=input_ids.device)[None, :]
        seen[f.reshape(-1), input_ids[main][:, None].expand(-1, width).reshape(-1)] = True
    return seen
