"""2D rotary position embedding: every token rotates by (branch coordinate, time).

Two schemes (`rope_2d_scheme`), both documented with a worked example in docs/POSITION_ENCODING.md.
With F = head_dim / 2 rotary pairs, inverse frequencies f_i and a position (b, t, n) = (branch
coordinate, time, flat sequence index), the rotation angle of pair i is:

* ``additive`` (default): angle_i = t * f_i + [i in S] * b * f_i. Every pair rotates by time, the
  selected pairs S additionally by the branch coordinate. Two tokens of the same branch see exactly
  standard RoPE, so a single-branch input reproduces the unpatched model bit for bit. S holds
  K = round(F * ratio) pairs spread evenly over the spectrum (pair 0, the fastest, to pair F-1, the
  slowest), so every ratio gets sharp high-frequency branch pairs as well as smooth low-frequency
  ones (with only the lowest frequencies, as in ``reference``, a low ratio leaves the model almost
  blind to the branch).
* ``reference``: bit for bit the seed (the original public ParallelMind). S is the K lowest-frequency pairs
  (K = round(F * ratio), at least 1 when ratio > 0); inside S, even local indices rotate by the
  branch coordinate and odd ones by time; every other pair rotates by the flat index n.

Ratio 0 means plain 1D RoPE in both schemes (by time in `additive`, by the flat index in `reference`).

Positions reach the module through the standard `position_ids` argument: `[B, T]` (plain 1D
positions: branch 0, time = flat = the value), `[B, T, 2]` (`pos2d`; flat = arange(T), correct for a
forward without cache) or `[B, T, 3]` (`pos2d` plus the flat index). Pair indices are 0-based here
(pair 0 = highest frequency). The seed's 1-based pair indices and its `set_rope_pos2d` side channel
live in `parallel.seed_compat`.
"""

from __future__ import annotations

import torch
from torch import nn

ROPE_2D_SCHEMES = ("additive", "reference")

def check_rope_scheme(scheme: str) -> str:
    if scheme not in ROPE_2D_SCHEMES:
        raise ValueError(f"unknown rope_2d_scheme {scheme!r}; expected one of {', '.join(ROPE_2D_SCHEMES)}")
    return scheme


def num_branch_pairs(num_pairs: int, ratio: float) -> int:
    """K = round(F * ratio), at least 1 when ratio > 0, 0 when ratio == 0."""
    if not 0.0 <= float(ratio) <= 1.0:
        raise ValueError(f"rope_2d_ratio must be in [0, 1], got {ratio}")
    if ratio == 0:
        return 0
    return max(1, min(num_pairs, round(num_pairs * float(ratio))))


def select_pairs(num_pairs: int, ratio: float, scheme: str = "additive") -> list[int]:
    """0-based indices of the selected rotary pairs (pair 0 = highest frequency)."""
    check_rope_scheme(scheme)
    k = num_branch_pairs(num_pairs, ratio)
    if k == 0:
        return []
    if scheme == "reference":
        return list(range(num_pairs - k, num_pairs))
    if k == 1:
        return [0]
    # evenly spread, both ends included; the step is >= 1, so rounding never repeats an index
    return [round(i * (num_pairs - 1) / (k - 1)) for i in range(k)]


def head_dim_of(model_or_head_dim) -> int:
    """The attention head size of a model (or a config), or the int itself."""
    if isinstance(model_or_head_dim, int):
        return model_or_head_dim
    cfg = getattr(model_or_head_dim, "config", model_or_head_dim)
    hd = getattr(cfg, "head_dim", None)
    if hd:
        return int(hd)
    return int(cfg.hidden_size // cfg.num_attention_heads)


def pair_coefficients(inv_freq: torch.Tensor, pairs: list[int] | tuple[int, ...],
                      scheme: str) -> torch.Tensor:
    """`[3, F]` per-pair multipliers of (branch, time, flat): angle = b*c[0] + t*c[1] + n*c[2].

    `pairs` are 0-based.
    """
    check_rope_scheme(scheme)
    f = inv_freq.numel()
    for i in pairs:
        if not 0 <= i < f:
            raise ValueError(f"rotary pair index {i} out of range for {f} pairs")
    order = sorted(pairs)
    inv = inv_freq.detach().float()
    zero = torch.zeros_like(inv)
    sel = torch.tensor([i in set(order) for i in range(f)], dtype=torch.bool, device=inv.device)
    if scheme == "additive":
        return torch.stack([torch.where(sel, inv, zero), inv, zero])
    local = {p: k for k, p in enumerate(order)}
    is_branch = torch.tensor([i in local and local[i] % 2 == 0 for i in range(f)], device=inv.device)
    is_time = torch.tensor([i in local and local[i] % 2 == 1 for i in range(f)], device=inv.device)
    return torch.stack([torch.where(is_branch, inv, zero), torch.where(is_time, inv, zero),
                        torch.where(sel, zero, inv)])


def positions_3d(position_ids: torch.Tensor, past_length: int = 0) -> torch.Tensor:
    """Normalise `[B, T]`, `[B, T, 2]` or `[B, T, 3]` positions to `[B, T, 3]` (branch, time, flat).

    For `[B, T, 2]` the flat index is past_length + arange(T): the index over the padded row in a
    forward without cache, the history length + k when decoding (what the seed used in both cases).
    """
    if position_ids.dim() == 2:
        p = position_ids
        return torch.stack([torch.zeros_like(p), p, p], dim=-1)
    if position_ids.dim() == 3 and position_ids.shape[-1] == 3:
        return position_ids
    if position_ids.dim() == 3 and position_ids.shape[-1] == 2:
        B, T, _ = position_ids.shape
        flat = torch.arange(past_length, past_length + T, device=position_ids.device,
                            dtype=position_ids.dtype).expand(B, T)
        return torch.cat([position_ids, flat[..., None]], dim=-1)
    raise ValueError(f"position_ids must be [B, T], [B, T, 2] or [B, T, 3]; got shape {tuple(position_ids.shape)}")


class Interleaved2DRoPE(nn.Module):
    """Rotary module returning `(cos, sin)` of shape `[B, T, head_dim]` for 2D positions.

    A drop-in replacement for a Hugging Face model-level rotary module (same `forward(x, position_ids)`
    signature, rotate-half layout) and MiniMind's own rotary module. It has no persistent buffers, so
    state dicts are unchanged by patching.
    """

    def __init__(self, inv_freq: torch.Tensor, *, pairs: list[int] | tuple[int, ...] | None = None,
                 ratio: float | None = None, scheme: str = "additive", attention_scaling: float = 1.0):
        """`pairs`: 0-based selected pairs; without it they follow from `ratio` (`select_pairs`)."""
        super().__init__()
        check_rope_scheme(scheme)
        f = inv_freq.numel()
        if pairs is None:
            pairs = select_pairs(f, 0.0 if ratio is None else ratio, scheme)
        self.scheme = scheme
        self.pairs = tuple(int(i) for i in pairs)  # 0-based
        self.attention_scaling = float(attention_scaling)
        self.register_buffer("inv_freq", inv_freq.detach().clone().float(), persistent=False)
        self.register_buffer("coefficients", pair_coefficients(inv_freq, self.pairs, scheme), persistent=False)

    def extra_repr(self) -> str:
        return f"scheme={self.scheme}, num_pairs={self.inv_freq.numel()}, pairs={list(self.pairs)}"

    @torch.no_grad()
    def reset_buffers(self, inv_freq: torch.Tensor) -> None:
        """Recompute the (non-persistent) buffers, e.g. after transformers materialised them from meta."""
        inv = inv_freq.to(self.inv_freq.device, torch.float)
        self.inv_freq.copy_(inv)
        self.coefficients.copy_(pair_coefficients(inv, self.pairs, self.scheme))

    def angles(self, pos3: torch.Tensor) -> torch.Tensor:
        """`[B, T, 3]` positions -> `[B, T, F]` rotation angles (float32)."""
        c = self.coefficients.to(pos3.device)
        p = pos3.float()
        # three broadcast products rather than a matmul: a zero coefficient contributes exactly 0.0,
        # so one-branch input reproduces plain RoPE bit for bit
        return p[..., 0:1] * c[0] + p[..., 1:2] * c[1] + p[..., 2:3] * c[2]

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, past_length: int = 0):
        """`position_ids` `[B, T]`, `[B, T, 2]` or `[B, T, 3]` -> (cos, sin), each `[B, T, head_dim]` in x's dtype."""
        pos3 = positions_3d(position_ids, past_length)
        emb = self.angles(pos3)
        emb = torch.cat((emb, emb), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(x.dtype), sin.to(x.dtype)


# --- patching Hugging Face models ------------------------------------------------------------------

_HOLDER_ATTRS = ("language_model", "model", "base_model", "module", "wrapped_model", "encoder")
_REFUSED_ROPE_TYPES = ("dynamic", "longrope")


def find_rotary_holder(model: nn.Module) -> nn.Module:
    """Breadth-first search for the module holding the model-level `rotary_emb`."""
    seen, queue = set(), [model]
    while queue:
        m = queue.pop(0)
        if id(m) in seen:
            continue
        seen.add(id(m))
        if isinstance(getattr(m, "rotary_emb", None), nn.Module):
            return m
        for name in _HOLDER_ATTRS:
            child = getattr(m, name, None)
            if isinstance(child, nn.Module):
                queue.append(child)
        get_base = getattr(m, "get_base_model", None)
        if callable(get_base):
            try:
                queue.append(get_base())
            except Exception:  # noqa: BLE001 - a wrapper without a base model is just not a holder
                pass
    raise ValueError(
        f"{type(model).__name__} has no model-level `rotary_emb` module; 2D RoPE patching supports models whose "
        "rotary embedding is computed once per forward (Llama, Qwen2, Qwen3, Mistral, ...)")


def _check_patchable(model: nn.Module, holder: nn.Module, rotary: nn.Module) -> None:
    rope_type = str(getattr(rotary, "rope_type", "default"))
    cfg = getattr(model, "config", None)
    params = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if isinstance(params, dict) and "full_attention" in params:
        params = params["full_attention"]
    cfg_type = str(params.get("rope_type", params.get("type", "default"))) if isinstance(params, dict) else "default"
    for t in (rope_type, cfg_type):
        if any(r in t for r in _REFUSED_ROPE_TYPES):
            raise ValueError(f"{type(model).__name__} uses dynamic rotary scaling ({t!r}); its frequencies change "
                             "with the sequence length, which 2D RoPE cannot reproduce. Use a model with static RoPE.")
    if isinstance(params, dict) and params.get("mrope_section") is not None:
        raise ValueError(f"{type(model).__name__} uses multimodal M-RoPE, which 2D RoPE patching does not support")
    inv = getattr(rotary, "inv_freq", None)
    if not isinstance(inv, torch.Tensor):
        raise ValueError(f"{type(rotary).__name__} has no inv_freq buffer; cannot patch it with 2D RoPE")
    if cfg is not None and getattr(cfg, "num_attention_heads", None):
        hd = head_dim_of(cfg)
        if inv.numel() * 2 != hd:
            raise ValueError(f"{type(model).__name__} applies rotary to {inv.numel() * 2} of {hd} head dims "
                             "(partial rotary); 2D RoPE patching needs full-head rotary")
    for name, sub in holder.named_modules():
        if name and name.endswith("rotary_emb") and sub is not rotary and "." in name:
            raise ValueError(f"{type(model).__name__} has a per-layer rotary module ({name}); 2D RoPE patching "
                             "supports model-level rotary embeddings only")


def patch_model_with_interleaved_2d_rope(model: nn.Module, *, pairs: list[int] | tuple[int, ...] | None = None,
                                         ratio: float | None = None, scheme: str = "additive",
                                         branch_stride: int = 128) -> Interleaved2DRoPE:
    """Replace a model's rotary module with `Interleaved2DRoPE`; returns the new module.

    Give the 0-based `pairs` or a `ratio` (the seed's positional 1-based pair indices are
    `parallel.seed_compat.patch_model_with_interleaved_2d_rope`). Settings are recorded in
    `model.config.parallelmind`, so a saved config says how to re-patch.
    """
    holder = find_rotary_holder(model)
    old = holder.rotary_emb
    if isinstance(old, Interleaved2DRoPE):
        inv, scaling = old.inv_freq, old.attention_scaling
    else:
        _check_patchable(model, holder, old)
        inv, scaling = old.inv_freq, float(getattr(old, "attention_scaling", 1.0))
    if pairs is None and ratio is None:
        raise ValueError("give pairs or ratio")
    new = Interleaved2DRoPE(inv, pairs=pairs, ratio=ratio, scheme=scheme, attention_scaling=scaling)
    new.to(inv.device)
    holder.rotary_emb = new
    cfg = getattr(model, "config", None)
    if cfg is not None:
        f = inv.numel()
        sel = new.pairs
        cfg.parallelmind = {
            "rope_2d_scheme": scheme,
            "rope_2d_ratio": float(ratio) if ratio is not None else len(sel) / f,
            "pair_indices": [i + 1 for i in sel],  # 1-based, numbered as the seed numbers pairs
            "branch_stride": int(branch_stride),
        }
    return new


def get_rotary(model: nn.Module) -> Interleaved2DRoPE:
    rot = find_rotary_holder(model).rotary_emb
    if not isinstance(rot, Interleaved2DRoPE):
        raise ValueError(f"{type(model).__name__} is not patched with 2D RoPE; call "
                         "patch_model_with_interleaved_2d_rope first")
    return rot
