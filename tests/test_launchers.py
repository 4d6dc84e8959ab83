"""Hydra launchers run the same jobs in other processes: submitit_local for real (what
SLURM runs, locally), joblib, and the README's cluster commands compose."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, cli, scalars

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


def _summaries(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}


def _preempt_one_job(sweep: Path, at_step: int, timeout: float = 240) -> None:
    """SIGUSR2 (what submitit and SLURM send before a time limit or preemption) to the first
    submitit job whose log reaches `at_step`; the job process is the child of the job id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for out in sweep.glob(".submitit/*/*_0_log.out"):
            if f" step {at_step} " in out.read_text(errors="replace"):
                job = out.parent.name  # submitit_local's job id: the pid of the job's controller
                (task,) = Path(f"/proc/{job}/task/{job}/children").read_text().split()
                os.kill(int(task), signal.SIGUSR2)
                return
        time.sleep(0.02)
    raise AssertionError("no job reached the step to preempt")


RAY = pytest.mark.skipif(
    not importlib.util.find_spec("hydra_plugins.hydra_ray_launcher"), reason="pip install -e '.[ray]'"
)


@pytest.mark.parametrize(
    "launcher,extra",
    [("submitit_local", []), ("joblib", ["hydra.launcher.n_jobs=2"]), pytest.param("ray", [], marks=RAY)],
)
def test_a_two_job_multirun_runs_in_other_processes_and_both_results_are_collected(tmp_path, launcher, extra):
    """submitit_local: one job is also preempted mid-run; it saves `last`, submitit requeues
    it, and the new process resumes it in the same run directory."""
    sweep = tmp_path / "sweep"
    preempt = launcher == "submitit_local"
    # long enough that the job is still training when the signal lands, even on a loaded machine
    steps = ["trainer.steps_per_epoch=300", "trainer.checkpoint_every=5"] if preempt else []
    command = [
        sys.executable,
        "-m",
        "trainer",
        "-m",
        f"hydra/launcher={launcher}",
        *extra,
        "trainer.seed=0,1",
        *TINY,
        "trainer.epochs=1",
        *steps,
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if preempt:
        _preempt_one_job(sweep, at_step=7)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-3000:]
    runs = _summaries(sweep)
    assert set(runs) == {"trainer.seed=0", "trainer.seed=1"}
    want = 300 if preempt else 3
    assert all(r["status"] == "completed" and r["steps"] == want for r in runs.values())
    assert runs["trainer.seed=0"]["best"] != runs["trainer.seed=1"]["best"]  # two different jobs
    assert "2 jobs, 2 fine" in out  # the sweep's summary saw both
    if preempt:  # one submitit job (a process of its own) per run
        assert len(list((sweep / ".submitit").glob("*/*_0_log.out"))) == 2
        logs = {name: "".join(p.read_text() for p in (sweep / name).glob("*.log")) for name in runs}  # Hydra appends
        (preempted,) = [name for name, text in logs.items() if "SIGUSR2 received" in text]
        assert all(("resumed from" in text) == (name == preempted) for name, text in logs.items())
        steps_logged = [s for s, _ in scalars(sweep / preempted / "tb" / "train")["loss/total"]]
        assert steps_logged == list(range(1, 301))  # no step twice, none missing


def readme_commands() -> list[list[str]]:
    """The trainer arguments of each `python -m trainer` and `torchrun ... -m trainer` line of
    the README's "From one laptop to a cluster" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## From one laptop to a cluster", 1)[1].split("\n## ", 1)[0]
    commands = []
    for line in section.splitlines():
        words = re.sub(r"\s+#.*$", "", line).split()
        if words[:1] in (["python"], ["torchrun"]) and "trainer" in words:
            commands.append([w for w in words[words.index("trainer") + 1 :] if w != "-m"])
    return commands


def _first_job(args: list[str]) -> list[str]:
    """One job of a sweep: a swept value `k=a,b` becomes its first value."""
    return [re.sub(r"=([^\[\]=]*?),.*$", r"=\1", a) for a in args]


def test_readme_cluster_commands_compose():
    from hydra import compose, initialize_config_dir

    from trainer.launch.startup import register

    commands = readme_commands()
    assert len(commands) >= 8 and sum("hydra.run.dir=/shared/runs/a" in c for c in commands) == 1  # torchrun lines too
    register()
    for args in commands:
        if "hydra/launcher=ray" in args and not importlib.util.find_spec("hydra_plugins.hydra_ray_launcher"):
            continue  # the ray extra is optional
        args = _first_job(args)
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=args, return_hydra_config=True)
        assert cfg.hydra.runtime is not None  # composed with Hydra's own config (launchers, sweepers)
    # and once through the real command line, as the issue asks (`--cfg job` prints the job's config)
    slurm = next(c for c in commands if "hydra/launcher=slurm_gpu" in c)
    proc = cli(*_first_job(slurm), "--cfg", "job", timeout=120)
    assert proc.returncode == 0 and "optim:" in proc.stdout, proc.stderr[-2000:]


def test_machine_recipes_parse():
    scripts = sorted((ROOT / "benchmarks" / "recipes").rglob("*.sh")) + sorted((ROOT / "sweeps" / "slurm").glob("*.s*"))
    names = {s.name for s in scripts}
    assert {"ddp.sbatch", "search_workers.sbatch", "local_cluster.sh", "gpu_precision_sweep.sh"} <= names, names
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True)
