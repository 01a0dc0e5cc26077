"""Token sampling for many rows at once (one row = one branch), each row with its own settings.

Pure torch, gpt-fast style: small functions over `[N, V]` logits, no Python loop over rows or over
the token history. Semantics follow Hugging Face's logits processors, so a row behaves exactly as
`model.generate` would with the same settings:

* repetition penalty (CTRL): for tokens already seen in that row, positive logits are divided by
  the penalty and negative ones multiplied (`RepetitionPenaltyLogitsProcessor`);
* temperature, then top-k, then top-p (the order of `generate`), keeping at least one token;
* greedy rows (`do_sample=False` or `temperature == 0`) take the argmax; sampled rows draw with
  `torch.multinomial` from one `torch.Generator`, or each from its own (`generators`), so a seed
  reproduces the outputs.

Usage:

    params = SamplingTensors.from_params([SamplingParams(), SamplingParams(do_sample=True, top_p=0.9)])
    seen = seen_matrix(history_ids, vocab_size)          # [N, V] bool, or update it with mark_seen
    next_ids = sample_next(logits, params, generator, seen=seen)   # [N]
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class SamplingParams:
    """Sampling settings of one branch (or of every branch of a sample)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k filter
    repetition_penalty: float = 1.0
    do_sample: bool = False
    max_new_tokens: int | None = None  # None: the generate() call's max_new_tokens
    seed: int | None = None  # used by the engine when generate() gets no seed

    def __post_init__(self) -> None:
        def bad(msg: str):
            raise ValueError(f"SamplingParams: {msg}")
        if not self.temperature >= 0:
            bad(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            bad(f"top_p must be in (0, 1], got {self.top_p}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            bad(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if not self.repetition_penalty > 0:
            bad(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.max_new_tokens is not None and (not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0):
            bad(f"max_new_tokens must be an integer >= 0 or None, got {self.max_new_tokens!r}")

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0


@dataclass
class SamplingTensors:
    """Per-row settings as `[N]` tensors (the tensorised form of a list of `SamplingParams`).

    Treat as immutable: `all_greedy` / `any_penalty` are computed once from the fields.
    """

    temperature: torch.Tensor  # [N] float, 1.0 on greedy rows (never divides by 0)
    top_p: torch.Tensor  # [N] float
    top_k: torch.Tensor  # [N] long, 0 = off
    repetition_penalty: torch.Tensor  # [N] float
    greedy: torch.Tensor  # [N] bool

    @classmethod
    def from_params(cls, params: list[SamplingParams], device: torch.device | str | None = None) -> SamplingTensors:
        greedy = [p.greedy for p in params]
        return cls(
            temperature=torch.tensor([1.0 if g else float(p.temperature) for p, g in zip(params, greedy)],
                                     dtype=torch.float32, device=device),
            top_p=torch.tensor([float(p.top_p) for p in params], dtype=torch.float32, device=device),
            top_k=torch.tensor([int(p.top_k) for p in params], dtype=torch.long, device=device),
            repetition_penalty=torch.tensor([float(p.repetition_penalty) for p in params], dtype=torch.float32,
                                            device=device),
            greedy=torch.tensor(greedy, dtype=torch.bool, device=device),
        )

    @classmethod
    def default(cls, n: int, device: torch.device | str | None = None) -> SamplingTensors:
        """`n` rows of `SamplingParams()` (greedy, no penalty)."""
        return cls.from_params([SamplingParams()] * n, device)

    @classmethod
    def cat(cls, parts: list[SamplingTensors]) -> SamplingTensors:
        """The rows of every part, in order."""
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def __post_init__(self) -> None:
        # Python flags computed once, so that a decode step does not sync on them (greedy-only batches
        # are the common case and then sampling is one argmax)
        self.all_greedy = bool(self.greedy.all())
        self.any_penalty = bool((self.repetition_penalty != 1.0).any())

    def __getitem__(self, index: torch.Tensor) -> SamplingTensors:
        """Rows `index` (a LongTensor or bool mask) of every field."""
        return SamplingTensors(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def __len__(self) -> int:
        return self.greedy.numel()


def seen_matrix(token_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """`[N, L]` token ids (negative = padding) -> `[N, V]` bool, True where the row contains the token."""
    seen = torch.zeros((token_ids.shape[0], vocab_size), dtype=torch.bool, device=token_ids.device)
    return mark_seen(seen, token_ids)


def mark_seen(seen: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """In place: set `seen[r, token_ids[r, j]]` for `[N]` or `[N, L]` ids; negative ids are ignored."""
    ids = token_ids if token_ids.dim() == 2 else token_ids[:, None]
    ok = (ids >= 0) & (ids < seen.shape[1])
    rows = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(ids)
    seen[rows[ok], ids[ok]] = True
    return seen


def apply_repetition_penalty(logits: torch.Tensor, seen_tokens: torch.Tensor,
                             penalty: torch.Tensor | float) -> torch.Tensor:
    """CTRL penalty: `[N, V]` logits, `[N, V]` bool seen matrix (or `[N, L]` ids), `[N]` penalties -> `[N, V]`."""
    if seen_tokens.dtype != torch.bool:
        seen_tokens = seen_matrix(seen_tokens, logits.shape[-1])
    pen = torch.as_tensor(penalty, dtype=logits.dtype, device=logits.device)
    pen = pen[:, None] if pen.dim() == 1 else pen
    penalised = torch.where(logits < 0, logits * pen, logits / pen)
    return torch.where(seen_tokens, penalised, logits)


def apply_temperature_top_k_top_p(logits: torch.Tensor, params: SamplingTensors) -> torch.Tensor:
    """`[N, V]` logits -> `[N, V]` tempered logits with filtered tokens at -inf (HF order and semantics).

    Greedy rows are left at temperature 1; rows with top_k 0 / top_p 1 are not filtered.
    """
    N, V = logits.shape
    x = logits / params.temperature.to(logits.dtype)[:, None]
    # top-k: remove everything below the k-th largest value (ties with it survive, as in HF)
    k = torch.where(params.top_k > 0, params.top_k.clamp(max=V), V)
    if bool((k < V).any()):
        sorted_desc = torch.sort(x, dim=-1, descending=True).values
        kth = sorted_desc.gather(1, (k - 1)[:, None])
        x = x.masked_fill(x < kth, float("-inf"))
    # top-p over the remaining tokens: drop the low tail whose cumulative mass is <= 1 - top_p
    use_p = params.top_p < 1.0
    if bool(use_p.any()):
        sorted_asc, order = torch.sort(x, dim=-1, descending=False)
        cum = sorted_asc.softmax(dim=-1).cumsum(dim=-1)
        remove = cum <= (1 - params.top_p.to(cum.dtype))[:, None]
        remove[:, -1] = False  # keep at least one token
        remove &= use_p[:, None]
        x = x.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    return x


def sample_next(logits: torch.Tensor, params: SamplingTensors, generator: torch.Generator | None = None, *,
                seen: torch.Tensor | None = None,
                generators: list[torch.Generator | None] | None = None) -> torch.Tensor:
    """`[N, V]` logits -> `[N]` next token ids.

    `seen` (`[N, V]` bool) enables the repetition penalty for rows whose penalty is not 1. Greedy
    rows take the argmax; the others draw from the filtered distribution with `generator`, or, given
    `generators` (one per row), each row with its own: a row's token then depends only on its own
    logits and its own stream, never on the other rows.
    """
    x = logits.float()
    if seen is not None and params.any_penalty:
        x = apply_repetition_penalty(x, seen, params.repetition_penalty)
    out = x.argmax(dim=-1)
    if not params.all_greedy:
        rows = torch.nonzero(~params.greedy).squeeze(1)
        filtered = apply_temperature_top_k_top_p(x[rows], params[rows])
        probs = torch.softmax(filtered, dim=-1)
        if generators is None:
            out[rows] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            picks = [torch.multinomial(probs[i:i + 1], 1, generator=generators[r]) for i, r in enumerate(rows.tolist())]
            out[rows] = torch.cat(picks).view(-1)
    return out
