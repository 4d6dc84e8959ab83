"""What every Hydra job runs: take the run folder's lock, record the experiment
(`experiment.json`, with provenance) and the SLURM job that runs it (`slurm.json`, under
SLURM), train (trainer/run.py)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from trainer import identity, provenance
from trainer.distributed import Dist
from trainer.experiments import scheduler
from trainer.experiments.index import EXPERIMENT, FINISHED, read_run
from trainer.experiments.lock import RunLock
from trainer.files import read_json, write_json
from trainer.identity import Experiment
from trainer.run import run

log = logging.getLogger("trainer")


def record(run_dir: Path, exp: Experiment, cfg: DictConfig, choices: dict[str, str], prov: dict[str, Any]) -> None:
    """experiment.json: the run folder's identity, written before training starts, so that
    an interrupted or killed run is found and resumed by the next launch."""
    path = Path(run_dir) / EXPERIMENT
    before = read_json(path)
    if not (isinstance(before, dict) and (before.get("experiment") or {}).get("hash") == exp.hash):
        before = {}
    write_json(
        path,
        {
            "experiment": exp.to_dict(),
            "choices": dict(choices),
            "config": identity.job_config(cfg),
            # the first start of this experiment here: a resume keeps them (summary.json
            # has the provenance of the process that wrote it)
            "created": before.get("created") or time.time(),
            "provenance": before.get("provenance") or prov,
        },
    )


def job(cfg: DictConfig, run_dir: Path, choices: dict[str, str], alias: str, command: list[str]):
    """One Hydra job: lock the folder, record the experiment, train. Returns the objective,
    or None when another process holds the folder."""
    run_dir = Path(run_dir)
    exp = identity.of(cfg, alias)
    main = Dist.from_env().main  # data-parallel: rank 0 locks and writes for every rank
    lock = RunLock(run_dir)
    if main and not lock.acquire():
        log.warning("%s is being trained by %s: this launch leaves it alone", run_dir, lock.holder())
        return None
    try:
        here = read_run(run_dir)
        if here.hash == exp.hash and here.status in FINISHED:  # its files stay as they are
            log.info("%s: experiment %s already %s; nothing to do (%s = %s)", run_dir, exp.short, here.status,
                     here.monitor, here.objective)  # fmt: skip
            return here.objective
        prov = provenance.collect(run_dir if main else None, command)
        if main:
            record(run_dir, exp, cfg, choices, prov)
            scheduler.record(run_dir, scheduler.job_id_from_env(), exp.to_dict())
        return run(cfg, run_dir, choices, experiment=exp, provenance=prov)
    finally:
        lock.release()
