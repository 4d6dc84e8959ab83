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
        swept = {o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()}
        # a key given both plainly and as a sweep (`model.hidden=4 model.hidden=4,5`) is swept:
        # excluding it would give every job the same directory
        fixed = [
            k for k in (o.get_key_element().lstrip("+~") for o in parsed if not o.is_sweep_override()) if k not in swept
        ]
        if not fixed:
            return
        exclude = list(config.hydra.job.config.override_dirname.exclude_keys) + fixed
        # Launchers re-compose each job from `hydra.overrides.hydra`, so the change goes there.
        with read_write(config.hydra.overrides):
            config.hydra.overrides.hydra.append(
                "hydra.job.config.override_dirname.exclude_keys=[" + ",".join(f"'{k}'" for k in exclude) + "]"
            )


class SummariseSweep(Callback):
    """At the end of a multirun, one line per job (status and reason) from each job's
    `summary.json`, whatever happened: Hydra's basic launcher runs every job of a batch and
    only then re-raises the first failure, which would otherwise be all a user sees.

    Registered with `atexit` when the sweep starts, so it also runs when the sweep ends in
    an exception; it reads the files, so it works with launchers that run jobs elsewhere.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import atexit

        if config.hydra.sweeper.get("_target_", "").endswith(("BasicSweeper", "ExperimentSweeper")):
            atexit.register(summarise, config.hydra.sweep.dir)


def summarise(sweep_dir: str) -> None:
    from pathlib import Path

    from trainer import summary
    from trainer.experiments import scheduler
    from trainer.experiments.manifest import members, shown

    jobs = members(sweep_dir)  # reused experiments live in other folders
    if not jobs:
        return
    rows, bad, waiting = [], 0, 0
    for job, label in jobs.items():
        s = summary.read(job)
        if s is not None:
            status, reason, failed = str(s["status"]), s.get("reason") or "", s["status"].bad
        elif job_id := scheduler.recorded(job).get("job_id"):  # detached: in SLURM's hands
            status, reason, failed = "submitted", f"SLURM job {job_id}: python -m trainer.runs list", False
            waiting += 1
        elif not job.exists():
            status, reason, failed = "not run", "the sweep ended before this job started", True
        else:
            status, reason, failed = "no summary", "the job ended before writing summary.json", True
        bad += failed
        name = label if job.parent == Path(sweep_dir) else f"{label}  [{shown(job)}]"
        rows.append(f"  {status:13s} {name}" + (f"  ({reason})" if reason else ""))
    fine = len(jobs) - bad - waiting
    head = f"multirun summary: {len(jobs)} jobs, {fine} fine, " + (f"{waiting} submitted to SLURM, " if waiting else "")
    head += f"{bad} failed or incomplete ({sweep_dir})"
    print("\n".join([head, *rows]), file=sys.stderr, flush=True)
