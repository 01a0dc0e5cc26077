"""Self-contained MiniMind checkpoints: weights + config + tokenizer in one `.pth`, written atomically.

A checkpoint (`pretrain_512.pth`, `full_sft_512.pth`, ...) is a plain dict that loads with
`torch.load(path, weights_only=True)` (no pickled code):

    {"format": "parallelmind-checkpoint-v1", "model_type": "minimind",
     "config": MiniMindConfig.to_dict(), "model_state_dict": {name: tensor},
     "tokenizer_files": {"tokenizer.json": str, ...} or None, "meta": {...}}

so the file alone is enough to rebuild the model and its tokenizer. Checkpoints written by the
earlier implementation (a bare state dict, or `{"model_state_dict", "vocab_size", ...}` without a
config) load only with an explicit config, and strictly.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

CKPT_FORMAT = "parallelmind-checkpoint-v1"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


def atomic_torch_save(obj, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then os.replace: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def tokenizer_files(tokenizer) -> dict[str, str] | None:
    """The text files of a tokenizer folder, for embedding into a checkpoint."""
    if tokenizer is None:
        return None
    with tempfile.TemporaryDirectory() as d:
        tokenizer.save_pretrained(d)
        return {name: (Path(d) / name).read_text(encoding="utf-8") for name in _TOKENIZER_FILES
                if (Path(d) / name).exists()}


def tokenizer_from_files(files: dict[str, str]):
    from model.tokenizer import load_tokenizer

    with tempfile.TemporaryDirectory() as d:
        for name, text in files.items():
            (Path(d) / name).write_text(text, encoding="utf-8")
        return load_tokenizer(d)


def model_state_for_saving(model, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """CPU copy of the state dict (floating tensors cast to `dtype` if given), unwrapping DDP/compile."""
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    out = {}
    for k, v in inner.state_dict().items():
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v.clone()
    return out


def save_checkpoint(path: str | Path, model, *, tokenizer=None, meta: dict | None = None,
                    dtype: torch.dtype | None = None) -> None:
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    payload = {
        "format": CKPT_FORMAT,
        "model_type": inner.config.model_type,
        "config": inner.config.to_dict(),
        "model_state_dict": model_state_for_saving(inner, dtype),
        "tokenizer_files": tokenizer_files(tokenizer),
        "meta": dict(meta or {}),
    }
    atomic_torch_save(payload, path)


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file safely (weights_only) with a clear error for a missing or foreign file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    try:
        payload = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report any unreadable file the same way
        raise ValueError(f"{p} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{p} does not hold a state dict or a ParallelMind checkpoint")
    return payload


def _config_from(payload: dict, path: str | Path, config):
    from model.model_minimind import MiniMindConfig

    if payload.get("format") == CKPT_FORMAT:
        saved = MiniMindConfig.from_dict(payload["config"])
        return saved
    if str(payload.get("format", "")).startswith("parallelmind-resume"):
        raise ValueError(f"{path} is a training resume state (optimizer, RNG and data position), not a model; load "
                         "the model checkpoint written next to it ({stem}.pth for {stem}_resume.pth)")
    if config is None:
        raise ValueError(f"{path} has no config (it was written by the earlier implementation or is a bare "
                         "state dict); pass the model settings explicitly (--hidden_size, --num_hidden_layers, "
                         "--num_attention_heads, --num_key_value_heads, --use_moe, --pe, --rope_2d_ratio, ...)")
    return config


def state_dict_of(payload: dict) -> dict[str, torch.Tensor]:
    sd = payload.get("model_state_dict", payload)
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                    config=None, overrides: dict | None = None):
    """Rebuild a MiniMind model from a checkpoint alone -> (model in eval mode, payload).

    `overrides` may change inference-time settings that do not affect the weights (mask_mode,
    use_flex_attention, query_chunk_size); anything else that differs is an error, because the
    weights were trained for the saved value.
    """
    from model.model_minimind import MiniMindForCausalLM

    payload = read_checkpoint(path)
    cfg = _config_from(payload, path, config)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in ("mask_mode", "use_flex_attention", "query_chunk_size"):
            saved = getattr(cfg, key, None)
            if saved != value:
                raise ValueError(f"{path} was trained with {key}={saved!r}, but {key}={value!r} was requested; "
                                 "drop the flag (the checkpoint carries its own config)")
        setattr(cfg, key, value)
    cfg.validate_fields()
    model = MiniMindForCausalLM(cfg)
    sd = state_dict_of(payload)
    sd.setdefault("lm_head.weight", sd.get("model.embed_tokens.weight"))
    try:
        result = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatches: report them as a config mismatch, not a torch traceback
        detail = " ".join(str(e).split())[:400]
        raise ValueError(f"{path} does not match the model config: {detail}") from None
    missing = [k for k in result.missing_keys]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise ValueError(f"{path} does not match the model config: missing {missing[:5]}"
                         f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                         f"{'...' if len(unexpected) > 5 else ''}")
    model.tie_weights()
    model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    return model.eval(), payload
