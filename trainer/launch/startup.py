"""Hydra start-up: what must exist before Hydra composes a config, in this process and in
every launcher worker. Idempotent and cheap; `python -m trainer` calls it at import."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from trainer.config import RESULT_NEUTRAL, Config
from trainer.experiments.plan import experiment_dir
from trainer.search import samplers

# The project's Hydra plugins (the experiments and Optuna sweepers)
PLUGINS = Path(__file__).resolve().parents[2] / "sweeps" / "plugins"


def register() -> None:
    """The schema, the resolvers, the plugin folder and the sampler configs."""
    ConfigStore.instance().store(name="schema", node=Config)
    resolvers = {
        # `${div:32,${trainer.batch_size}}`: sweep presets that hold a product constant
        "div": lambda a, b: int(a) // int(b),
        # `${plus:${data.vocab},1}`: the transducer's classes are the data's tokens plus blank
        "plus": lambda a, b: int(a) + int(b),
        # `trial_${zfill:${optuna.trial_number},4}`: search job directories that sort
        "zfill": lambda n, width: str(n).zfill(int(width)),
        # `exclude_keys: ${result_neutral:}`: settings that do not name a run's folder
        "result_neutral": lambda: list(RESULT_NEUTRAL),
        # `${experiment_dir:<base>}`: the folder of a job's experiment, found by its identity
        "experiment_dir": experiment_dir,
        # `hydra.help.template: ${trainer_help:}`: `python -m trainer --help`
        "trainer_help": _help,
    }
    for name, resolver in resolvers.items():
        OmegaConf.register_new_resolver(name, resolver, replace=True)
    add_plugin_folder()
    # Scan the plugins now, then store this project's sampler configs last (the scan
    # re-executes the released plugin's config: trainer/search/samplers.py).
    from hydra.core.plugins import Plugins

    Plugins.instance()
    samplers.register()  # False: the released sweeper is absent; Hydra's scan warned, searches cannot run


def _help() -> str:
    from trainer.launch.help import text  # read only when --help asks

    return text()


def add_plugin_folder() -> None:
    """Hydra finds plugins in the `hydra_plugins` namespace package: the project's plugin
    folder joins it, before Hydra scans."""
    import hydra_plugins

    if str(PLUGINS / "hydra_plugins") not in list(hydra_plugins.__path__):
        hydra_plugins.__path__.append(str(PLUGINS / "hydra_plugins"))
    # Launcher workers unpickle the job before anything imports this module, and the pickle
    # names the plugin: joblib's workers copy this process's sys.path, submitit's inherit
    # PYTHONPATH, so both must hold the folder too.
    if str(PLUGINS) not in sys.path:
        sys.path.append(str(PLUGINS))
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(PLUGINS) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(PLUGINS), *filter(None, paths)])


CONF = Path(__file__).resolve().parents[2] / "conf"


def compose(overrides: list[str], hydra_node: bool = False):
    """The config `python -m trainer <overrides>` would run, composed in this process (for
    tools, tests and benchmarks); with `hydra_node`, Hydra's own node too."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=hydra_node)
