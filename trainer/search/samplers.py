"""Optuna samplers beside the released sweeper's random, cmaes and nsgaii
(`hydra/sweeper/sampler=<name>`), stored in Hydra's ConfigStore: gp, a seeded grid, and a
tpe (motpe) without the arguments Optuna 4 deprecated.

No `from __future__ import annotations`: Hydra's ConfigStore reads these dataclasses'
annotations, which must be real types.
"""

from dataclasses import dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore

try:
    from hydra_plugins.hydra_optuna_sweeper.config import SamplerConfig
except ImportError:  # the released sweeper is absent: searches cannot run, nothing to store
    SamplerConfig = None


if SamplerConfig is not None:

    @dataclass
    class GPSamplerConfig(SamplerConfig):
        """Optuna's Gaussian-process sampler (4.x): strong on small budgets of continuous
        parameters, single- and multi-objective."""

        _target_: str = "optuna.samplers.GPSampler"
        seed: Optional[int] = None
        n_startup_trials: int = 10
        deterministic_objective: bool = False

    @dataclass
    class TPESamplerConfig(SamplerConfig):
        """Optuna's TPE sampler with the arguments current Optuna takes. The released
        config passes consider_prior, prior_weight, consider_magic_clip, consider_endpoints
        and warn_independent_sampling, which Optuna deprecated in 4.3-4.9 (a warning each,
        every search) and removes in 6.0."""

        _target_: str = "optuna.samplers.TPESampler"
        seed: Optional[int] = None
        n_startup_trials: int = 10
        n_ei_candidates: int = 24
        multivariate: bool = False
        group: bool = False
        # trials running in parallel count as having the worst value while they run, so
        # that parallel workers do not all sample the same region
        constant_liar: bool = False

    @dataclass
    class GridSamplerConfig(SamplerConfig):
        """Every combination of the discrete search dimensions, in random order; the grid
        itself is built from hydra.sweeper.params when the sweep starts. The released config
        has no seed, which the presets set."""

        _target_: str = "optuna.samplers.GridSampler"
        _partial_: bool = True
        seed: Optional[int] = None


def register() -> bool:
    """Store gp, and this project's tpe, grid and motpe over the released plugin's; False
    when the released sweeper is not installed.

    Hydra's plugin scan re-executes every plugin module it walks, in path order, so where
    the project's plugin folder comes first (it is on PYTHONPATH for launcher workers) the
    released config would store its own grid and motpe again afterwards: start-up
    (trainer/launch/startup.py) calls this once more after the scan."""
    if SamplerConfig is None:
        return False
    store = ConfigStore.instance().store
    store(group="hydra/sweeper/sampler", name="tpe", node=TPESamplerConfig, provider="audio-sweeps")
    store(group="hydra/sweeper/sampler", name="gp", node=GPSamplerConfig, provider="audio-sweeps")
    store(group="hydra/sweeper/sampler", name="grid", node=GridSamplerConfig, provider="audio-sweeps")
    # Optuna 4 removed MOTPESampler: TPESampler itself handles several objectives now. The
    # name stays, so that `sampler=motpe` from older configs keeps working.
    store(group="hydra/sweeper/sampler", name="motpe", node=TPESamplerConfig, provider="audio-sweeps")
    return True
