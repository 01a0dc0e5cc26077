"""Resume state next to each checkpoint: optimizer, scaler, schedule position, RNG and data position.

`{out_dir}/{stem}.pth` is the self-contained model checkpoint (model/checkpoint.py);
`{out_dir}/{stem}_resume.pth` holds everything else needed to continue the loss trajectory exactly.
Both load with `torch.load(weights_only=True)` and are written atomically, model first, so a crash
between the two writes leaves a resume state that names an older step: that is detected on load.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import atomic_torch_save

RESUME_FORMAT = "parallelmind-resume-v1"


def capture_rng() -> dict:
    st = np.random.get_state()
    out = {"python": random.getstate(), "numpy": [st[0], st[1].tolist(), int(st[2]), int(st[3]), float(st[4])],
           "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(st: dict) -> None:
    version, internal, gauss = st["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def resume_path(out_dir: str | Path, stem: str) -> Path:
    return Path(out_dir) / f"{stem}_resume.pth"


def save_resume_state(path: str | Path, state: dict) -> None:
    atomic_torch_save({"format": RESUME_FORMAT, **state}, path)


def load_resume_state(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"--resume: no resume state at {p} (train without --resume first, with the same --out_dir "
                         "and model size flags)")
    st = torch.load(str(p), map_location="cpu", weights_only=True)
    if not isinstance(st, dict) or st.get("format") != RESUME_FORMAT:
        raise SystemExit(f"--resume: {p} is not a ParallelMind resume state")
    return st
