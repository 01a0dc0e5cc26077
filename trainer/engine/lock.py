"""An exclusive lock on a run's outputs: '{out_dir}/{stem}.lock', held for the run's lifetime.

The lock is an `flock` on the file (released by the kernel when the holder dies, however it dies);
the file holds the holder's pid, host and start time for the message a second run prints. A lock
file left by a dead process is taken over (logged). On a filesystem without `flock` the recorded pid
decides (a live process on this host holds the lock).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

log = logging.getLogger("parallelmind")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    def _holder(self, fd: int) -> dict:
        try:
            return json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
        except (OSError, ValueError):
            return {}

    def _in_use(self, holder: dict) -> str:
        return (f"{self.path.parent} is in use: another run (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
                f"started {holder.get('started', '?')}) holds {self.path}; wait for it to finish or choose another "
                "--out_dir")

    def acquire(self) -> None:
        """Take the lock, or raise SystemExit naming the run that holds it."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                raise SystemExit(self._in_use(holder)) from None
            except OSError:  # a filesystem without flock: the recorded pid decides
                holder = self._holder(fd)
                if holder.get("pid") and holder["pid"] != os.getpid() and _pid_alive(int(holder["pid"])) \
                        and holder.get("host") == socket.gethostname():
                    os.close(fd)
                    raise SystemExit(self._in_use(holder)) from None
            try:  # the holder may have removed the file between our open and our flock: lock the new one
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        old = self._holder(fd)
        if old.get("pid") and old.get("pid") != os.getpid():
            gone = "no such process" if not _pid_alive(int(old["pid"])) else "it no longer holds the lock"
            log.warning("taking over the stale lock %s of pid %s (%s)", self.path, old["pid"], gone)
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                         "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, me.encode("utf-8"), 0)
        except OSError:  # e.g. a full disk: leave no lock behind
            self.path.unlink(missing_ok=True)
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # removed while still held: a waiting run re-checks the inode
        finally:
            os.close(self._fd)
            self._fd = None
