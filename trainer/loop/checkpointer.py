"""The checkpointer: owns a run's `checkpoints/last.pt` and `checkpoints/best.pt`, and
decides when a mid-epoch `last` is due (the loop asks; the checkpointer knows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainer.checkpoint import CheckpointError
from trainer.files import WriteError, atomic_write, remove_stale_temporaries


class Checkpointer:
    """Owns `checkpoints/last.pt` and `checkpoints/best.pt` and decides when to write them.
    `writes=False` (data-parallel ranks other than 0) reads the same files, never writes."""

    def __init__(self, directory: Path, every_steps: int = 0, writes: bool = True):
        self.directory = Path(directory)
        self.every_steps, self.writes = every_steps, writes
        if writes:
            self.directory.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.directory)

    @property
    def last(self) -> Path:
        return self.directory / "last.pt"

    @property
    def best(self) -> Path:
        return self.directory / "best.pt"

    def save(self, path: Path, state: dict[str, Any]) -> None:
        if self.writes:
            try:
                atomic_write(path, lambda f: torch.save(state, f))
            except WriteError as err:
                raise CheckpointError(str(err)) from err

    def due(self, step: int, end_of_epoch: bool = False) -> bool:
        """Whether a mid-epoch `last` save is due after `step`: every `every_steps` optimizer
        steps, but not at the end of an epoch, whose save follows its validation."""
        return self.every_steps > 0 and step % self.every_steps == 0 and not end_of_epoch

    def save_last(self, snapshot: dict[str, Any]) -> None:
        self.save(self.last, snapshot)

    def save_best(self, snapshot: dict[str, Any]) -> None:
        self.save(self.best, snapshot)
