"""The 2D-RoPE settings that travel with a model or an adapter: read them, check flags against them, re-apply them.

A patched Hugging Face model records its settings in `config.parallelmind` (written by
`patch_model_with_interleaved_2d_rope`, saved in config.json by `save_pretrained`):

    {"rope_2d_scheme": "additive", "rope_2d_ratio": 0.5, "pair_indices": [1, 3, ...],  # 1-based
     "branch_stride": 128, "mask_mode": "columnar"}

An adapter (model/model_lora.py) saves the settings of the model it was trained on, plus the
model type and whether the rotary module was patched at all:

    HF:       {"model_type": "qwen2", "patch_rope": true, <the five settings above>}
    HF plain: {"model_type": "qwen2", "patch_rope": false}
    MiniMind: {"model_type": "minimind", "pe": "rope", "rope_2d_scheme": ..., "rope_2d_ratio": ...,
               "branch_stride": ..., "mask_mode": ...}   (MiniMind's own config fields)

Loading re-applies them (`apply_settings`), so inference never needs the training flags; a flag
given anyway must agree (`check_flags`), and an adapter must match the model it is loaded onto
(`check_model_matches`). Every contradiction is a ValueError naming the flag and the saved value,
except `--branch_stride`: a different stride only changes the branch coordinates the positions are
built with, not what the weights compute, so an explicit value is honoured with a one-line warning
naming the trained one.
"""

from __future__ import annotations

import logging

from torch import nn

from parallel.rope2d import Interleaved2DRoPE, find_rotary_holder, patch_model_with_interleaved_2d_rope, select_pairs

HF_KEYS = ("rope_2d_scheme", "rope_2d_ratio", "pair_indices", "branch_stride", "mask_mode")
MINIMIND_KEYS = ("pe", "rope_2d_scheme", "rope_2d_ratio", "branch_stride", "mask_mode")
FLAG_NAMES = {"rope_2d_scheme": "--rope_2d_scheme", "rope_2d_ratio": "--rope_2d_ratio",
              "branch_stride": "--branch_stride", "mask_mode": "--mask", "pe": "--pe",
              "patch_rope": "--patch_rope/--no_patch_rope", "pair_indices": "pair_indices"}
DEFAULTS = {"rope_2d_scheme": "additive", "rope_2d_ratio": 0.5, "branch_stride": 128, "mask_mode": "columnar"}
log = logging.getLogger("parallelmind")


def unwrap(model: nn.Module) -> nn.Module:
    """The model under DDP / torch.compile / PEFT wrappers (the module that owns `config`)."""
    m = getattr(model, "module", model)
    m = getattr(m, "_orig_mod", m)
    get_base = getattr(m, "get_base_model", None)
    return get_base() if callable(get_base) else m


def _rotary(model: nn.Module):
    try:
        return find_rotary_holder(model).rotary_emb
    except ValueError:
        return None


def is_patched(model: nn.Module) -> bool:
    return isinstance(_rotary(unwrap(model)), Interleaved2DRoPE)


def num_rotary_pairs(model: nn.Module) -> int | None:
    rot = _rotary(unwrap(model))
    inv = getattr(rot, "inv_freq", None)
    return None if inv is None else int(inv.numel())


def settings_of(model: nn.Module) -> dict:
    """The settings a model runs with, in the adapter format above."""
    base = unwrap(model)
    cfg = getattr(base, "config", None)
    mt = getattr(cfg, "model_type", None) or type(base).__name__
    if mt == "minimind":
        return {"model_type": mt, **{k: getattr(cfg, k) for k in MINIMIND_KEYS}}
    saved = getattr(cfg, "parallelmind", None)
    if is_patched(base) and isinstance(saved, dict):
        return {"model_type": mt, "patch_rope": True, **{k: saved[k] for k in HF_KEYS if k in saved}}
    return {"model_type": mt, "patch_rope": False}


def _flag(name: str) -> str:
    return FLAG_NAMES.get(name, "--" + name)


def _ratio_agrees(saved: dict, ratio: float, num_pairs: int | None) -> bool:
    """A ratio flag agrees when it selects the saved pairs (a ratio of 0.3 may select what 0.25 does)."""
    if float(ratio) == float(saved.get("rope_2d_ratio", -1.0)):
        return True
    if num_pairs is None or saved.get("pair_indices") is None:
        return False
    pairs = select_pairs(num_pairs, float(ratio), saved.get("rope_2d_scheme", "additive"))
    return [i + 1 for i in pairs] == list(saved["pair_indices"])


def check_flags(saved: dict, flags: dict, source: str, num_pairs: int | None = None) -> None:
    """Every flag given (not None) must agree with the saved settings; keys absent from `saved` pass.

    Exceptions: `branch_stride 0` (prefix sharing: every branch coordinate 0, i.e. plain causal decoding
    of "main + branch", which needs no training) is accepted on any model, with `--mask isolated`; any
    other `branch_stride` that differs is used with a warning (see the module docstring).
    """
    prefix_sharing = flags.get("branch_stride") == 0
    for name, given in flags.items():
        if given is None or (prefix_sharing and (name == "branch_stride" or (name, given) == ("mask_mode",
                                                                                              "isolated"))):
            continue
        if name == "branch_stride" and "branch_stride" in saved and given != saved["branch_stride"]:
            log.warning("%s was trained with branch_stride=%s; using --branch_stride %s as given (branch "
                        "coordinates the model was not trained with)", source, saved["branch_stride"], given)
            continue
        if name == "patch_rope":
            have = saved.get("patch_rope", True)
            agree = bool(given) == bool(have)
        elif name not in saved:
            continue
        else:
            have = saved[name]
            agree = _ratio_agrees(saved, given, num_pairs) if name == "rope_2d_ratio" else given == have
        if not agree:
            raise ValueError(f"{source} was trained with {name}={have!r}, but {_flag(name)} {given!r} was given; "
                             "drop the flag (the model carries its own settings)")


def check_model_matches(model: nn.Module, saved: dict, source: str) -> None:
    """The settings saved with an adapter against the model it is loaded onto."""
    have = settings_of(model)
    if saved.get("model_type") and saved["model_type"] != have["model_type"]:
        raise ValueError(f"{source} was trained on a model of type {saved['model_type']!r}, but this model is "
                         f"{have['model_type']!r}; load it onto the base model it was trained on")
    if have["model_type"] != "minimind" and bool(saved.get("patch_rope", True)) != have["patch_rope"]:
        raise ValueError(f"{source} was trained {'with' if saved.get('patch_rope', True) else 'without'} 2D RoPE "
                         f"(patch_rope={bool(saved.get('patch_rope', True))}), but the model is "
                         f"{'' if have['patch_rope'] else 'not '}patched")
    for key in MINIMIND_KEYS + HF_KEYS:
        if key in saved and key in have and saved[key] != have[key]:
            if key == "rope_2d_ratio" and "pair_indices" in saved:
                continue  # the pairs decide; the ratio is how they were asked for
            if key == "branch_stride":  # coordinates only (see the module docstring): the model's stride is used
                log.info("%s was trained with branch_stride=%s; the model runs with branch_stride=%s", source,
                         saved[key], have[key])
                continue
            raise ValueError(f"{source} was trained with {key}={saved[key]!r}, but the model has "
                             f"{key}={have[key]!r} ({_flag(key)}); patch the model as it was trained, or load the "
                             "adapter onto a plain base model and let it re-apply its settings")


def apply_settings(model: nn.Module, saved: dict) -> None:
    """Patch an HF model with saved settings (a no-op when they say the model was not patched)."""
    if not saved.get("patch_rope", True) or saved.get("model_type") == "minimind":
        return
    pairs = saved.get("pair_indices")  # 1-based, as config.parallelmind numbers them
    base = unwrap(model)
    patch_model_with_interleaved_2d_rope(
        base, pairs=None if pairs is None else [int(i) - 1 for i in pairs],
        ratio=None if pairs is not None else saved.get("rope_2d_ratio", DEFAULTS["rope_2d_ratio"]),
        scheme=saved.get("rope_2d_scheme", DEFAULTS["rope_2d_scheme"]),
        branch_stride=saved.get("branch_stride", DEFAULTS["branch_stride"]),
        mask_mode=saved.get("mask_mode", DEFAULTS["mask_mode"]))
    if "rope_2d_ratio" in saved:  # keep the ratio as it was asked for (the pairs are what it selected)
        base.config.parallelmind["rope_2d_ratio"] = float(saved["rope_2d_ratio"])


def resolve(saved: dict | None, flags: dict, source: str, num_pairs: int | None) -> dict:
    """Settings to patch a model with: the saved ones (flags checked against them), else the flags, else
    the defaults. Returns the adapter-format dict (with "patch_rope")."""
    saved = dict(saved or {})
    if saved:
        check_flags(saved, flags, source, num_pairs)
    out = {"patch_rope": True if flags.get("patch_rope") is None else bool(flags["patch_rope"])}
    if saved:
        out.update(saved)
        out.setdefault("patch_rope", True)
        if flags.get("branch_stride"):  # an explicit stride wins (check_flags warned); 0 is decided by the caller
            out["branch_stride"] = int(flags["branch_stride"])
    for key, default in DEFAULTS.items():
        if key not in out or out[key] is None:
            out[key] = flags.get(key) if flags.get(key) is not None else default
    return out
