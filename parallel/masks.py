"""Attention visibility for interleaved branches: one predicate, every mask builder.

Two mask modes (`mask_mode`):

* ``columnar`` (the seeds' semantics): a token at time t sees every real token of every branch,
  the main (shared context) included, at time < t, plus itself. It never sees another branch's
  token at the same time, and never a pad. Branches are NOT isolated from each other.
* ``isolated``: a token sees the main and the earlier tokens of its own branch only, which is
  exactly independent decoding of each branch after a shared prefix.

`visible()` is that rule. The dense boolean mask (SDPA), the additive float mask (eager attention),
the FlexAttention BlockMask (CUDA) and the incremental mask for K new tokens against a KV cache are
all built from it, so they cannot disagree. Every builder adds the self-edge, so no row is empty:
a pad query attends only to itself.

Conventions: `time_ids` is -1 on pads; `branch_ids` is 0 for the main, 1..n for branches, -1 on pads.
Builders return `[B, 1, Q, K]` masks where True (or 0.0) means "may attend".
"""

from __future__ import annotations

import torch

from parallel.names import MASK_MODES

# Temporaries of the chunked builders stay below this many elements, so building a 4 x 4096 mask
# costs the mask itself plus a few MB (evaluating the rule over the whole [B, T, T] grid at once
# peaks at 2.3x a float32 mask).
_CHUNK_ELEMENTS = 1 << 21


def check_mask_mode(mode: str) -> str:
    if mode not in MASK_MODES:
        raise ValueError(f"unknown mask mode {mode!r}; expected one of {', '.join(MASK_MODES)}")
    return mode


def visible(q_time: torch.Tensor, q_branch: torch.Tensor | None, k_time: torch.Tensor,
            k_branch: torch.Tensor | None, mode: str = "columnar") -> torch.Tensor:
    """The visibility predicate, without the self-edge; all arguments broadcast against each other.

    A key is visible iff it is real (time >= 0), strictly earlier in time than the query, and, in
    isolated mode, in the query's branch or in the main (branch 0). Pad queries (time -1) see nothing.
    """
    ok = (k_time < q_time) & (k_time >= 0)
    if mode == "isolated":
        if q_branch is None or k_branch is None:
            raise ValueError("the isolated mask needs branch_ids")
        ok &= (k_branch == q_branch) | (k_branch == 0)
    elif mode != "columnar":
        check_mask_mode(mode)
    return ok


def _fill_value(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).min


def build_attention_mask(time_ids: torch.Tensor, branch_ids: torch.Tensor | None = None,
                         mode: str = "columnar", *, dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """Dense mask over one interleaved sequence: `[B, T]` ids -> `[B, 1, T, T]`.

    dtype=torch.bool gives True = attend (for SDPA); a floating dtype gives an additive mask with 0
    where allowed and the dtype's minimum elsewhere (for eager attention, where a boolean mask would
    be silently wrong). Built in row chunks, so the peak is the output plus a few MB.
    """
    check_mask_mode(mode)
    if time_ids.dim() != 2:
        raise ValueError(f"time_ids must be [B, T], got shape {tuple(time_ids.shape)}")
    B, T = time_ids.shape
    out = torch.empty((B, 1, T, T), dtype=dtype, device=time_ids.device)
    rows = max(1, _CHUNK_ELEMENTS // max(1, B * T))
    kt = time_ids[:, None, :]  # [B, 1, T]
    k_real = kt >= 0
    kb = branch_ids[:, None, :] if branch_ids is not None else None
    if mode == "isolated" and kb is None:
        raise ValueError("the isolated mask needs branch_ids")
    k_main = kb == 0 if kb is not None else None
    # The rule is evaluated straight into the output (torch.lt(..., out=)), so the only temporary is one
    # chunk-sized buffer, and only for the isolated rule or a float mask: the peak stays the mask itself.
    tmp = torch.empty((B, min(rows, T), T), dtype=torch.bool, device=time_ids.device) \
        if (mode == "isolated" or dtype != torch.bool) else None
    for s in range(0, T, rows):
        e = min(T, s + rows)
        ok = out[:, 0, s:e] if dtype == torch.bool else tmp[:, : e - s]
        torch.lt(kt, time_ids[:, s:e, None], out=ok)
        ok &= k_real
        if mode == "isolated":
            same = tmp[:, : e - s] if dtype == torch.bool else torch.empty_like(ok)
            torch.eq(kb, branch_ids[:, s:e, None], out=same)
            same |= k_main
            ok &= same
        if dtype != torch.bool:
            out[:, 0, s:e] = 0.0
            out[:, 0, s:e].masked_fill_(~ok, _fill_value(dtype))
    diag = out[:, 0].diagonal(dim1=-2, dim2=-1)
    diag.fill_(True if dtype == torch.bool else 0.0)
    return out


def build_incremental_mask(q_time: torch.Tensor, q_branch: torch.Tensor | None, past_time: torch.Tensor,
                           past_branch: torch.Tensor | None, mode: str = "columnar", *,
                           dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """Mask for K new tokens against a KV cache of L tokens: `[B, K]`, `[B, L]` -> `[B, 1, K, L + K]`.

    The keys are the cached tokens followed by the K new tokens themselves (the order in which a
    KV cache appends them). Pads in either part have time -1 and are visible to nobody.
    """
    check_mask_mode(mode)
    B, K = q_time.shape
    L = past_time.shape[1]
    k_time = torch.cat([past_time, q_time], dim=1)
    k_branch = None
    if mode == "isolated":
        k_branch = torch.cat([past_branch, q_branch], dim=1)
    ok = visible(q_time[:, :, None], q_branch[:, :, None] if q_branch is not None else None,
                 k_time[:, None, :], k_branch[:, None, :] if k_branch is not None else None, mode)
    idx = torch.arange(K, device=q_time.device)
    ok[:, idx, L + idx] = True
    ok = ok[:, None]
    if dtype == torch.bool:
        return ok
    return torch.zeros(ok.shape, dtype=dtype, device=ok.device).masked_fill_(~ok, _fill_value(dtype))


def to_additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean mask (True = attend) -> additive float mask in `dtype`."""
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, _fill_value(dtype))


def build_flex_block_mask(time_ids: torch.Tensor, branch_ids: torch.Tensor | None = None,
                          mode: str = "columnar", *, block_size: int = 128, compile: bool | None = None):
    """FlexAttention BlockMask for the same rule; memory O((T / block_size)^2) when compiled.

    `compile` defaults to True on CUDA (so the predicate is never evaluated over the dense T x T grid)
    and False elsewhere (compilation on CPU takes ~20 s and gains nothing there).
    """
    from torch.nn.attention.flex_attention import create_block_mask

    check_mask_mode(mode)
    B, T = time_ids.shape
    tt = time_ids.contiguous()
    bb = branch_ids.contiguous() if branch_ids is not None else None
    if mode == "isolated" and bb is None:
        raise ValueError("the isolated mask needs branch_ids")

    def mask_mod(b, h, q, kv):
        tq = tt[b, q]
        tk = tt[b, kv]
        ok = (tk < tq) & (tk >= 0)
        if bb is not None and mode == "isolated":
            bq = bb[b, q]
            bk = bb[b, kv]
            ok = ok & ((bk == bq) | (bk == 0))
        return ok | (q == kv)

    if compile is None:
        compile = time_ids.is_cuda
    return create_block_mask(mask_mod, B, None, T, T, device=time_ids.device, BLOCK_SIZE=block_size,
                             _compile=compile)


def query_chunk_plan(mask: torch.Tensor, chunk: int) -> list[tuple[int, int, int]]:
    """Split the queries of a dense `[B, 1|H, Q, K]` mask into chunks with the keys each chunk needs.

    Returns `(q_start, q_end, k_end)` triples: keys at index >= k_end are masked for every query of
    the chunk, so attention for the chunk may use keys[:k_end] only. With time-major layouts this
    skips the upper triangle the way causal attention does, which makes a masked training step as
    fast as plain causal attention. Exact for any mask.
    """
    Q, K = mask.shape[-2], mask.shape[-1]
    plan = []
    for s in range(0, Q, chunk):
        e = min(Q, s + chunk)
        block = mask[..., s:e, :]
        allowed = block if block.dtype == torch.bool else block > _fill_value(block.dtype) / 2
        cols = allowed.reshape(-1, e - s, K).any(dim=1).any(dim=0)
        nz = torch.nonzero(cols)
        k_end = int(nz[-1].item()) + 1 if nz.numel() else 1
        plan.append((s, e, k_end))
    return plan
