"""Tasks decide what a batch means: which tensors are input and target, which metrics are
computed on validation, and which of them is monitored (best checkpoint, early stopping,
plateau schedule, the value returned to a sweeper)."""

from __future__ import annotations

import torch

from losses.functional import si_sdr


class Task:
    def __init__(self, monitor: str, mode: str):
        if mode not in ("max", "min"):
            raise ValueError(f"task.mode must be 'max' or 'min', got {mode!r}")
        self.monitor, self.mode = monitor, mode

    def pair(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def metrics(self, output: torch.Tensor, inputs: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-example validation metrics, each shaped (batch,)."""
        raise NotImplementedError

    def worst(self) -> float:
        """The value a failed or diverged run reports: never NaN, always the worst."""
        return float("-inf") if self.mode == "max" else float("inf")

    def improved(self, value: float, best: float | None, min_delta: float = 0.0) -> bool:
        if best is None:
            return True
        return value > best + min_delta if self.mode == "max" else value < best - min_delta


class Denoise(Task):
    """Noisy mixture in, clean speech out; SI-SDR and its improvement over the input."""

    def __init__(self, monitor: str = "si_sdr", mode: str = "max"):
        super().__init__(monitor, mode)

    def pair(self, batch):
        return batch["noisy"], batch["clean"]

    def metrics(self, output, inputs, target):
        out = si_sdr(output, target)
        return {"si_sdr": out, "si_sdri": out - si_sdr(inputs, target)}
