"""The resume state beside each checkpoint, and the checks a resume makes before it continues.

`{out_dir}/{stem}_resume.pth` holds what the model file does not: the `TrainState` counters,
optimizer and grad-scaler state, every rank's RNG states, every data stream's position, the save id
it pairs with, and the run's *identity*: the data (path, size, modification time, a hash of its
first and last MiB) and every setting that changes the loss trajectory. A resume compares both with
the current run: a difference is an error listing each one, unless `--resume_override KEY` accepts
it (logged). Settings that cannot change the trajectory (logging, saving, devices, workers, ...) are
`RUN_ONLY_SETTINGS`; model-shape flags are checked by the strict checkpoint load instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path

import numpy as np
import torch

from trainer.args import MODEL_DEFAULTS

log = logging.getLogger("parallelmind")

RESUME_FORMAT = "parallelmind-resume-v2"
DATA_KEY = "data"  # the --resume_override key for the data identity
_SAMPLE_BYTES = 2 ** 20

RUN_ONLY_SETTINGS = frozenset({
    "out_dir", "resume", "overwrite", "resume_override", "stop_after_steps", "log_interval", "save_interval",
    "device", "ddp", "local_rank", "num_workers", "offline", "use_wandb", "wandb_project", "wandb_run_name",
    "init_weight", "gradient_checkpointing", "use_flex_attention", "val_interval", "val_interval_samples",
    "val_interval_tokens", "val_branches_per_sample", "val_min_branches_per_sample", "val_max_branches_per_sample",
    "data_path", "hf_dataset",  # compared through the data identity
    "preset",  # the shape flags it fills are checked by the strict checkpoint load
})


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


def read_resume_state(path: str | Path) -> dict:
    p = Path(path)
    try:
        st = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise SystemExit(f"--resume: {p} is not a readable resume state ({type(e).__name__})") from None
    if not isinstance(st, dict) or not str(st.get("format", "")).startswith("parallelmind-resume"):
        raise SystemExit(f"--resume: {p} is not a ParallelMind resume state")
    if st["format"] != RESUME_FORMAT:
        raise SystemExit(f"--resume: {p} is a {st['format']} state without a record of its data and settings; "
                         "it cannot be checked, so it is not continued (start the run again)")
    return st


def jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))


def trajectory_settings(args, run_only: frozenset[str] = frozenset()) -> dict:
    """Every flag that changes the loss trajectory, as plain values."""
    skip = RUN_ONLY_SETTINGS | run_only | set(MODEL_DEFAULTS)
    return {k: v for k, v in jsonable(vars(args)).items() if k not in skip}


def _sampled_sha256(path: Path, size: int) -> str:
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(_SAMPLE_BYTES))
        if size > 2 * _SAMPLE_BYTES:
            f.seek(size - _SAMPLE_BYTES)
        h.update(f.read(_SAMPLE_BYTES))
    return h.hexdigest()


def data_identity(source) -> dict:
    """What the training data is: a local file by path, size, mtime and sampled hash; a Hub dataset by name."""
    path = getattr(source, "path", None)
    if path is None:
        return {"dataset": str(getattr(source, "name", source))}
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _sampled_sha256(p, st.st_size)}


def _data_differences(saved: dict, now: dict) -> list[str]:
    out = []
    for key in ("dataset", "path", "size"):
        if saved.get(key) != now.get(key):
            out.append(f"{key} {saved.get(key)} -> {now.get(key)}")
    if not out and saved.get("sha256") != now.get("sha256"):
        out.append("content (sha256 of the first and last MiB) differs")
    return out


def check_resume_identity(saved: dict, settings: dict, identity: dict, overrides: list[str]) -> None:
    """Refuse a resume whose settings or data differ from the saved run, except the keys in `overrides`."""
    old = saved["settings"]
    known = set(old) | set(settings) | {DATA_KEY}
    unknown = [k for k in overrides if k not in known]
    if unknown:
        raise SystemExit(f"--resume_override {', '.join(unknown)}: not a setting of this run (use a flag name "
                         f"such as learning_rate, or '{DATA_KEY}' for the training data)")
    diffs = {k: f"{k} {old.get(k)!r} -> {settings.get(k)!r}" for k in sorted(known - {DATA_KEY})
             if old.get(k) != settings.get(k)}
    data = _data_differences(saved["data"], identity)
    if data:
        diffs[DATA_KEY] = f"{DATA_KEY}: " + ", ".join(data)
    elif saved["data"].get("mtime_ns") != identity.get("mtime_ns"):
        log.info("resume: the data file's modification time changed; its size and sampled content did not")
    for key in overrides:
        if key in diffs:
            log.warning("resume: %s (accepted by --resume_override)", diffs.pop(key))
        else:
            log.warning("resume: --resume_override %s given, but it did not change", key)
    if diffs:
        raise SystemExit(f"--resume: this run differs from the saved one: {'; '.join(diffs.values())}. Use the "
                         "saved settings and data, or pass --resume_override KEY for each deliberate change")
