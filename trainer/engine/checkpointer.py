"""The checkpointer: owns '{out_dir}/{stem}.*', writes the model file and the resume state as a pair.

A stem may name a folder inside out_dir ('lora/lora_identity_512'): every file of the run goes there.

* `claim` (before anything is written): refuses an out_dir holding this stage's outputs (the pair, and
  the stage's exports, `Stage.export_patterns`) unless `--resume` or `--overwrite` (which removes the
  old exports), and takes the run lock ('{stem}.lock', see lock.py).
* `save` writes both new files completely under temporary names first (space checked before, a full
  disk named with the space needed), then swaps them in: the previous resume state becomes
  '{stem}_resume.prev.pth', the new one takes its place, the new model file replaces the old one,
  and only then is the previous state deleted. Each rename is atomic, so at every instant the model
  file has a matching resume state (same save id) on disk, and an interruption at any point leaves a
  pair `--resume` can continue from.
* `load_resume` picks the resume state whose save id matches the model checkpoint being resumed.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

from model.checkpoint import (
    DiskFullError,
    ensure_space,
    fsync_dir,
    payload_nbytes,
    temp_path_for,
    write_torch_file,
)
from trainer.distributed import broadcast_object
from trainer.engine.lock import RunLock
from trainer.engine.resume import RESUME_FORMAT, read_resume_state

log = logging.getLogger("parallelmind")


def new_save_id() -> str:
    return uuid.uuid4().hex


class Checkpointer:
    def __init__(self, out_dir: str | Path, stem: str, *, is_main: bool, exports: list[str] | tuple[str, ...] = ()):
        self.out_dir = Path(out_dir)
        self.stem = stem
        self.exports = tuple(exports)  # glob patterns of the stage's extra outputs
        self.is_main = is_main
        self.model_path = self.out_dir / f"{stem}.pth"
        self.resume_path = self.out_dir / f"{stem}_resume.pth"
        self.prev_resume_path = self.out_dir / f"{stem}_resume.prev.pth"
        self.metrics_path = self.out_dir / f"{stem}_metrics.jsonl"
        self.lock = RunLock(self.out_dir / f"{stem}.lock")
        self.folder = self.model_path.parent  # out_dir, or a folder inside it for a stem like "lora/x_512"
        self.saved_step: int | None = None

    # --- start of a run ---------------------------------------------------------------------------
    def claim(self, *, resume: bool, overwrite: bool) -> None:
        """Rank 0 checks the out_dir and takes the lock; every rank raises the same error if that fails."""
        if resume and overwrite:
            raise SystemExit("--resume continues the run in --out_dir and --overwrite replaces it: give one")
        error = None
        if self.is_main:
            error = self._claim_here(resume, overwrite)
        error = broadcast_object(error)
        if error:
            raise SystemExit(error)

    def _claim_here(self, resume: bool, overwrite: bool) -> str | None:
        if resume and not self.model_path.is_file():
            return (f"--resume: there is no checkpoint {self.model_path} to continue (train without --resume first, "
                    "with the same --out_dir and model size flags)")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
        except SystemExit as e:
            return str(e.code)
        except OSError as e:
            return f"--out_dir {self.out_dir} is not writable: {e.strerror or e}"
        for tmp in self.folder.glob(f".{self.model_path.stem}*.tmp"):  # left by a run that died mid-save (locked)
            tmp.unlink(missing_ok=True)
        exports = sorted({p for pattern in self.exports for p in self.out_dir.glob(pattern)})
        existing = [p.name for p in (self.model_path, self.resume_path, self.prev_resume_path) if p.exists()]
        existing += [p.name for p in exports]
        if existing and not (resume or overwrite):
            self.lock.release()
            shown = ", ".join(existing[:6]) + (f" (and {len(existing) - 6} more)" if len(existing) > 6 else "")
            return (f"{self.folder} already holds {shown} from an earlier run; continue it with "
                    "--resume, replace it with --overwrite, or choose another --out_dir")
        if overwrite and exports:
            log.info("--overwrite: removing %d exports of the earlier run in %s", len(exports), self.out_dir)
            for p in exports:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        return None

    def release(self) -> None:
        if self.is_main:
            self.lock.release()

    def load_resume(self, model_info: dict) -> dict:
        """The resume state that pairs with the checkpoint being resumed (same save id, else same step)."""
        candidates = [p for p in (self.resume_path, self.prev_resume_path) if p.is_file()]
        if not candidates:
            raise SystemExit(f"--resume: no resume state {self.resume_path} beside {self.model_path}")
        states = [read_resume_state(p) for p in candidates]
        for st in states:
            if _pairs(st, model_info):
                self.saved_step = st["train_state"]["step"]
                return st
        found = ", ".join(f"{p.name} at step {st['train_state']['step']}" for p, st in zip(candidates, states))
        raise SystemExit(f"--resume: {self.model_path} (step {model_info.get('step')}) has no matching resume state "
                         f"({found}); they come from different saves")

    # --- saving -----------------------------------------------------------------------------------
    def save(self, model_payload: dict, resume_state: dict) -> None:
        """Write the pair (rank 0 only); see the module docstring for the order that keeps it consistent."""
        resume_state = {"format": RESUME_FORMAT, **resume_state}
        needed = payload_nbytes(model_payload) + payload_nbytes(resume_state)
        ensure_space(self.folder, needed, self.model_path)
        tmp_model, tmp_resume = temp_path_for(self.model_path), temp_path_for(self.resume_path)
        try:
            try:
                write_torch_file(model_payload, tmp_model)
                write_torch_file(resume_state, tmp_resume)
            except DiskFullError:
                raise DiskFullError(self.model_path, needed) from None
            if self.resume_path.exists():
                os.replace(self.resume_path, self.prev_resume_path)
            os.replace(tmp_resume, self.resume_path)
            os.replace(tmp_model, self.model_path)
            fsync_dir(self.folder)
            self.prev_resume_path.unlink(missing_ok=True)
        finally:
            for tmp in (tmp_model, tmp_resume):
                tmp.unlink(missing_ok=True)
        self.saved_step = resume_state["train_state"]["step"]


def _pairs(state: dict, model_info: dict) -> bool:
    if state.get("save_id") and model_info.get("save_id"):
        return state["save_id"] == model_info["save_id"]
    return state["train_state"]["step"] == model_info.get("step")
