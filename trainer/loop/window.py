"""The metrics window: device-side sums between two log points, and when those points are.

Between log points the loop only queues device work; `flush` is the one place the sums
reach the host (a sync that waits for the queued work), so a GPU never waits for Python.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from trainer.distributed import Dist
from trainer.loop.diagnostics import GradientDiagnostics
from trainer.loop.stopping import Diverged
from trainer.run_state import Speed


@dataclass
class StepOut:
    loss: torch.Tensor  # detached, on device
    terms: dict[str, torch.Tensor]
    grad_norm: torch.Tensor  # before clipping
    skipped: bool  # fp16: the scaler found inf/NaN gradients and skipped the update


@dataclass
class MetricsWindow:
    """Logs every `log_every` steps, at the end of each epoch and at `warm_at` (the end of
    this process's warm-up steps: from then on windows are steady and go into `speed`)."""

    log_every: int
    warm_at: int
    speed: Speed
    check_grads: bool  # under fp16 the scaler owns non-finite gradients
    dist: Dist = field(default_factory=Dist)  # data-parallel: sums and the verdict are across ranks
    diagnostics: GradientDiagnostics | None = None  # gradient alerts over the window's steps
    grad_clip: float | None = None
    started: float = field(default_factory=time.perf_counter)  # the loop's start (warm-up time)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start an empty window now (each epoch starts one: validation is not a step)."""
        self.sums: dict[str, torch.Tensor] = {}
        self.grad_norms: list[torch.Tensor] = []  # per step, for the gradient alerts
        self.bad: torch.Tensor | bool = False
        self.steps = self.samples = self.skipped = 0
        self.data_time = 0.0
        self.start = time.perf_counter()

    def add(self, out: StepOut, samples: int, data_seconds: float) -> None:
        bad = ~torch.isfinite(out.loss)
        if self.check_grads:
            bad = bad | ~torch.isfinite(out.grad_norm)
        self.bad = self.bad | bad
        values = {"loss/total": out.loss, "opt/grad_norm": out.grad_norm}
        values.update({f"loss/{k}": v for k, v in out.terms.items()})
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0) + value
        self.grad_norms.append(out.grad_norm)
        self.steps += 1
        self.samples += samples
        self.skipped += int(out.skipped)
        self.data_time += data_seconds

    def due(self, step: int, end_of_epoch: bool) -> bool:
        return step == self.warm_at or step % self.log_every == 0 or end_of_epoch

    def check(self, step: int) -> None:
        """Raise Diverged if any step since the last flush went non-finite (syncs)."""
        if self.dist.any(self.bad):  # every rank raises, or none does
            raise Diverged(f"non-finite loss or gradient at or before step {step}")

    def flush(self, step: int) -> dict[str, float]:
        """The window's means and speed; starts the next window."""
        self.check(step)
        elapsed = time.perf_counter() - self.start
        out = {k: v.item() / self.steps for k, v in self.dist.mean(self.sums).items()}
        out["perf/samples_per_s"] = self.samples / elapsed
        out["perf/step_ms"] = 1000 * elapsed / self.steps
        out["perf/data_wait"] = self.data_time / elapsed
        if self.skipped:
            out["opt/skipped_steps"] = float(self.skipped)
        if self.diagnostics is not None:
            self.diagnostics.check_window(torch.stack(self.grad_norms).tolist(), self.grad_clip, step)
        if step == self.warm_at:
            self.speed.warmup_seconds = time.perf_counter() - self.started
        elif step > self.warm_at:  # steady-state windows only
            self.speed.window_step_ms.append(out["perf/step_ms"])
            self.speed.window_data_wait.append(out["perf/data_wait"])
        self.reset()
        return out
