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

from parallel.names import ROPE_2D_SCHEMES


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
# positions at which a rotary module must agree with its replacement before it is swapped
_PROBE_POSITIONS = (0, 1, 2, 3, 5, 8, 13, 21, 100, 1000, 4095)


def model_name(model: nn.Module) -> str:
    """`'llama' (LlamaForCausalLM)`: the config's model type and the class, for error messages."""
    cfg = getattr(model, "config", None)
    mt = getattr(cfg, "model_type", None)
    if mt is None:
        get_base = getattr(model, "get_base_model", None)  # a PEFT wrapper: name the model inside
        if callable(get_base):
            return model_name(get_base())
    return f"{mt!r} ({type(model).__name__})" if mt else type(model).__name__


def _refuse(model: nn.Module, why: str) -> ValueError:
    return ValueError(f"cannot patch model type {model_name(model)} with 2D RoPE: {why}. Patching supports models "
                      "whose rotary embedding is one model-level module with static frequencies and the "
                      "rotate-half layout (Llama, Mistral, Qwen2/2.5, Qwen3, SmolLM, Gemma, Granite, OLMo, ...)")


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
    raise _refuse(model, "it has no model-level `rotary_emb` module (its rotary embedding is computed inside each "
                         "layer, or it has none)")


def _rope_parameters(model: nn.Module, cfg) -> dict:
    """The config's rotary parameters (transformers 5 `rope_parameters`, or v4 `rope_scaling`)."""
    params = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if not isinstance(params, dict):
        return {}
    per_type = {k: v for k, v in params.items() if isinstance(v, dict)}
    if per_type:  # one entry per layer type (full / sliding attention, ...)
        distinct = {repr(sorted(v.items())) for v in per_type.values()}
        if len(distinct) > 1:
            raise _refuse(model, f"its layer types use different rotary settings ({', '.join(per_type)})")
        params = next(iter(per_type.values()))
    return params


def _check_patchable(model: nn.Module, holder: nn.Module, rotary: nn.Module) -> None:
    """Refuse, naming the model type and the reason, any rotary embedding 2D RoPE cannot replace exactly."""
    rope_type = str(getattr(rotary, "rope_type", "default"))
    cfg = getattr(model, "config", None) or getattr(holder, "config", None)
    params = _rope_parameters(model, cfg)
    cfg_type = str(params.get("rope_type", params.get("type", "default")))
    for t in (rope_type, cfg_type):
        if any(r in t for r in _REFUSED_ROPE_TYPES):
            raise _refuse(model, f"it uses dynamic rotary scaling ({t!r}), whose frequencies change with the sequence "
                                 "length, which 2D RoPE cannot reproduce")
    if params.get("mrope_section") is not None:
        raise _refuse(model, "it uses multimodal M-RoPE (3D positions: time, height, width)")
    inv = getattr(rotary, "inv_freq", None)
    if not isinstance(inv, torch.Tensor):
        raise _refuse(model, f"its rotary module {type(rotary).__name__} has no `inv_freq` buffer (e.g. one rotary "
                             "embedding per layer type)")
    if cfg is not None and getattr(cfg, "num_attention_heads", None):
        hd = head_dim_of(cfg)
        if inv.numel() * 2 != hd:
            raise _refuse(model, f"it applies rotary to {inv.numel() * 2} of {hd} head dims (partial rotary)")
    for name, sub in holder.named_modules():
        if sub is not rotary and "rotary" in name.rpartition(".")[2]:
            raise _refuse(model, f"it has a second rotary module ({name}), e.g. a per-layer rotary embedding")


@torch.no_grad()
def _check_standard_rotary(model: nn.Module, old: nn.Module, inv: torch.Tensor, scaling: float) -> None:
    """The old module must return what plain rotate-half RoPE with its `inv_freq` returns (a probe on a
    few 1D positions): this catches interleaved-pair layouts, complex-valued or half-size outputs and
    any other variant the static checks miss, instead of silently changing the model."""
    if inv.device.type == "meta":  # nothing to compute on yet; the static checks have run
        return
    new = Interleaved2DRoPE(inv, ratio=0.0, attention_scaling=scaling).to(inv.device)  # standard 1D RoPE
    pos = torch.tensor([_PROBE_POSITIONS], device=inv.device)
    x = torch.zeros(1, 1, len(_PROBE_POSITIONS), 1, device=inv.device)
    try:
        ref = old(x, pos)
    except Exception as e:  # noqa: BLE001 - any failure means the module is not the standard kind
        raise _refuse(model, f"its rotary module {type(old).__name__} does not take (x, position_ids) "
                             f"({type(e).__name__}: {e})") from None
    got = new(x, pos)
    ok = isinstance(ref, (tuple, list)) and len(ref) == 2 and all(
        isinstance(r, torch.Tensor) and r.shape == g.shape and torch.allclose(r.float(), g.float(), atol=1e-5, rtol=0)
        for r, g in zip(ref, got))
    if not ok:
        raise _refuse(model, f"its rotary module {type(old).__name__} does not return standard rotate-half "
                             "(cos, sin) of shape [B, T, head_dim] (e.g. interleaved rotary pairs)")


def patch_model_with_interleaved_2d_rope(model: nn.Module, *, pairs: list[int] | tuple[int, ...] | None = None,
                                         ratio: float | None = None, scheme: str = "additive",
                                         branch_stride: int = 128, mask_mode: str = "columnar") -> Interleaved2DRoPE:
    """Replace a model's rotary module with `Interleaved2DRoPE`; returns the new module.

    Give the 0-based `pairs` or a `ratio` (the seed's positional 1-based pair indices are
    `parallel.seed_compat.patch_model_with_interleaved_2d_rope`). The settings (scheme, ratio, pair
    indices, branch stride and the attention mask mode the model is trained or run with) are
    recorded in `model.config.parallelmind`, so a saved config, and an adapter saved from the model,
    say how to re-patch (model/rope_settings.py). A model whose rotary embedding 2D RoPE cannot
    replace exactly is refused with a ValueError naming its model type and the reason.
    """
    from parallel.masks import check_mask_mode

    check_mask_mode(mask_mode)
    if int(branch_stride) < 0:
        raise ValueError(f"branch_stride must be >= 0, got {branch_stride}")
    if pairs is None and ratio is None:
        raise ValueError("give pairs or ratio")
    holder = find_rotary_holder(model)
    old = holder.rotary_emb
    if isinstance(old, Interleaved2DRoPE):
        inv, scaling = old.inv_freq, old.attention_scaling
    else:
        _check_patchable(model, holder, old)
        inv, scaling = old.inv_freq, float(getattr(old, "attention_scaling", 1.0))
        _check_standard_rotary(model, old, inv, scaling)
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
            "mask_mode": mask_mode,
        }
    return new


def get_rotary(model: nn.Module) -> Interleaved2DRoPE:
    rot = find_rotary_holder(model).rotary_emb
    if not isinstance(rot, Interleaved2DRoPE):
        raise ValueError(f"{type(model).__name__} is not patched with 2D RoPE; call "
                         "patch_model_with_interleaved_2d_rope first")
    return rot
