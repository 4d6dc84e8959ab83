"""The job's side of an Optuna search: report each validation to the trial, let the pruner
stop it, and leave the run's outcome in the trial's user attributes for the sweeper.

The sweeper (sweeps/plugins/hydra_plugins/trainer_optuna_sweeper) passes the storage URL, study
name and trial id as `optuna.*` overrides; a run without them has no link and pays nothing.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from trainer.search.optuna_compat import open_storage

log = logging.getLogger("trainer")


class TrialLink:
    """Reports validations to one trial and asks its pruner whether to stop."""

    def __init__(self, cfg):
        import optuna
        from hydra.utils import instantiate

        pruner = instantiate(cfg.pruner) if cfg.pruner else optuna.pruners.NopPruner()
        self.study = optuna.load_study(study_name=cfg.study_name, storage=open_storage(cfg.storage), pruner=pruner)
        self.trial = optuna.trial.Trial(self.study, cfg.trial_id)
        self.number = cfg.trial_number
        # Optuna cannot prune multi-objective trials (Trial.report raises for them).
        self.can_prune = len(self.study.directions) == 1

    def report(self, step: int, value: float) -> bool:
        """Report the monitored value at `step` (an epoch); True when the pruner says stop."""
        if not self.can_prune or not math.isfinite(value):
            return False
        self.trial.report(value, step)
        return self.trial.should_prune()

    def record_outcome(self, summary: dict[str, Any], run_dir: str) -> None:
        """The outcome, for the sweeper to tell the study (and for anyone reading it)."""
        for key, value in (("status", summary["status"]), ("reason", summary["reason"]), ("run_dir", run_dir)):
            self.trial.set_user_attr(key, value)
        for key in ("samples_per_s", "step_ms", "train_seconds", "epochs"):
            if isinstance(summary.get(key), (int, float)):
                self.trial.set_user_attr(key, summary[key])

    def value(self, summary: dict[str, Any], key: str, index: int) -> float:
        """`summary[key]` as the study's objective number `index`; the worst value for that
        direction when it is missing or not finite (a sweeper never sees NaN)."""
        import optuna

        value = summary.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
        maximize = self.study.directions[index] == optuna.study.StudyDirection.MAXIMIZE
        return -math.inf if maximize else math.inf
