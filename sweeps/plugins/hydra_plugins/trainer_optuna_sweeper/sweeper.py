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
from typing import Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig

try:
    from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf, SamplerConfig, TPESamplerConfig
except ImportError as err:  # Hydra shows this as a warning; runs that do not search go on
    raise ImportError(
        "hydra/sweeper=trainer_optuna needs the released Optuna sweeper, installed without its optuna<3 pin: "
        "pip install --no-deps hydra-optuna-sweeper==1.3.0 (README, Quick start)"
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


# Samplers beside the released plugin's tpe, random, cmaes, nsgaii and grid
# (hydra/sweeper/sampler=<name>):
@dataclass
class GPSamplerConfig(SamplerConfig):
    """Optuna's Gaussian-process sampler (4.x): strong on small budgets of continuous
    parameters, single- and multi-objective."""

    _target_: str = "optuna.samplers.GPSampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False


@dataclass
class GridSamplerConfig(SamplerConfig):
    """Every combination of the discrete search dimensions, in random order; the grid
    itself is built from hydra.sweeper.params when the sweep starts. The released config
    has no seed, which the presets set."""

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True
    seed: Optional[int] = None


def register_samplers() -> None:
    """Store gp, and this project's grid and motpe over the released plugin's. Hydra's
    plugin scan re-executes every plugin module it walks, in path order, so where this
    folder comes first (it is on PYTHONPATH for launcher workers) the released config would
    store its own grid and motpe again afterwards: trainer/config.py calls this once more
    after the scan."""
    store = ConfigStore.instance().store
    store(group="hydra/sweeper/sampler", name="gp", node=GPSamplerConfig, provider="audio-sweeps")
    store(group="hydra/sweeper/sampler", name="grid", node=GridSamplerConfig, provider="audio-sweeps")
    # Optuna 4 removed MOTPESampler: TPESampler itself handles several objectives now. The
    # name stays, so that `sampler=motpe` from older configs keeps working.
    store(group="hydra/sweeper/sampler", name="motpe", node=TPESamplerConfig, provider="audio-sweeps")


register_samplers()


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
