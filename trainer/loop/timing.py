"""Where a run's host wall time goes (`Speed.seconds`, summary.json "seconds") and how long
it has trained (`RunState.train_seconds`), both summed over resumes; and the process's
start-up, charged to its first run.

On a GPU the host runs ahead: device work shows up wherever the host next waits for it
(the log points' sync, validation, checkpoints).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trainer.run_state import RunState


class Ledger:
    def __init__(self, state: RunState):
        self.state = state
        self.mark = self.clock = time.perf_counter()

    def restart(self) -> None:
        """Start timing the next part here (what came before is not any part's)."""
        self.mark = time.perf_counter()

    def lap(self, part: str) -> float:
        """Book the time since the last mark to `part`; returns it."""
        now = time.perf_counter()
        seconds, self.mark = now - self.mark, now
        self.state.speed.spend(part, seconds)
        return seconds

    @contextmanager
    def spent(self, part: str) -> Iterator[None]:
        self.restart()
        yield
        self.lap(part)

    def account(self) -> None:
        """Add the wall time since the last call to the run's training time."""
        now = time.perf_counter()
        self.state.train_seconds += now - self.clock
        self.clock = now


def process_age() -> float | None:
    """Seconds since this process started (Linux), i.e. interpreter start-up, imports and
    Hydra's composition before a run begins; None where the OS does not say."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
        return max(0.0, time.time() - (boot + ticks / os.sysconf("SC_CLK_TCK")))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


class ProcessStartup:
    """The process's start-up time, charged once: the jobs of a multirun (basic launcher)
    share one process, and only the first of them paid for its start-up."""

    def __init__(self) -> None:
        self.charged = False

    def charge(self) -> float | None:
        """The start-up seconds the first time (None where unknown), 0 afterwards."""
        if self.charged:
            return 0.0
        self.charged = True
        return process_age()


STARTUP = ProcessStartup()
