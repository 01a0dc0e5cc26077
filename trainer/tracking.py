"""Experiment tracking: a metrics JSONL in out_dir, optional wandb, a progress bar; null versions off rank 0.

All trackers have the same methods (`log`, `summary`, `finish`), so the engine never checks which one
it has; `build_tracker` gives the one a run needs. wandb honours WANDB_MODE=offline/disabled; online without an API key is refused before training
starts, with a message saying how to fix it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("parallelmind")


def setup_logging(is_main: bool) -> None:
    level = logging.INFO if is_main else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr, force=True)
    for noisy in ("httpx", "datasets", "urllib3", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class NullTracker:
    def log(self, metrics: dict, step: int) -> None:
        pass

    def summary(self, metrics: dict) -> None:
        pass

    def finish(self) -> None:
        pass


class JsonlTracker(NullTracker):
    """Appends one JSON object per call; on resume, records after the resumed step are dropped first."""

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            self.path.write_text("".join(k + "\n" for k in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._f = open(self.path, "a", encoding="utf-8")

    def log(self, metrics: dict, step: int) -> None:
        self._f.write(json.dumps({"step": step, **metrics}) + "\n")
        self._f.flush()

    def summary(self, metrics: dict) -> None:
        self.log({"summary": True, **metrics}, metrics.get("step", 0))

    def finish(self) -> None:
        self._f.close()


class MultiTracker(NullTracker):
    def __init__(self, *trackers):
        self.trackers = [t for t in trackers if t is not None]

    def log(self, metrics, step):
        for t in self.trackers:
            t.log(metrics, step)

    def summary(self, metrics):
        for t in self.trackers:
            t.summary(metrics)

    def finish(self):
        for t in self.trackers:
            t.finish()


def check_wandb_ready() -> None:
    """Refuse early (before any training) when wandb would fail: not installed, or online with no key."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise SystemExit("--use_wandb: the wandb package is not installed (pip install wandb)") from None
    mode = os.environ.get("WANDB_MODE", "online").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return
    if os.environ.get("WANDB_API_KEY"):
        return
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return
    raise SystemExit("--use_wandb: no W&B API key is configured. Run `wandb login`, set WANDB_API_KEY, or log "
                     "locally with WANDB_MODE=offline (sync later with `wandb sync`).")


class WandbTracker(NullTracker):
    def __init__(self, project: str, run_name: str | None, config: dict, out_dir: str, run_id: str | None = None):
        import wandb

        self.run = wandb.init(project=project, name=run_name, config=config, dir=out_dir, id=run_id,
                              resume="allow" if run_id else None)

    @property
    def run_id(self) -> str:
        return self.run.id

    def log(self, metrics, step):
        self.run.log(metrics, step=step)

    def summary(self, metrics):
        for k, v in metrics.items():
            self.run.summary[k] = v

    def finish(self):
        self.run.finish()


def build_tracker(args, *, is_main: bool, metrics_path: Path, resume_step: int | None, config: dict,
                  wandb_run_id: str | None) -> tuple[NullTracker, str | None]:
    """-> (the run's tracker, its wandb run id). Rank 0 writes the metrics JSONL (and wandb); others nothing."""
    if not is_main:
        return NullTracker(), wandb_run_id
    jsonl = JsonlTracker(metrics_path, resume_step=resume_step)
    wb = None
    if args.use_wandb:
        wb = WandbTracker(args.wandb_project, args.wandb_run_name, config, str(args.out_dir), wandb_run_id)
        wandb_run_id = wb.run_id
    return MultiTracker(jsonl, wb), wandb_run_id


class Progress:
    """tqdm bar on rank 0 (loss, lr, tokens/s, ETA); nothing elsewhere."""

    def __init__(self, total: int, initial: int, enabled: bool, desc: str):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
                            disable=not sys.stderr.isatty() and os.environ.get("PM_PROGRESS") != "1")

    def update(self, n: int = 1, **postfix) -> None:
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)

    def write(self, msg: str) -> None:
        if self.bar is not None and not self.bar.disable:
            self.bar.write(msg)
        else:
            log.info(msg)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
