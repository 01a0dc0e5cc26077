"""Self-contained MiniMind checkpoints: weights + config + tokenizer in one `.pth`, written atomically.

A checkpoint (`pretrain_512.pth`, `full_sft_512.pth`, ...) is a plain dict that loads with
`torch.load(path, weights_only=True)` (no pickled code):

    {"format": "parallelmind-checkpoint-v1", "model_type": "minimind",
     "config": MiniMindConfig.to_dict(), "model_state_dict": {name: tensor},
     "tokenizer_files": {"tokenizer.json": str, ...} or None, "meta": {...}}

so the file alone is enough to rebuild the model and its tokenizer. Files without a config (a bare
state dict, or `{"model_state_dict", "vocab_size", ...}` in the original ParallelMind format) load
only with an explicit config, and strictly.

Every file is written to a temporary name in the same folder, fsynced, then renamed over the target
(`atomic_torch_save`), so a crash never leaves half a file. The space is checked before writing, and
a full disk is a `DiskFullError` that names the disk and the space needed (torch itself reports it as
"unexpected pos ..."). `read_checkpoint` + `model_from_payload` let a caller read a file once and
use it for the config, the tokenizer and the weights.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import torch

CKPT_FORMAT = "parallelmind-checkpoint-v1"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")
_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class DiskFullError(OSError):
    """A file did not fit on its disk; the message names the disk, the space needed and the space free."""

    def __init__(self, path: str | Path, needed: int):
        folder = Path(path).parent
        free = free_bytes(folder)
        super().__init__(errno.ENOSPC, f"disk full: writing {path} needs about {_mb(needed)} on {disk_of(folder)}, "
                                       f"which has {_mb(free)} free; free some space or choose another --out_dir")

    def __str__(self) -> str:
        return self.strerror


def _mb(n: int) -> str:
    return f"{n / 2 ** 20:,.1f} MiB"


def free_bytes(folder: str | Path) -> int:
    return shutil.disk_usage(folder).free


def disk_of(folder: str | Path) -> str:
    """'the disk mounted at /data (/dev/sdb1)': the mount point holding `folder`, with its device."""
    p = Path(folder).resolve()
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    device = None
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 1 and parts[1] == str(p):
                    device = parts[0]
    except OSError:
        pass
    return f"the disk mounted at {p}" + (f" ({device})" if device else "")


def payload_nbytes(obj) -> int:
    """Bytes the tensors of a (nested) payload take on disk, plus a little for everything else."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size() + 64
    if isinstance(obj, dict):
        return sum(payload_nbytes(k) + payload_nbytes(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return sum(payload_nbytes(v) for v in obj) + 8
    if isinstance(obj, (str, bytes)):
        return len(obj) + 8
    return 16


def ensure_space(folder: str | Path, needed: int, path: str | Path) -> None:
    """Refuse before writing anything when `needed` bytes (plus 1 MiB of slack) do not fit."""
    if free_bytes(folder) < needed + 2 ** 20:
        raise DiskFullError(path, needed)


class _RecordingWriter:
    """File wrapper that keeps the OSError of a failed write: torch.save reports it as 'unexpected pos'."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def write_torch_file(obj, path: str | Path) -> None:
    """torch.save `obj` to `path` and fsync it; a full disk raises DiskFullError (not torch's zip error)."""
    writer = None
    try:
        with open(path, "wb") as f:
            writer = _RecordingWriter(f)
            torch.save(obj, writer)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as e:
        cause = writer.error if writer is not None and writer.error is not None else e
        if isinstance(cause, OSError) and cause.errno in _NO_SPACE:
            raise DiskFullError(path, payload_nbytes(obj)) from None
        raise


def temp_path_for(path: str | Path) -> Path:
    """A fresh hidden temporary file next to `path` (same disk, so os.replace is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    return Path(tmp)


def fsync_dir(folder: str | Path) -> None:
    """Make renames in `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then os.replace: never a half-written file.

    The space is checked first; a full disk is a DiskFullError naming the disk, and leaves `path` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ensure_space(path.parent, payload_nbytes(obj), path)
    tmp = temp_path_for(path)
    try:
        write_torch_file(obj, tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_folder_atomic(folder: str | Path, write) -> None:
    """Fill a folder through `write(tmp_folder)` under a temporary name, then swap it in: a reader never
    sees a half-written folder, and the previous one is removed only after the new one is in place."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=str(folder.parent)))
    try:
        write(tmp)
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old.{os.getpid()}")
            os.replace(folder, old)
        os.replace(tmp, folder)
        fsync_dir(folder.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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


def model_state_for_saving(model, dtype: torch.dtype | None = None,
                           state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """CPU copy of the state dict (floating tensors cast to `dtype` if given), unwrapping DDP/compile.
    `state_dict`: a full state dict to use instead of the model's own (gathered from FSDP shards)."""
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    out = {}
    for k, v in (inner.state_dict() if state_dict is None else state_dict).items():
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v.clone()
    return out


def checkpoint_payload(model, *, tokenizer=None, meta: dict | None = None,
                       dtype: torch.dtype | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> dict:
    """The self-contained checkpoint dict of the module docstring (weights on CPU; `state_dict`: see
    `model_state_for_saving`)."""
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    return {
        "format": CKPT_FORMAT,
        "model_type": inner.config.model_type,
        "config": inner.config.to_dict(),
        "model_state_dict": model_state_for_saving(inner, dtype, state_dict),
        "tokenizer_files": tokenizer_files(tokenizer),
        "meta": dict(meta or {}),
    }


def save_checkpoint(path: str | Path, model, *, tokenizer=None, meta: dict | None = None,
                    dtype: torch.dtype | None = None) -> None:
    atomic_torch_save(checkpoint_payload(model, tokenizer=tokenizer, meta=meta, dtype=dtype), path)


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
        raise ValueError(f"{path} has no config (it is in the original ParallelMind release's format or is a bare "
                         "state dict); pass the model settings explicitly (--hidden_size, --num_hidden_layers, "
                         "--num_attention_heads, --num_key_value_heads, --use_moe, --pe, --rope_2d_ratio, ...)")
    return config


def state_dict_of(payload: dict) -> dict[str, torch.Tensor]:
    sd = payload.get("model_state_dict", payload)
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                    config=None, overrides: dict | None = None):
    """Rebuild a MiniMind model from a checkpoint file alone -> (model in eval mode, payload)."""
    payload = read_checkpoint(path)
    model = model_from_payload(payload, source=path, device=device, dtype=dtype, config=config, overrides=overrides)
    return model, payload


def model_from_payload(payload: dict, *, source: str | Path, device: str | torch.device = "cpu",
                       dtype: torch.dtype | None = None, config=None, overrides: dict | None = None):
    """Rebuild a MiniMind model from a payload already read by `read_checkpoint` -> model in eval mode.

    `overrides` may change inference-time settings that do not affect the weights (mask_mode,
    use_flex_attention, query_chunk_size); anything else that differs is an error, because the
    weights were trained for the saved value. `source` names the file in error messages.
    """
    from model.model_minimind import MiniMindForCausalLM

    cfg = _config_from(payload, source, config)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in ("mask_mode", "use_flex_attention", "query_chunk_size"):
            saved = getattr(cfg, key, None)
            if saved != value:
                raise ValueError(f"{source} was trained with {key}={saved!r}, but {key}={value!r} was requested; "
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
        raise ValueError(f"{source} does not match the model config: {detail}") from None
    missing = list(result.missing_keys)
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise ValueError(f"{source} does not match the model config: missing {missing[:5]}"
                         f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                         f"{'...' if len(unexpected) > 5 else ''}")
    model.tie_weights()
    model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    return model.eval()
