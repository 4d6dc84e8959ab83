"""Where an experiment runs, and what a launch does with one that exists already.

Hydra asks `experiment_dir` (a resolver in `hydra.run.dir` and `hydra.sweep.subdir`) where
a job goes. The answer depends on the experiment's identity (identity.py), not on how it
was spelled: a run folder holding the same experiment, found in the candidate folder or
anywhere under `outputs` through the runs index, is reused; otherwise the job gets
`<base>/<alias>`, or `<base>/<alias>-<hash>` when that folder holds another experiment
(two configs may share an alias, never a folder).

`plan` says what a launch does with each experiment (the sweeper acts on it):
  new      nothing exists: train it
  done     completed, early-stopped or pruned: not retrained, its results are reported
  resume   started and not finished (interrupted, killed, no trustworthy summary):
           continues from its `last.pt`
  failed   failed or diverged: skipped, unless `retry_failed=true` makes it a
  retry    fresh run in a new folder (the failed one stays as it was)
  running  another live process trains it now (it holds the folder's lock), or its SLURM
           job runs: skipped
  queued   its SLURM job waits in the queue (submitted, requeued, held): skipped

A run submitted to SLURM (its `slurm.json` names the job) is asked of the scheduler
(scheduler.py): while the job is in the queue nothing is submitted again, and once the job
ended without the run finishing (cancelled, killed for memory, vanished) the run is
settled as `failed`, with SLURM's reason, like any failed run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from trainer import identity
from trainer.experiments import naming, scheduler
from trainer.experiments.index import EXPERIMENT, FINISHED, RETRYABLE, SLURM, SUBMITTED, Record, RunsIndex, read_run
from trainer.experiments.lock import held
from trainer.identity import Experiment

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


def folder_name(exp: Experiment) -> str | None:
    """The alias as a folder name, or None when it is too long to be one by itself."""
    return exp.alias if len(exp.alias.encode()) <= MAX_NAME else None


def reusable(folder: Path, exp: Experiment) -> Record | None:
    """The run in `folder` when it holds `exp` and is worth continuing (not failed)."""
    if not registered(folder):
        return None
    here = read_run(folder)
    return here if here.hash == exp.hash and here.status not in RETRYABLE else None


def registered(folder: Path) -> bool:
    """Whether `folder` is some experiment's run folder (started, or submitted to SLURM)."""
    return (folder / EXPERIMENT).is_file() or (folder / SLURM).is_file()


def existing(exp: Experiment, candidate: Path, outputs: Path, index: RunsIndex | None = None) -> Record | None:
    """The most useful run folder of `exp`: the candidate folder first (a pinned sweep dir
    may lie outside `outputs`), then the runs index of `outputs`."""
    if found := reusable(candidate, exp):
        return found
    base = candidate.parent
    if base.is_dir() and not _inside(base, outputs):  # a pinned sweep dir the index does not cover
        for folder in sorted(base.iterdir()):
            if folder != candidate and (found := reusable(folder, exp)):
                return found
    hits: list[Record] = []
    if index is None and outputs.is_dir():
        index = RunsIndex(outputs)
        try:
            hits = index.refresh().find(exp.hash)
        finally:
            index.close()
    elif index is not None:
        hits = index.find(exp.hash)
    if hits:
        hits[0].path = str(outputs / hits[0].path)
        return hits[0]
    # a failed run of `exp` in a pinned sweep dir the index does not cover: known, so that
    # a relaunch does not train it again unless asked (retry_failed)
    if registered(candidate) and (here := read_run(candidate)).hash == exp.hash:
        return here
    return None


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def fresh(base: Path, exp: Experiment) -> Path:
    """`<base>/<alias>` unless that folder belongs to another experiment (or to this one's
    failed attempt, kept as it was), then `<alias>-<short hash>`, `-2`, ..."""
    name = folder_name(exp)
    stem = name or exp.alias[: MAX_NAME // 2] + "..."  # a cut alias names nothing by itself
    names = ([name] if name else []) + [f"{stem}-{exp.short}"] + [f"{stem}-{exp.short}-{i}" for i in range(2, 1000)]
    for candidate in names:
        folder = base / candidate
        if not registered(folder):
            return folder
    raise RuntimeError(f"{base}: no free folder for {exp.alias}")


def plan(exp: Experiment, base: Path, outputs: Path, retry_failed: bool, index: RunsIndex | None = None) -> Plan:
    """`index`: a fresh index of `outputs` to share between many plans (a sweeper's)."""
    name = folder_name(exp)
    found = existing(exp, base / name if name else base, outputs, index)
    if found is None:
        return Plan(exp, fresh(base, exp), "new")
    where = Path(found.path)
    if found.job is not None and found.status not in FINISHED + RETRYABLE:
        state = (scheduler.states([found.job]) or {}).get(found.job)
        if state in scheduler.ACTIVE:
            action = "running" if state in ("RUNNING", "COMPLETING", "CONFIGURING") else "queued"
            return Plan(exp, where, action, f"{found.status}, SLURM job {found.job} {state}")
        if state is None and found.status == SUBMITTED:  # the scheduler does not answer
            return Plan(exp, where, "queued", f"{found.status}, SLURM job {found.job} (no answer from SLURM)")
        found = scheduler.settle(where, found, state)
    if found.status in FINISHED:
        return Plan(exp, where, "done", found.status)
    if found.status in RETRYABLE:
        if retry_failed:
            return Plan(exp, fresh(base, exp), "retry", found.status)
        return Plan(exp, where, "failed", found.status)
    return Plan(exp, where, "running" if held(where) else "resume", found.status)


@contextmanager
def composed_job(hydra_context: Any, sweep_config: DictConfig, overrides: Sequence[str]) -> Iterator[DictConfig]:
    """A sweep's job composed as its launch will compose it, its own `${hydra:...}` values
    answering while the block runs (a sweeper or launcher asks where the job goes)."""
    from hydra.core.hydra_config import HydraConfig

    cfg = hydra_context.config_loader.load_sweep_config(sweep_config, list(overrides))
    hydra_config = HydraConfig.instance()
    before = hydra_config.cfg
    hydra_config.set_config(cfg)
    try:
        yield cfg
    finally:
        if before is not None:
            hydra_config.set_config(before)


_PLANS: dict[tuple, Plan] = {}  # a job's folder is asked for more than once: one answer


def plan_for(root: DictConfig, base: str, index: RunsIndex | None = None) -> Plan:
    """The plan of the job whose whole config (with `hydra`) is `root`."""
    exp = identity.of(root, naming.alias(root, root.hydra))
    key = (exp.hash, exp.alias, base, str(root.outputs), bool(root.retry_failed))
    if key not in _PLANS:
        _PLANS[key] = plan(exp, Path(base), Path(str(root.outputs)), bool(root.retry_failed), index)
    return _PLANS[key]


def experiment_dir(base: str, *, _root_: DictConfig) -> str:
    """Resolver: `${experiment_dir:<base>}`, the folder of this job's experiment. Absolute,
    so that it also serves as `hydra.sweep.subdir` (joined to the sweep dir, an absolute
    path stays itself) when the experiment lives in another sweep's folder."""
    return str(plan_for(_root_, base).run_dir.absolute())
