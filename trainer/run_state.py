"""The run's state between steps: where it stands, and where its time went (carried in checkpoints)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from trainer.status import Status

# Where a run's wall time goes (summary.json "seconds"), in the order it is spent.
TIME_PARTS = ("startup", "build", "datasets", "steps", "data", "validation", "slow_metrics", "logging", "checkpoints")


@dataclass
class Speed:
    """Throughput bookkeeping, carried in checkpoints so that it sums over resumes."""

    seconds: dict[str, float] = field(default_factory=dict)  # TIME_PARTS: host wall time by part
    loop_start_unix: float | None = None  # start-up ends here (the latest process's)
    first_step_unix: float | None = None  # its first batch was ready
    warmup_seconds: float | None = None  # from the loop's start to the end of its warm-up steps
    warmup_steps: int | None = None  # trainer.warmup_steps, or 1 when a process trains no more steps than that
    window_step_ms: list[float] = field(default_factory=list)  # steady-state log windows only
    window_data_wait: list[float] = field(default_factory=list)
    time_to_target: float | None = None  # train_seconds when the target metric was first reached
    steps_to_target: int | None = None
    peak_memory_mb: float | None = None

    def spend(self, part: str, seconds: float) -> None:
        self.seconds[part] = self.seconds.get(part, 0.0) + seconds


@dataclass
class RunState:
    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    best: float | None = None  # best value of the task's monitored metric
    best_epoch: int | None = None
    bad_epochs: int = 0  # validations since the last improvement (early stopping)
    status: Status = Status.RUNNING
    reason: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per validation
    train_seconds: float = 0.0  # wall time in training and validation, summed over resumes
    speed: Speed = field(default_factory=Speed)

    @property
    def finished(self) -> bool:
        return Status(self.status).finished

    def to_dict(self) -> dict[str, Any]:
        # plain types only: checkpoints are loaded with weights_only=True, which refuses classes
        return {**asdict(self), "status": Status(self.status).value}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunState:
        return cls(**{**d, "status": Status(d["status"]), "speed": Speed(**d.get("speed", {}))})
