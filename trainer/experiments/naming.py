"""The name of a job's experiment (its alias): short, readable, and the same wherever the
job appears (folder, plan, report row, TensorBoard run).

A multirun job is named by its swept choices (`optim=sgd,precision=amp_bf16`: the
launch callback leaves the fixed overrides out of Hydra's `override_dirname`). A single
run is named by what it changes: overrides that restate a default (`optim=adamw`, the
default spelled out) are left out. Neither name carries what names nothing about the
result: the result-neutral keys (devices, workers, output folders), a search's link to
its trial (`optuna.*`), Hydra's own settings. A path value keeps its last component.
Names longer than `MAX` characters are cut at an override and end in the experiment's
short hash (identity.shorten), so they stay unique and fit a terminal line.
"""

from __future__ import annotations

import functools
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

# Keys that never name an experiment, beyond hydra.job.config.override_dirname.exclude_keys
NAMELESS = ("optuna", "hydra")


def _key(override: Override) -> str:
    return override.key_or_group.lstrip("+~")


def _value_text(override: Override) -> str:
    """The value as typed; an absolute path as its last component (`/data/dns/clean` -> `clean`)."""
    text = override.input_line.split("=", 1)[1] if override.input_line and "=" in override.input_line else ""
    if text.startswith("/") and "/" in text.rstrip("/"):
        return text.rstrip("/").rsplit("/", 1)[1]
    return text


@functools.lru_cache(maxsize=1)
def _defaults() -> DictConfig | None:
    """The config of `python -m trainer` with no override (with its `hydra` node), composed
    by the running Hydra's own loader; None outside a Hydra run."""
    from hydra.core.global_hydra import GlobalHydra

    hydra = GlobalHydra.instance()
    if not hydra.is_initialized():
        return None
    try:
        return hydra.config_loader().load_configuration("config", overrides=[], run_mode=RunMode.RUN)
    except Exception:  # a damaged conf/ fails the run itself, with Hydra's message
        return None


def _select(cfg: DictConfig, key: str) -> Any:
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
    except Exception:  # an interpolation that only resolves inside the job
        return object()
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def restates_default(override: Override, job: DictConfig, hydra: DictConfig, defaults: DictConfig) -> bool:
    """Whether the job would be the same without `override`, as far as its key goes."""
    key = _key(override)
    choices, default_choices = hydra.runtime.choices, defaults.hydra.runtime.choices
    if key in choices:  # a group: the chosen option is the default one
        return key in default_choices and choices[key] == default_choices[key]
    if override.key_or_group.startswith(("+", "~")):  # adds or deletes a key: a change by definition
        return False
    return _select(job, key) == _select(defaults, key)


def alias(job: DictConfig, hydra: DictConfig) -> str:
    """The alias of the job with config `job` and Hydra config `hydra` (a composed config
    with its `hydra` node serves as both); "default" when nothing is left."""
    exclude = set(hydra.job.config.override_dirname.exclude_keys)
    defaults = _defaults() if hydra.mode != RunMode.MULTIRUN else None
    parsed = OverridesParser.create().parse_overrides(list(hydra.overrides.task))
    names = []
    for override in parsed:
        key = _key(override)
        if key in exclude or override.key_or_group in exclude or key.split(".")[0] in NAMELESS:
            continue
        if defaults is not None and restates_default(override, job, hydra, defaults):
            continue
        names.append((key, f"{override.key_or_group}={_value_text(override)}"))
    # by key, so that a group's choice comes before its keys (precision=fp32,precision.matmul=high)
    return ",".join(name for _, name in sorted(names)) or "default"
