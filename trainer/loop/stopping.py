"""What ends a run, folded into its status in one place: the epoch budget, early stopping,
the search's pruner, a signal, divergence. The loop asks; the policy decides and records
why (`state.status`, `state.reason`)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from trainer.config import EarlyStoppingConfig
from trainer.run_state import RunState
from trainer.status import Status
from trainer.tasks import Task

log = logging.getLogger("trainer")


class Diverged(RuntimeError):
    """A non-finite loss, gradient or validation metric: the run stops as `diverged`."""


@dataclass
class StopPolicy:
    task: Task  # its monitored metric and direction (improved)
    epochs: int
    early_stopping: EarlyStoppingConfig
    target: float | None = None

    def validated(self, state: RunState, metrics: dict[str, float], seconds: float) -> bool:
        """Fold one validation into the state (best, early stopping, time to target,
        history, status at the budget). Returns whether the monitored metric improved."""
        task, es = self.task, self.early_stopping
        value = metrics[task.monitor]
        if not math.isfinite(value):
            raise Diverged(f"validation {task.monitor} is {value} after epoch {state.epoch + 1}")
        state.epoch += 1
        improved = task.improved(value, state.best, es.min_delta)
        if improved:
            state.best, state.best_epoch, state.bad_epochs = value, state.epoch, 0
        else:
            state.bad_epochs += 1
        reached = self.target is not None and not task.improved(self.target, value)
        if reached and state.speed.time_to_target is None:
            state.speed.time_to_target, state.speed.steps_to_target = seconds, state.step
        state.history.append({"epoch": state.epoch, "step": state.step, "seconds": round(seconds, 3), **metrics})
        log.info(
            "epoch %d/%d  %s %.4f (best %.4f @ %d)  %s",
            state.epoch,
            self.epochs,
            task.monitor,
            value,
            state.best,
            state.best_epoch,
            " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != task.monitor),
        )
        if es.enabled and state.bad_epochs >= es.patience:
            state.status = Status.EARLY_STOPPED
            state.reason = f"no improvement of {task.monitor} for {state.bad_epochs} validations"
        elif state.epoch >= self.epochs:
            state.status = Status.COMPLETED
        return improved

    def pruned(self, state: RunState, trial, value: float) -> None:
        """Report the validation to the search's trial (if any); stop when its pruner says so."""
        if trial is not None and trial.report(state.epoch, value) and not state.finished:
            state.status, state.reason = Status.PRUNED, f"pruned by the search's pruner after epoch {state.epoch}"
            log.info("trial %s %s", trial.number, state.reason)

    def interrupted(self, state: RunState, signal_name: str) -> None:
        state.status, state.reason = Status.INTERRUPTED, f"{signal_name} after step {state.step}"

    def diverged(self, state: RunState, err: Diverged) -> None:
        state.status, state.reason = Status.DIVERGED, str(err)
        log.error("run diverged: %s", err)
