"""Helpers shared by the benchmark scripts (scripts/bench_*.py): machine description and timing summaries."""

from __future__ import annotations

import datetime
import os
import platform
import re
import statistics
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else (platform.processor() or "unknown")


def loadavg() -> list[float] | None:
    """1/5/15-minute load averages: a busy shared machine explains noisy timings."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def environment(device: torch.device | str, dtype: torch.dtype | None = None) -> dict:
    import transformers

    device = torch.device(device)
    env = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
           "threads": torch.get_num_threads(), "device": str(device), "cpu_model": cpu_model(),
           "cpu_count": os.cpu_count(), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
           "loadavg_start": loadavg()}
    if dtype is not None:
        env["dtype"] = str(dtype).replace("torch.", "")
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def summary_ms(seconds: list[float]) -> dict:
    """Median, p90 and min (milliseconds) of repeated timings."""
    ms = sorted(s * 1e3 for s in seconds)
    p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
    return {"median_ms": round(statistics.median(ms), 3), "p90_ms": round(p90, 3), "min_ms": round(ms[0], 3),
            "runs": len(ms)}


def emit_json(result: dict, out: str | None) -> None:
    """Print the result and, with `out`, write it atomically (a temporary file, then a rename)."""
    import json

    text = json.dumps(result, indent=2)
    print(text)
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, path)
