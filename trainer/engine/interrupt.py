"""The run's one stop flag: SIGINT / SIGTERM ask the loop to stop at a step boundary, save, and exit 130 / 143.

The flag is read at the start of each step, in the step's one all-reduce, so every rank stops after
the same step (the step in progress, or the next one when the signal arrives mid-step).

The handler never raises: a second Ctrl-C (or a SIGTERM) while the step finishes or the checkpoint is
being written only prints that the save is under way, so the save always completes. Ctrl-\\ (SIGQUIT)
still ends the process at once, without saving. DataLoader workers ignore both signals
(`ignore_stop_signals` is their init function): the main process shuts them down after the save.
"""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger("parallelmind")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code_for(signum: int | None) -> int:
    """128 + the signal number, the shell's convention: 130 for SIGINT, 143 for SIGTERM; 0 without one."""
    return 128 + int(signum) if signum else 0


def ignore_stop_signals(_worker_id: int = 0) -> None:
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


class StopFlag:
    """Set by a stop signal (or `request`); read once per step by the training loop."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def request(self, signum: int = signal.SIGTERM) -> None:
        if self.signum is None:
            self.signum = int(signum)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for s in STOP_SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = int(signum)
            log.warning("%s: stopping at the next step boundary (every rank agrees on it): saving a checkpoint, "
                        "then exiting with status %d", name, exit_code_for(signum))
        else:
            log.warning("%s: already stopping; the checkpoint is being saved, please wait (Ctrl-\\ quits at once "
                        "without saving)", name)
