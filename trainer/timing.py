"""Where a run's host wall time goes (`Speed.seconds`, summary.json "seconds") and how long
it has trained (`RunState.train_seconds`), both summed over resumes.

On a GPU the host runs ahead: device work shows up wherever the host next waits for it
(the log points' sync, validation, checkpoints).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

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
