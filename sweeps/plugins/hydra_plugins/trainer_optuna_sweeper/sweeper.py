"""`hydra/sweeper=trainer_optuna`: the released Optuna sweeper, made to survive real use.

It reuses the released plugin's code (`OptunaSweeperImpl`: sweeper-config handling,
search-space parsing into Optuna distributions, `custom_search_space`, directions,
launcher set-up) and replaces its sweep loop to close three known gaps:

* Resume. `n_trials` is the study's target, not a per-invocation count: rerunning the
  same command (same storage and study name) runs only the trials still missing, and
  several workers on one study stop together at `n_trials`. Each job directory is named
  from its trial number, so none is ever reused. A resumed sampler is reseeded, and a
  sampled parameter set already tried is not run again.
* Stale trials. The sweeper records a heartbeat for every trial in flight; at start,
  RUNNING trials whose heartbeat is older than `grace_period` (their sweeper was killed)
  are marked FAIL with a reason, and a log line lists them.
* Failures and pruning. Each job learns its trial (storage, study, trial id: passed as
  `optuna.*` overrides), reports every validation to it and stops when the pruner says
  so. The sweeper then tells the study PRUNED (not a failure), FAIL for a diverged or
  crashed job (the reason goes into the trial's user attributes; no NaN ever reaches
  Optuna), or COMPLETE with the returned value(s). The sweep stops only when failures
  exceed `max_failure_rate * n_trials`.
"""

# No `from __future__ import annotations` here: Hydra executes plugin modules before
# registering them in sys.modules, and dataclasses then cannot resolve string annotations.
# Hydra imports this module in every run to find its plugins; Optuna is imported only by
# _impl (a module Hydra's scan skips, as its name starts with "_") when a search starts.
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig

from trainer.search import samplers

try:
    from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
except ImportError as err:  # Hydra shows this as a warning; runs that do not search go on
    raise ImportError(
        "hydra/sweeper=trainer_optuna needs the released Optuna sweeper, installed without its optuna<3 pin: "
        "pip install --no-deps hydra-optuna-sweeper==1.3.0 (README.md, Quick start)"
    ) from err


@dataclass
class TrainerOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.trainer_optuna_sweeper.sweeper.TrainerOptunaSweeper"
    n_jobs: int = 1  # trials per batch (run in parallel by a parallel launcher)
    heartbeat_interval: int = 30  # seconds between heartbeats of in-flight trials
    grace_period: int = 120  # a RUNNING trial without a heartbeat for this long is stale
    max_duplicate_draws: int = 20  # re-draws of an already-tried parameter set before giving up


ConfigStore.instance().store(
    group="hydra/sweeper", name="trainer_optuna", node=TrainerOptunaSweeperConf, provider="audio-sweeps"
)


# The project's samplers (gp, a seeded grid, motpe as TPE) must exist whenever Hydra reads
# this module, as the released plugin's do.
samplers.register()


class TrainerOptunaSweeper(Sweeper):
    """The Hydra-facing plugin class (hydra.sweeper._target_)."""

    def __init__(
        self,
        sampler,
        direction,
        storage,
        study_name,
        n_trials,
        n_jobs,
        max_failure_rate,
        search_space,
        custom_search_space,
        params,
        heartbeat_interval,
        grace_period,
        max_duplicate_draws,
    ) -> None:
        if storage is None or study_name is None:
            raise ValueError(
                "hydra.sweeper.storage and hydra.sweeper.study_name must be set: a study has to persist to resume"
            )
        from hydra_plugins.trainer_optuna_sweeper._impl import ResilientSweeperImpl

        self.sweeper = ResilientSweeperImpl(
            sampler,
            direction,
            storage,
            study_name,
            n_trials,
            n_jobs,
            max_failure_rate,
            search_space,
            custom_search_space,
            params,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            max_duplicate_draws=max_duplicate_draws,
        )

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)
