"""Columnar layouts: interleave a shared context and several branches into one token sequence.

Input samples: ``{"main": str | token ids, "branches": [str | token ids | {"text" | "content" |
"input_ids", "answer_offset", "time_offset", "loss_mask", "loss_weight"}]}`` (a sample-level
``"input_ids"`` replaces main). ``loss_mask`` (one 0/1 per branch token) marks which tokens are trained
as targets, e.g. every assistant turn of a conversation; ``answer_offset`` trains the tokens from that
index on; ``loss_weight`` (one float per branch token, default 1) weights each token's loss when it is
a target (`BatchLayout.label_weights`, e.g. the tag tokens of a reasoning trace).
``branch_slot`` places a branch at coordinate ``slot * branch_stride`` instead of its position in the
list (slot 0 belongs to the main): training with random slots teaches the model coordinates beyond the
number of branches it sees per sample (see `random_branch_slots` in parallel_data).

Per sample, the main (shared context, branch id 0, branch coordinate 0) takes times 0..M-1. Branch
k (ids 1..n) takes branch coordinate ``k * branch_stride`` when a main exists and ``(k-1) *
branch_stride`` otherwise, and times starting at M (``align_to="left"``) or so that every branch ends
in the same column (``"right"``), plus an optional per-branch ``time_offset`` and an optional random
offset in [0, len] drawn from a seeded generator. Tokens are then ordered time-major (time, then
branch id), which is the flat order of the sequence. Worked example in docs/POSITION_ENCODING.md.

Everything after tokenisation is vectorised: no per-token Python loop. Truncation is explicit
(`pad_to` pads and truncates, `max_tokens` only truncates): the earliest tokens in flat order are
kept, i.e. every branch loses its tail; a branch that would lose all of its tokens is an error, and
the number of dropped tokens is counted per sample.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, fields

import torch

from parallel.names import ALIGNMENTS


@dataclass
class BatchLayout:
    """A padded batch of interleaved samples. Shapes: B samples, T tokens, NB = max branch id + 1.

    The `[B, NB]` summaries are indexed by branch id (column 0 = the main) and describe every branch
    of every sample, so no per-sample Python structure is needed (the seed's per-sample
    `LayoutMetadata` is derived from them in `parallel.seed_compat`).
    """

    input_ids: torch.Tensor  # [B, T]
    token_mask: torch.Tensor  # [B, T] bool, True = real token
    flat_index: torch.Tensor  # [B, T] index among the sample's tokens, 0..T-1 (pads included)
    pos2d: torch.Tensor  # [B, T, 2] (branch coordinate, time); (0, 0) on pads
    time_ids: torch.Tensor  # [B, T] time, -1 on pads
    branch_ids: torch.Tensor  # [B, T] 0 main, 1..n branches, -1 pads
    labels: torch.Tensor  # [B, T] next token of the same branch; -100 on main, prompts, last tokens, pads
    branch_counts: torch.Tensor  # [B] number of branches (main excluded)
    branch_last_index: torch.Tensor  # [B, NB] flat index of each branch's last kept token, -1 if absent
    branch_start_time: torch.Tensor  # [B, NB] time of each branch's first token, -1 if absent
    branch_next_time: torch.Tensor  # [B, NB] time after each branch's last token, -1 if absent
    branch_coord: torch.Tensor  # [B, NB] branch coordinate, -1 if absent
    branch_length: torch.Tensor  # [B, NB] tokens kept, 0 if absent
    branch_answer_offset: torch.Tensor  # [B, NB] branch-local index where targets start (main: its length)
    truncated_tokens: torch.Tensor  # [B] tokens dropped by pad_to / max_tokens
    pad_id: int = 0
    label_weights: torch.Tensor | None = None  # [B, T] float: loss weight of each label (0 where none); None
    # when no branch has a loss_weight (every target weighs 1)

    def to(self, device) -> BatchLayout:
        kw = {f.name: (getattr(self, f.name).to(device) if isinstance(getattr(self, f.name), torch.Tensor)
                       else getattr(self, f.name)) for f in fields(self)}
        return BatchLayout(**kw)

    def position_ids(self) -> torch.Tensor:
        """`[B, T, 3]` positions for a forward without cache: (branch coordinate, time, flat index)."""
        return torch.cat([self.pos2d, self.flat_index[..., None]], dim=-1)

    @property
    def num_truncated(self) -> int:
        return int(self.truncated_tokens.sum())

    @property
    def metadata(self) -> list:
        """Seed compatibility: the seed's per-sample `LayoutMetadata` (see `parallel.seed_compat`)."""
        from parallel.seed_compat import layout_metadata

        return layout_metadata(self)


def resolve_pad_id(tokenizer) -> int:
    """pad id, else eos id, else 0; an id of 0 is a valid pad id (checked against None, not falsiness)."""
    for name in ("pad_token_id", "eos_token_id"):
        v = getattr(tokenizer, name, None) if tokenizer is not None else None
        if v is not None:
            return int(v)
    return 0


def _as_ids(value) -> list | None:
    """Token ids as a Python list (checked once for the whole batch, by dtype), or None for text."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    return None


def _parse_sample(i: int, sample) -> tuple[object, list[tuple]]:
    """-> (main or None, [(branch text/ids, answer_offset, time_offset, loss_mask, branch_slot, loss_weight)])."""
    if not isinstance(sample, dict):
        raise ValueError(f"sample {i}: expected a dict with 'branches', got {type(sample).__name__}")
    branches = sample.get("branches")
    if not isinstance(branches, (list, tuple)) or not branches:
        raise ValueError(f"sample {i}: field 'branches' must be a non-empty list")
    main = sample.get("input_ids", sample.get("main"))
    if main is not None and not isinstance(main, (str, list, tuple, torch.Tensor)):
        raise ValueError(f"sample {i}: field 'main' must be a string or token ids")
    out = []
    for k, br in enumerate(branches):
        where = f"sample {i} branch {k}"
        ans, toff, lmask, slot, lweight = 0, 0, None, None, None
        if isinstance(br, dict):
            if "input_ids" in br:
                content = br["input_ids"]
            elif "text" in br:
                content = br["text"]
            elif "content" in br:
                content = br["content"]
            else:
                raise ValueError(f"{where}: needs one of 'text', 'content' or 'input_ids'")
            ans = br.get("answer_offset", 0) or 0
            toff = br.get("time_offset", 0) or 0
            if not isinstance(ans, int) or ans < 0:
                raise ValueError(f"{where}: field 'answer_offset' must be a non-negative integer, got {ans!r}")
            if not isinstance(toff, int) or toff < 0:
                raise ValueError(f"{where}: field 'time_offset' must be a non-negative integer, got {toff!r}")
            slot = br.get("branch_slot")
            if slot is not None and (isinstance(slot, bool) or not isinstance(slot, int) or slot < 0):
                raise ValueError(f"{where}: field 'branch_slot' must be a non-negative integer, got {slot!r}")
            lmask = br.get("loss_mask")
            if lmask is not None and not isinstance(lmask, (list, tuple, torch.Tensor)):
                raise ValueError(f"{where}: field 'loss_mask' must be a list of 0/1 per token")
            lweight = br.get("loss_weight")
            if lweight is not None and not isinstance(lweight, (list, tuple, torch.Tensor)):
                raise ValueError(f"{where}: field 'loss_weight' must be a list of one number per token")
        else:
            content = br
        if not isinstance(content, (str, list, tuple, torch.Tensor)):
            raise ValueError(f"{where}: expected text or token ids, got {type(content).__name__}")
        out.append((content, ans, toff, lmask, slot, lweight))
    return main, out


@contextlib.contextmanager
def _single_thread():
    """The layout's tensor ops are tiny (one element per token): splitting them across OpenMP threads
    costs more than it saves (2x slower at 2 threads, far worse on a busy machine)."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def build_flat_linear_layout(tokenizer, samples, device=None, pad_to: int | None = None, branch_stride: int = 128,
                             align_to: str = "left", random_time_offset: bool = False, *,
                             max_tokens: int | None = None, generator: torch.Generator | None = None) -> BatchLayout:
    """Lay out a batch of samples time-major. `[B]` samples -> `BatchLayout` of `[B, T]` tensors.

    `pad_to` pads every row to exactly that length (truncating longer rows); `max_tokens` caps rows
    without padding (rows are padded to the batch maximum). Random time offsets come from
    `generator` (or torch's global RNG, which the training engine seeds per rank). The seed's
    signature, with its `interleave_branches` argument, is `parallel.seed_compat.build_flat_linear_layout`.
    """
    with _single_thread():
        layout = _build(tokenizer, samples, pad_to, branch_stride, align_to, random_time_offset, max_tokens,
                        generator)
    return layout.to(device) if device is not None else layout


@dataclass
class _Segments:
    """Every main and branch of a batch as one *segment*, in sample order (main first)."""

    sample: list[int]  # sample index of each segment
    bid: list[int]  # branch id: 0 = main, 1..n = branches
    answer: list[int]  # answer_offset (-1 for a main)
    time_offset: list[int]
    slot: list[int]  # branch slot (coordinate = slot * branch_stride)
    loss_mask: list  # per segment: one 0/1 per token, or None
    loss_weight: list  # per segment: one float per token, or None
    ids: list[list[int]]  # token ids

    def where(self, j: int) -> str:
        return "the main" if self.bid[j] == 0 else f"branch {self.bid[j] - 1}"


def _collect_segments(tokenizer, samples) -> _Segments:
    """Parse the samples, check branch slots, and tokenise every string in one call."""
    seg = _Segments([], [], [], [], [], [], [], [])
    contents = []
    for i, s in enumerate(samples):
        main, branches = _parse_sample(i, s)
        has_main = main is not None and len(main) > 0
        if has_main:
            seg.sample.append(i), seg.bid.append(0), seg.answer.append(-1), seg.time_offset.append(0)
            contents.append(main), seg.loss_mask.append(None), seg.slot.append(0), seg.loss_weight.append(None)
        for k, (content, ans, toff, lmask, slot, lweight) in enumerate(branches):
            seg.sample.append(i), seg.bid.append(k + 1), seg.answer.append(ans), seg.time_offset.append(toff)
            contents.append(content), seg.loss_mask.append(lmask), seg.loss_weight.append(lweight)
            if slot is not None and has_main and slot == 0:
                raise ValueError(f"sample {i} branch {k}: branch_slot 0 belongs to the main")
            seg.slot.append((k + 1 if has_main else k) if slot is None else slot)
        slots = seg.slot[len(seg.slot) - len(branches):]
        if len(set(slots)) != len(slots):
            raise ValueError(f"sample {i}: two branches share a branch_slot ({slots})")
    texts = [c for c in contents if isinstance(c, str)]
    if texts:
        if tokenizer is None:
            raise ValueError("text inputs need a tokenizer")
        encoded = iter(tokenizer(texts, add_special_tokens=False)["input_ids"])
    for j, c in enumerate(contents):
        ids = next(encoded) if isinstance(c, str) else _as_ids(c)
        if not ids:
            raise ValueError(f"sample {seg.sample[j]} {seg.where(j).removeprefix('the ')}: empty (no tokens)")
        for name, values in (("loss_mask", seg.loss_mask[j]), ("loss_weight", seg.loss_weight[j])):
            if values is not None and len(values) != len(ids):
                raise ValueError(f"sample {seg.sample[j]} branch {seg.bid[j] - 1}: {name} has {len(values)} entries "
                                 f"for {len(ids)} tokens")
        seg.ids.append(ids)
    return seg


def _start_times(seg: _Segments, seg_len, seg_sample, is_main, B: int, align_to: str, random_time_offset: bool,
                 generator) -> torch.Tensor:
    """`[S]` time of each segment's first token: after the main, aligned, plus the offsets."""
    main_len = torch.zeros(B, dtype=torch.long).index_add_(0, seg_sample[is_main], seg_len[is_main])
    start = torch.where(is_main, 0, main_len[seg_sample])
    if align_to == "right":
        max_b = torch.zeros(B, dtype=torch.long).scatter_reduce_(0, seg_sample, torch.where(is_main, 0, seg_len),
                                                                 reduce="amax")
        start = start + torch.where(is_main, 0, max_b[seg_sample] - seg_len)
    start = start + torch.tensor(seg.time_offset, dtype=torch.long)
    if random_time_offset:
        r = torch.rand(len(seg.ids), generator=generator)
        start = start + torch.where(is_main, 0, (r * (seg_len + 1).float()).long().clamp_max(seg_len))
    return start


def _flat_ids(seg: _Segments) -> torch.Tensor:
    """`[N]` every token id of the batch, segment after segment."""
    try:  # one conversion for the batch; the resulting dtype tells whether every id was an integer
        ids = torch.tensor(list(itertools.chain.from_iterable(seg.ids)))
    except (TypeError, ValueError, RuntimeError):
        ids = None
    if ids is None or ids.dim() != 1 or ids.dtype != torch.long:
        raise ValueError("token ids must be flat lists of integers (check the samples' 'input_ids' / 'main')")
    return ids


def _token_labels(seg: _Segments, ids, tok_seg, tok_order, tok_bid, kept_len, seg_answer) -> torch.Tensor:
    """`[N]` the target of each token: the next token of the same branch, from the answer offset on,
    where the loss_mask allows, never on the main; -100 elsewhere."""
    nxt = tok_order + 1
    lab_ok = (nxt < kept_len[tok_seg]) & (nxt >= seg_answer[tok_seg]) & (tok_bid > 0)
    if any(m is not None for m in seg.loss_mask):
        trained = torch.cat([torch.as_tensor(m, dtype=torch.bool) if m is not None
                             else torch.ones(len(x), dtype=torch.bool) for m, x in zip(seg.loss_mask, seg.ids)])
        lab_ok &= torch.cat([trained[1:], trained.new_zeros(1)])  # the target (next token) must be trained
    ids_next = torch.cat([ids[1:], ids.new_zeros(1)])
    return torch.where(lab_ok, ids_next, torch.full_like(ids, -100))


def _label_weights(seg: _Segments, labels: torch.Tensor) -> torch.Tensor | None:
    """`[N]` the loss weight of each token's target (the next token's `loss_weight`, 1 by default; 0 where
    there is no target), or None when no segment has weights."""
    if all(w is None for w in seg.loss_weight):
        return None
    w = torch.cat([torch.as_tensor(w, dtype=torch.float32) if w is not None else torch.ones(len(x))
                   for w, x in zip(seg.loss_weight, seg.ids)])
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError("loss_weight values must be finite and non-negative")
    return torch.where(labels != -100, torch.cat([w[1:], w.new_zeros(1)]), w.new_zeros(()))


def _token_cap(pad_to, max_tokens) -> int | None:
    """The most tokens a sample may keep: the smaller of `pad_to` and `max_tokens` (None: no limit)."""
    cap = pad_to if pad_to else None
    if max_tokens:
        cap = min(cap, max_tokens) if cap else max_tokens
    return cap


def _time_major_rank(tok_sample, tok_time, tok_bid, nb: int, B: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`[N]` each token's flat index in its sample in time-major order (time, then branch id), and `[B]` the
    token count of each sample."""
    N = tok_sample.numel()
    perm = torch.argsort((tok_sample * (int(tok_time.max()) + 1) + tok_time) * nb + tok_bid)
    counts = torch.bincount(tok_sample, minlength=B)
    rank = torch.empty(N, dtype=torch.long)
    rank[perm] = torch.arange(N) - (torch.cumsum(counts, 0) - counts)[tok_sample[perm]]
    return rank, counts


def _kept_tokens(seg: _Segments, rank, counts, tok_seg, cap, S: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncation (explicit, counted, never a whole branch): `[N]` which tokens stay and `[S]` the kept length
    of each segment."""
    keep = rank < cap if cap else torch.ones(rank.numel(), dtype=torch.bool)
    kept_len = torch.bincount(tok_seg[keep], minlength=S)
    if bool((kept_len == 0).any()):
        j = int(torch.nonzero(kept_len == 0)[0])
        raise ValueError(f"sample {seg.sample[j]}: a limit of {cap} tokens per sample would remove {seg.where(j)} "
                         f"entirely ({int(counts[seg.sample[j]])} tokens in the sample); raise the limit (max_tokens / "
                         "pad_to; --max_total_tokens on the command line) or shorten the inputs")
    return keep, kept_len


def _check_layout_args(samples, branch_stride: int, align_to: str) -> None:
    if align_to not in ALIGNMENTS:
        raise ValueError(f"align_to must be one of {ALIGNMENTS}, got {align_to!r}")
    if branch_stride < 1:
        raise ValueError(f"branch_stride must be >= 1, got {branch_stride}")
    if not samples:
        raise ValueError("no samples to lay out")


def _build(tokenizer, samples, pad_to, branch_stride, align_to, random_time_offset, max_tokens,
           generator) -> BatchLayout:
    _check_layout_args(samples, branch_stride, align_to)

    # 1. segments (main + branches), tokenised; 2. their start times and coordinates
    seg = _collect_segments(tokenizer, samples)
    B, S = len(samples), len(seg.ids)
    seg_len = torch.tensor([len(x) for x in seg.ids], dtype=torch.long)
    seg_sample = torch.tensor(seg.sample, dtype=torch.long)
    seg_bid = torch.tensor(seg.bid, dtype=torch.long)
    is_main = seg_bid == 0
    seg_answer = torch.where(is_main, seg_len, torch.minimum(torch.tensor(seg.answer), seg_len))
    start = _start_times(seg, seg_len, seg_sample, is_main, B, align_to, random_time_offset, generator)
    coord = torch.tensor(seg.slot, dtype=torch.long) * branch_stride

    # 3. per-token arrays and flat indices; 4. truncation
    ids = _flat_ids(seg)
    N = ids.numel()
    tok_seg = torch.repeat_interleave(torch.arange(S), seg_len)
    tok_order = torch.arange(N) - (torch.cumsum(seg_len, 0) - seg_len)[tok_seg]
    tok_time, tok_sample, tok_bid = start[tok_seg] + tok_order, seg_sample[tok_seg], seg_bid[tok_seg]
    nb = int(seg_bid.max()) + 1
    rank, counts = _time_major_rank(tok_sample, tok_time, tok_bid, nb, B)
    keep, kept_len = _kept_tokens(seg, rank, counts, tok_seg, _token_cap(pad_to, max_tokens), S)
    kept_count = torch.bincount(tok_sample[keep], minlength=B)
    T = int(pad_to) if pad_to else int(kept_count.max())

    # 5. labels; 6. scatter into padded [B, T] tensors
    tok_labels = _token_labels(seg, ids, tok_seg, tok_order, tok_bid, kept_len, seg_answer)
    tok_weights = _label_weights(seg, tok_labels)
    pad_id = resolve_pad_id(tokenizer)
    dst = (tok_sample * T + rank)[keep]

    def padded(values: torch.Tensor, fill: int) -> torch.Tensor:
        out = torch.full((B * T,), fill, dtype=values.dtype)
        out[dst] = values[keep]
        return out.view(B, T)

    time_ids = padded(tok_time, -1)
    pos2d = torch.stack([padded(coord[tok_seg], 0), padded(tok_time, 0)], dim=-1)

    # 7. per-branch summaries [B, NB], indexed by branch id
    seg_key = seg_sample * nb + seg_bid  # one entry per segment (sample, branch id)
    kept_key = (tok_sample * nb + tok_bid)[keep]
    last_index = torch.full((B * nb,), -1, dtype=torch.long).scatter_reduce_(0, kept_key, rank[keep], reduce="amax")
    last_time = torch.full((B * nb,), -2, dtype=torch.long).scatter_reduce_(0, kept_key, tok_time[keep],
                                                                            reduce="amax")

    def per_branch(values: torch.Tensor, fill: int) -> torch.Tensor:
        out = torch.full((B * nb,), fill, dtype=torch.long)
        out[seg_key] = values
        return out.view(B, nb)

    return BatchLayout(
        input_ids=padded(ids, pad_id), token_mask=time_ids >= 0, flat_index=torch.arange(T).expand(B, T).contiguous(),
        pos2d=pos2d, time_ids=time_ids, branch_ids=padded(tok_bid, -1), labels=padded(tok_labels, -100),
        branch_counts=torch.bincount(seg_sample[~is_main], minlength=B),
        branch_last_index=last_index.view(B, nb), branch_start_time=per_branch(start, -1),
        branch_next_time=(last_time + 1).clamp_min(-1).view(B, nb), branch_coord=per_branch(coord, -1),
        branch_length=per_branch(kept_len, 0), branch_answer_offset=per_branch(seg_answer, 0),
        truncated_tokens=counts - kept_count, pad_id=pad_id,
        label_weights=None if tok_weights is None else padded(tok_weights, 0))
