"""Learning-rate schedules with the granularity they are stepped at.

Each builder takes the optimizer (and what only the run knows) at the call site and
returns a `Schedule`; the engine calls `after_step()` after every optimizer step that was
taken and `after_validation(metric)` after every validation, and each schedule acts on
the one that is its own. The hyper-parameters have no defaults here: conf/sched/ holds
them, in one place.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, ReduceLROnPlateau


class Schedule:
    def __init__(self, scheduler: LRScheduler | ReduceLROnPlateau | None, interval: str | None):
        self.scheduler, self.interval = scheduler, interval

    def after_step(self) -> None:
        if self.interval == "step":
            self.scheduler.step()

    def after_validation(self, metric: float) -> None:
        if self.interval == "epoch":
            self.scheduler.step(metric)

    def state_dict(self) -> dict:
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)


def warmup_cosine(optimizer: Optimizer, total_steps: int, mode: str, warmup: float, min_lr_ratio: float) -> Schedule:
    warm = max(1, int(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return Schedule(LambdaLR(optimizer, factor), "step")


def one_cycle(
    optimizer: Optimizer,
    total_steps: int,
    mode: str,
    pct_start: float,
    div_factor: float,
    final_div_factor: float,
) -> Schedule:
    peaks = [group["lr"] for group in optimizer.param_groups]
    # OneCycleLR raises if stepped past total_steps; +1 leaves room for the final step.
    sched = OneCycleLR(
        optimizer,
        max_lr=peaks,
        total_steps=total_steps + 1,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
    )
    return Schedule(sched, "step")


def plateau(
    optimizer: Optimizer, total_steps: int, mode: str, factor: float, patience: int, threshold: float
) -> Schedule:
    return Schedule(
        ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience, threshold=threshold), "epoch"
    )


def constant(optimizer: Optimizer, total_steps: int, mode: str) -> Schedule:
    return Schedule(None, None)
