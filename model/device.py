"""Device and dtype names (as given on the command line) to torch objects, with clear errors.

`check_device_name` and `DTYPE_NAMES` need no torch, so parsers can refuse `--device banana` or
`--dtype fp8` before torch is imported. `resolve_device` checks that the device exists on this machine
(`--device cuda` without CUDA, `--device cuda:3` on a 2-GPU node) and raises `ValueError` naming the
flag; `resolve_dtype` gives the dtype weights are loaded in, `autocast_dtype` the autocast dtype a
trainer uses (None: no autocast).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported only when a device or dtype is resolved
    import torch

DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
_DEVICE_RE = re.compile(rf"^({'|'.join(DEVICE_TYPES)})(:\d+)?$")


def check_device_name(name: str) -> str:
    """`name` if it is a device string (`cpu`, `cuda`, `cuda:1`, `mps`, `xpu:0`, or `auto`); else ValueError."""
    if name == "auto" or _DEVICE_RE.match(name):
        return name
    raise ValueError(f"unknown device {name!r}; expected auto, cpu, cuda, cuda:N, mps or xpu")


def canonical_dtype(name: str | None) -> str:
    """'auto' | 'float32' | 'bfloat16' | 'float16' for a dtype name or alias (bf16, fp16, ...); else ValueError."""
    if name is None:
        return "auto"
    name = DTYPE_ALIASES.get(name, name)
    if name not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPE_NAMES)} "
                         f"(or {', '.join(DTYPE_ALIASES)})")
    return name


def _available(kind: str) -> tuple[bool, int]:
    import torch

    if kind == "cuda":
        return torch.cuda.is_available(), torch.cuda.device_count()
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        return bool(mps and mps.is_available()), 1
    if kind == "xpu":
        xpu = getattr(torch, "xpu", None)
        return bool(xpu and xpu.is_available()), xpu.device_count() if xpu and xpu.is_available() else 0
    return True, 1


def resolve_device(name: str | None = None, local_rank: int = 0) -> torch.device:
    """The torch device for `--device` (None / 'auto': cuda:<local_rank> when CUDA is there, else cpu).

    Raises ValueError, naming the flag, for a malformed name or a device this machine does not have.
    """
    import torch

    if name in (None, "", "auto"):
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        check_device_name(name)
    except ValueError as e:
        raise ValueError(f"--device {name}: {e}") from None
    device = torch.device(name)
    ok, count = _available(device.type)
    if not ok:
        raise ValueError(f"--device {name}: {device.type.upper()} is not available on this machine "
                         f"(torch {torch.__version__}); use --device cpu")
    if device.index is not None and device.index >= count:
        raise ValueError(f"--device {name}: this machine has {count} {device.type} device(s) "
                         f"({device.type}:0..{device.type}:{count - 1})")
    return device


def resolve_dtype(name: str | None, device: torch.device | str) -> torch.dtype:
    """The dtype weights are loaded in: `auto` is bfloat16 on CUDA and float32 elsewhere."""
    import torch

    name = canonical_dtype(name)
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return getattr(torch, name)


def autocast_dtype(name: str | None, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for fp32 master weights (None: plain float32, no autocast)."""
    import torch

    dtype = resolve_dtype(name, device)
    return None if dtype == torch.float32 else dtype
