"""Hugging Face Hub reachability: fail at once, with a clear message, instead of retrying for 20-45 s.

A name that is not a local path is a Hub name. Before any transformers/datasets call that would go to
the Hub, scripts call `require_hub(kind, name)`: it honours HF_HUB_OFFLINE / HF_DATASETS_OFFLINE and
otherwise probes the Hub once with a short timeout.
"""

from __future__ import annotations

import functools
import os
import socket

HUB_HOST = "huggingface.co"


def _env_offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


@functools.lru_cache(maxsize=1)
def _probe(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def hub_reachable() -> bool:
    """True when the Hub may be used: not forced offline and a TCP connection to it succeeds."""
    return not _env_offline() and _probe()


def hub_unreachable_message(kind: str, name: str) -> str:
    why = "offline mode is set (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)" if _env_offline() else \
        f"the Hub ({HUB_HOST}) cannot be reached"
    return (f"{kind} '{name}' is not a local path and {why}; "
            f"pass a local file or folder instead (for example a JSONL file or a saved model folder)")


def require_hub(kind: str, name: str) -> None:
    """Raise FileNotFoundError at once when `name` would need the Hub and the Hub cannot be used."""
    if not hub_reachable():
        raise FileNotFoundError(hub_unreachable_message(kind, name))
    # The Hub is reachable: let transformers/datasets use it.
