"""The run's state between steps, and the JSON files a user (or a report) reads."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainer.checkpoint import atomic_write
from trainer.status import Status

# Where a run's wall time goes (summary.json "seconds"), in the order it is spent.
TIME_PARTS = ("startup", "build", "datasets", "steps", "data", "validation", "slow_metrics", "logging", "checkpoints")


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
    # throughput bookkeeping: warmup_seconds, window_step_ms / window_data_wait (steady
    # windows), time_to_target / steps_to_target
    speed: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return Status(self.status).finished

    def to_dict(self) -> dict[str, Any]:
        # plain types only: checkpoints are loaded with weights_only=True, which refuses classes
        return {**asdict(self), "status": Status(self.status).value}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunState:
        return cls(**{**d, "status": Status(d["status"])})


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # "inf", "-inf", "nan": strict JSON has no such numbers
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n"
    atomic_write(Path(path), lambda f: f.write(text.encode()))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
