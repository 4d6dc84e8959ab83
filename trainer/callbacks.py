"""Hydra callbacks (listed under `hydra.callbacks` in conf/config.yaml)."""

from __future__ import annotations

import sys
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

from trainer.config import ConfigError, validate


class ValidateConfig(Callback):
    """Runs `validate` before Hydra creates any run or sweep directory.

    Hydra turns an exception raised by a callback into a warning and carries on, so a
    rejected config leaves through SystemExit (which it does not catch) instead.
    """

    def _check(self, config: DictConfig) -> None:
        try:
            validate(config)
        except ConfigError as err:
            print(f"Error in config: {err}", file=sys.stderr)
            raise SystemExit(1) from None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)


class NameJobsBySweptKeys(Callback):
    """Multirun job directories named from the swept choices only (`optim=sgd,precision=amp_bf16`).

    Hydra's `override_dirname` lists every override of a job, swept or not, which buries
    the one that differs. Before the sweep starts, the overrides that are not sweeps are
    added to the exclude list; the jobs still differ exactly in their swept keys.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        fixed = [o.get_key_element().lstrip("+~") for o in parsed if not o.is_sweep_override()]
        if not fixed:
            return
        exclude = list(config.hydra.job.config.override_dirname.exclude_keys) + fixed
        # Launchers re-compose each job from `hydra.overrides.hydra`, so the change goes there.
        with read_write(config.hydra.overrides):
            config.hydra.overrides.hydra.append(
                "hydra.job.config.override_dirname.exclude_keys=[" + ",".join(f"'{k}'" for k in exclude) + "]"
            )
