"""The states a run can be in (written in RunState.status and summary.json)."""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """Where a run stands. A `str`, so it compares with and serialises as its value."""

    RUNNING = "running"
    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    PRUNED = "pruned"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"  # SIGTERM/SIGINT: `last` is written, rerun to resume
    FAILED = "failed"  # an exception

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:  # "%s" and f"{status:13s}" give the value, as a str would
        return format(self.value, spec)

    @property
    def finished(self) -> bool:
        """Nothing more to train: a resume has nothing to do."""
        return self in (Status.COMPLETED, Status.EARLY_STOPPED, Status.PRUNED, Status.DIVERGED)

    @property
    def bad(self) -> bool:
        """Did not end as asked: a multirun lists it as failed or incomplete."""
        return self in (Status.FAILED, Status.DIVERGED, Status.INTERRUPTED)
