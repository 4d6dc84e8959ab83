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
  running  another live process trains it now (it holds the folder's lock): skipped
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from trainer import identity
from trainer.experiments import naming
from trainer.experiments.index import EXPERIMENT, FINISHED, RETRYABLE, Record, RunsIndex, read_run
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
    if not (folder / EXPERIMENT).is_file():
        return None
    here = read_run(folder)
    return here if here.hash == exp.hash and here.status not in RETRYABLE else None


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
    if (candidate / EXPERIMENT).is_file() and (here := read_run(candidate)).hash == exp.hash:
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
        if not (folder / EXPERIMENT).exists():
            return folder
    raise RuntimeError(f"{base}: no free folder for {exp.alias}")


def plan(exp: Experiment, base: Path, outputs: Path, retry_failed: bool, index: RunsIndex | None = None) -> Plan:
    """`index`: a fresh index of `outputs` to share between many plans (a sweeper's)."""
    name = folder_name(exp)
    found = existing(exp, base / name if name else base, outputs, index)
    if found is None:
        return Plan(exp, fresh(base, exp), "new")
    where = Path(found.path)
    if found.status in FINISHED:
        return Plan(exp, where, "done", found.status)
    if found.status in RETRYABLE:
        if retry_failed:
            return Plan(exp, fresh(base, exp), "retry", found.status)
        return Plan(exp, where, "failed", found.status)
    return Plan(exp, where, "running" if held(where) else "resume", found.status)


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
