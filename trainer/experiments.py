"""Where an experiment runs, and what a launch does with one that exists already.

Hydra asks `experiment_dir` (a resolver in `hydra.run.dir` and `hydra.sweep.subdir`) where
a job goes. The answer depends on the experiment's identity (trainer/identity.py), not on
how it was spelled: a run folder holding the same experiment, found in the candidate
folder or anywhere under `outputs` through the runs index, is reused; otherwise the job
gets `<base>/<alias>`, or `<base>/<alias>-<hash>` when that folder holds another
experiment (two configs may share an alias, never a folder).

`plan` says what a launch does with each experiment (the sweeper acts on it):
  new      nothing exists: train it
  done     completed, early-stopped or pruned: not retrained, its results are reported
  resume   started and not finished (interrupted, killed, no trustworthy summary):
           continues from its `last.pt`
  failed   failed or diverged: skipped, unless `retry_failed=true` makes it a
  retry    fresh run in a new folder (the failed one stays as it was)
  running  another live process trains it now (it holds the folder's lock): skipped

`job` is what every Hydra job runs: take the folder's lock, record the experiment
(`experiment.json`, with provenance), train (trainer/run.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainer import identity, provenance
from trainer.identity import Experiment
from trainer.runlock import RunLock, held
from trainer.runs_index import EXPERIMENT, FINISHED, RETRYABLE, Record, RunsIndex, read_json, read_run

log = logging.getLogger("trainer")

LAUNCHED = ("new", "resume", "retry")
MAX_NAME = 200  # bytes of a folder name from an alias (file systems allow 255; many overrides make more)


@dataclass(frozen=True)
class Plan:
    experiment: Experiment
    run_dir: Path
    action: str  # see the module docstring
    status: str | None = None  # the existing run's, when there is one

    @property
    def launched(self) -> bool:
        return self.action in LAUNCHED


def existing(exp: Experiment, candidate: Path, outputs: Path, index: RunsIndex | None = None) -> Record | None:
    """The most useful run folder of `exp`: the candidate folder first (a pinned sweep dir
    may lie outside `outputs`), then the runs index of `outputs`."""
    if (candidate / EXPERIMENT).is_file():
        here = read_run(candidate)
        if here.hash == exp.hash and here.status not in RETRYABLE:
            return here
    base = candidate.parent
    if base.is_dir() and not _inside(base, outputs):  # a pinned sweep dir the index does not cover
        for folder in sorted(base.iterdir()):
            if folder != candidate and (folder / EXPERIMENT).is_file():
                here = read_run(folder)
                if here.hash == exp.hash and here.status not in RETRYABLE:
                    return here
    if index is None:
        if not outputs.is_dir():
            return None
        index = RunsIndex(outputs)
        try:
            hits = index.refresh().find(exp.hash)
        finally:
            index.close()
    else:
        hits = index.find(exp.hash)
    if not hits:
        return None
    hits[0].path = str(outputs / hits[0].path)
    return hits[0]


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def fresh(base: Path, exp: Experiment) -> Path:
    """`<base>/<alias>` unless that folder belongs to another experiment (or to this one's
    failed attempt, kept as it was), then `<alias>-<short hash>`, `-2`, ..."""
    alias = exp.alias if len(exp.alias.encode()) <= MAX_NAME else exp.alias[: MAX_NAME // 2] + "..."
    names = [alias, f"{alias}-{exp.short}"] + [f"{alias}-{exp.short}-{i}" for i in range(2, 1000)]
    if alias != exp.alias:  # a cut alias names nothing by itself
        names.pop(0)
    for name in names:
        folder = base / name
        if not (folder / EXPERIMENT).exists():
            return folder
    raise RuntimeError(f"{base}: no free folder for {exp.alias}")


def plan(exp: Experiment, base: Path, outputs: Path, retry_failed: bool, index: RunsIndex | None = None) -> Plan:
    """`index`: a fresh index of `outputs` to share between many plans (a sweeper's)."""
    found = existing(exp, base / exp.alias if len(exp.alias.encode()) <= MAX_NAME else base, outputs, index)
    if found is None:
        return Plan(exp, fresh(base, exp), "new")
    where = Path(found.path)
    if found.status in FINISHED:
        return Plan(exp, where, "done", found.status)
    if found.status in RETRYABLE:
        return (
            Plan(exp, fresh(base, exp), "retry", found.status)
            if retry_failed
            else Plan(exp, where, "failed", found.status)
        )
    if held(where):
        return Plan(exp, where, "running", found.status)
    return Plan(exp, where, "resume", found.status)


_PLANS: dict[tuple, Plan] = {}  # a job's folder is asked for more than once: one answer


def plan_for(root: DictConfig, base: str, index: RunsIndex | None = None) -> Plan:
    """The plan of the job whose whole config (with `hydra`) is `root`."""
    exp = identity.of(root, str(root.hydra.job.override_dirname or ""))
    key = (exp.hash, exp.alias, base, str(root.outputs), bool(root.retry_failed))
    if key not in _PLANS:
        _PLANS[key] = plan(exp, Path(base), Path(str(root.outputs)), bool(root.retry_failed), index)
    return _PLANS[key]


def experiment_dir(base: str, *, _root_: DictConfig) -> str:
    """Resolver: `${experiment_dir:<base>}`, the folder of this job's experiment. Absolute,
    so that it also serves as `hydra.sweep.subdir` (joined to the sweep dir, an absolute
    path stays itself) when the experiment lives in another sweep's folder."""
    return str(plan_for(_root_, base).run_dir.absolute())


def record(run_dir: Path, exp: Experiment, cfg: DictConfig, choices: dict[str, str], prov: dict[str, Any]) -> None:
    """experiment.json: the run folder's identity, written before training starts, so that
    an interrupted or killed run is found and resumed by the next launch."""
    from trainer.run_state import write_json

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
    from trainer.distributed import Dist
    from trainer.run import run

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
        return run(cfg, run_dir, choices, experiment=exp, provenance=prov)
    finally:
        lock.release()


def register_resolver() -> None:
    OmegaConf.register_new_resolver("experiment_dir", experiment_dir, replace=True)
