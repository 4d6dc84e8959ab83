"""Hydra launchers run the same jobs in other processes: submitit_local for real (what
SLURM runs, locally), joblib, and the README's cluster commands compose."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, cli

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


def _summaries(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}


@pytest.mark.parametrize("launcher,extra", [("submitit_local", []), ("joblib", ["hydra.launcher.n_jobs=2"])])
def test_a_two_job_multirun_runs_in_other_processes_and_both_results_are_collected(tmp_path, launcher, extra):
    sweep = tmp_path / "sweep"
    proc = cli(
        "-m", f"hydra/launcher={launcher}", *extra, "trainer.seed=0,1", *TINY, "trainer.epochs=1",
        f"hydra.sweep.dir={sweep}", check=True, timeout=300,
    )  # fmt: skip
    runs = _summaries(sweep)
    assert set(runs) == {"trainer.seed=0", "trainer.seed=1"}
    assert all(r["status"] == "completed" and r["steps"] == 3 for r in runs.values())
    assert runs["trainer.seed=0"]["best"] != runs["trainer.seed=1"]["best"]  # two different jobs
    assert "2 jobs, 2 fine" in proc.stdout + proc.stderr  # the sweep's summary saw both
    if launcher == "submitit_local":  # one submitit job (a process of its own) per run
        assert len({p.parent.name for p in (sweep / ".submitit").glob("*/*_log.out")}) == 2


def readme_commands() -> list[str]:
    """The `python -m trainer` lines of the README's "From one laptop to a cluster" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## From one laptop to a cluster", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.strip().startswith("python -m trainer")]


def test_readme_cluster_commands_compose():
    commands = readme_commands()
    assert len(commands) >= 4
    for command in commands:
        args = [a for a in re.sub(r"\s+#.*$", "", command).split()[3:] if a != "-m"]
        # --cfg composes one job: a swept value `k=a,b` becomes its first value
        args = [re.sub(r"=([^\[\]=]*?),.*$", r"=\1", a) for a in args]
        proc = cli(*args, "--cfg", "all", timeout=120)
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-2000:]}"
