"""One process at a time trains into a run directory.

An exclusive `flock` on `<run dir>/.lock`, taken without waiting: a second launch of the
same experiment (two users, two terminals, a relaunch while the first still runs) finds
it held, is told who holds it, and leaves the directory alone. The kernel drops the lock
when its holder exits, however it exits, so a killed job never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

FILE = ".lock"


class RunLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / FILE
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock; False (and nothing changed) when another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def held(run_dir: Path) -> bool:
    """Whether a live process trains in `run_dir` now (probes the lock, never waits)."""
    path = Path(run_dir) / FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock this probe took
    return False
