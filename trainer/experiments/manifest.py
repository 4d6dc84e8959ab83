"""`<sweep dir>/sweep.json`: the experiments a sweep is made of, wherever their folders are.

A relaunched or extended sweep reuses finished experiments from other folders (an earlier
sweep, a single run); the manifest lists every experiment of the sweep with its folder
(relative to the sweep dir), so the sweep's report and its end-of-sweep summary show them
all. Written by the sweeper before each batch is launched.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

from trainer.files import write_json

FILE = "sweep.json"
log = logging.getLogger("trainer")

_SAY = {
    "new": "new",
    "resume": "to resume from last.pt",
    "retry": "to retry (retry_failed=true)",
    "done": "done (not retrained)",
    "failed": "failed or diverged (skipped; retry_failed=true reruns them)",
    "running": "being trained by another process (skipped)",
    "queued": "waiting in the SLURM queue (skipped)",
}


def write_manifest(sweep_dir: Path, plans) -> None:
    sweep_dir = Path(sweep_dir)
    experiments = [
        {
            **p.experiment.to_dict(),
            "run_dir": os.path.relpath(p.run_dir.absolute(), sweep_dir.absolute()),
            "action": p.action,
            "status": p.status,
        }
        for p in plans
    ]
    write_json(sweep_dir / FILE, {"updated": time.time(), "experiments": experiments})


def listed(sweep_dir: Path) -> dict[Path, str]:
    """The folders a sweep.json lists, each with the alias the sweep planned it under (its
    label in this sweep, wherever the folder is); empty without a sweep.json, and a damaged
    one is ignored with a warning."""
    path = Path(sweep_dir) / FILE
    if not path.is_file():
        return {}
    try:
        experiments = json.loads(path.read_text())["experiments"]
        return {Path(os.path.normpath(Path(sweep_dir) / e["run_dir"])): str(e["alias"]) for e in experiments}
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("%s is damaged (%s): listing only the folders inside the sweep dir", path, err)
        return {}


def members(sweep_dir: Path) -> dict[Path, str]:
    """Every run of a sweep with its label: those sweep.json lists (labelled as planned),
    then any other job folder inside it (`.hydra/` below the sweep dir, at any depth: a
    search's trials too; labelled by their folder's name)."""
    runs = listed(sweep_dir)
    known = {p.resolve() for p in runs}
    inside = sorted(h.parent for h in Path(sweep_dir).rglob(".hydra") if h.parent != Path(sweep_dir))
    return runs | {p: p.name for p in inside if p.resolve() not in known}


def shown(path: Path) -> str:
    """A folder as a person wants it printed: relative to the working dir when inside it."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def report_plan(sweep_dir: Path, plans) -> None:
    counts = Counter(p.action for p in plans)
    said = ", ".join(f"{counts[a]} {_SAY[a]}" for a in _SAY if counts[a])
    lines = [f"sweep {sweep_dir}: {len(plans)} experiments: {said}"]
    width = max((len(p.experiment.alias) for p in plans), default=0)
    for p in plans:
        where = shown(p.run_dir)
        lines.append(f"  {p.action:8s} {p.experiment.short}  {p.experiment.alias:{width}s}  {where}")
    log.info("\n".join(lines))
