"""`hydra/launcher=slurm` on a real scheduler: a one-node SLURM cluster on this machine
(sweeps/slurm/local_cluster.sh, which .ci/run starts). Sweeps run to completion and are
not run twice, a failed job alone is resubmitted, queued jobs run the code they were
submitted with, and a machine without `sbatch` is told so before anything is written."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, scalars, summary_json

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

CLUSTER = ROOT / "sweeps" / "slurm" / "local_cluster.sh"
# one CPU per job: the local node's cores run several at once
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10"]
JOB = [*TINY, "trainer.epochs=1"]


@pytest.fixture(scope="module")
def up() -> None:
    if shutil.which("sbatch") is None:
        pytest.skip("no SLURM here (no sbatch): sweeps/slurm/local_cluster.sh start, as root, starts one; .ci/run does")
    status = subprocess.run([str(CLUSTER), "status"], capture_output=True, text=True)
    if status.returncode != 0:
        reason = (status.stdout + status.stderr).strip().splitlines()[-1:]
        pytest.skip(
            f"the local SLURM cluster does not answer ({' '.join(reason)}): sweeps/slurm/local_cluster.sh start"
        )


# The test that restarts slurmctld takes this lock exclusively, every other test shared: no
# test submits to a controller that is not there (pytest-xdist runs tests side by side).
RESTART_LOCK = Path(tempfile.gettempdir()) / "trainer-tests-slurmctld.lock"


def _locked(mode: int):
    with open(RESTART_LOCK, "a") as f:
        fcntl.flock(f, mode)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture
def cluster(up):
    yield from _locked(fcntl.LOCK_SH)


@pytest.fixture
def cluster_to_restart(up):
    yield from _locked(fcntl.LOCK_EX)


def sweep(cwd: Path, *args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "trainer", "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, **kw)  # fmt: skip


def submitted(sweep_dir: Path) -> list[str]:
    """The SLURM job ids submitit gave this sweep's jobs that started (`<array id>_<task>`,
    or `<id>` for a job submitted alone): each has a log of its task 0."""
    return sorted(p.parent.name for p in (sweep_dir / ".submitit").glob("*/*_0_log.out"))


def queued(sweep_dir: Path) -> list[str]:
    """The job ids submitted for this sweep, started or not (`<id>_<task>` or `<id>`)."""
    folder = sweep_dir / ".submitit"
    names = [p.name for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
    return sorted(n for n in names if "_" in n or not any(m.startswith(f"{n}_") for m in names))


def test_without_sbatch_the_launcher_says_so_before_writing_anything(tmp_path):
    bare = {"PATH": str(Path(sys.executable).parent)}  # python, and no SLURM client
    proc = sweep(ROOT, *SLURM, *JOB, "trainer.seed=0,1", f"hydra.sweep.dir={tmp_path}/sweep",
                 f"outputs={tmp_path}/out", env=bare)  # fmt: skip
    assert proc.returncode != 0
    assert "hydra/launcher=slurm: no `sbatch` on this machine's PATH" in proc.stderr
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "out").exists()


@pytest.mark.slurm
def test_a_sweep_runs_on_slurm_is_not_run_twice_and_only_the_failed_job_is_resubmitted(tmp_path, cluster):
    sweep_dir = tmp_path / "sweep"
    args = [*SLURM, *JOB, "model._target_=tests.helpers.FailsAtWidth", "model.hidden=4,5,6",
            f"hydra.sweep.dir={sweep_dir}", f"outputs={tmp_path}/out"]  # fmt: skip
    first = sweep(ROOT, *args)
    assert first.returncode != 0 and "1 of 3 launched job(s) failed: model.hidden=5" in first.stderr
    assert len(submitted(sweep_dir)) == 3
    for width, status in ((4, "completed"), (5, "failed"), (6, "completed")):
        assert summary_json(sweep_dir / f"model.hidden={width}")["status"] == status
    again = sweep(ROOT, *args)  # nothing new: the finished ones are done, the failed one stays failed
    assert "1 of" not in again.stderr and len(submitted(sweep_dir)) == 3
    retry = sweep(ROOT, *args, "retry_failed=true")  # only the failed one goes to SLURM again
    assert "1 of 1 launched job(s) failed: model.hidden=5" in retry.stderr
    assert len(submitted(sweep_dir)) == 4


def copy_of_the_repository(dest: Path) -> Path:
    """The project as a git repository of its own (tracked and new files), to edit freely."""
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                           capture_output=True, text=True, check=True).stdout.split("\0")  # fmt: skip
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    for cmd in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(["git", "-C", str(dest), *cmd], check=True, capture_output=True)
    return dest


def squeue_state(job: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    return next((w.split("=", 1)[1] for w in out.split() if w.startswith("JobState=")), "")


@pytest.mark.slurm
def test_a_queued_job_runs_the_code_and_config_it_was_submitted_with(tmp_path, cluster):
    repo = copy_of_the_repository(tmp_path / "repo")
    sweep_dir = tmp_path / "sweep"
    args = [*SLURM, "+hydra.launcher.additional_parameters.hold=true", *JOB, "trainer.seed=7",
            f"hydra.sweep.dir={sweep_dir}", f"outputs={tmp_path}/out"]  # fmt: skip
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    proc = subprocess.Popen([sys.executable, "-m", "trainer", "-m", *args], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not queued(sweep_dir):
            time.sleep(0.5)
        (job,) = queued(sweep_dir)
        assert squeue_state(job) == "PENDING"  # held in the queue
        # meanwhile the working tree changes: code that would crash, a different default
        with open(repo / "trainer" / "experiments" / "job.py", "a") as f:
            f.write('\nraise RuntimeError("edited after submission")\n')
        optim = repo / "conf" / "optim" / "adamw.yaml"
        optim.write_text(optim.read_text().replace("lr: ", "lr: 0.123 # was ", 1))
        subprocess.run(["scontrol", "release", job.split("_")[0]], check=True)
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-3000:]
    summary = summary_json(sweep_dir / "default")
    assert summary["status"] == "completed"
    config = json.loads((sweep_dir / "default" / "experiment.json").read_text())["config"]
    assert config["optim"]["lr"] == 4e-3  # conf/ read from the snapshot too
    snapshot = summary["provenance"]["git"]["snapshot"]
    (code,) = (sweep_dir / ".code").iterdir()
    assert json.loads((code / "SNAPSHOT.json").read_text())["hash"] == snapshot
    assert "edited after submission" not in (code / "trainer" / "experiments" / "job.py").read_text()


def signal_a_running_job(tmp_path: Path, steps: int, command: list[str]) -> tuple[subprocess.Popen, str, str]:
    """A one-job sweep on SLURM; once its first `last` exists, `command + [job id]` is run
    on it (scancel, scontrol requeue). The sweep process (ended), the job id, its output."""
    sweep_dir = tmp_path / "sweep"
    args = [*SLURM, *TINY, "trainer.epochs=1", f"trainer.steps_per_epoch={steps}", "trainer.checkpoint_every=5",
            "trainer.seed=3", f"hydra.sweep.dir={sweep_dir}", f"outputs={tmp_path}/out"]  # fmt: skip
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "trainer", "-m", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not list(sweep_dir.glob("*/checkpoints/last.pt")):
            time.sleep(0.2)
        (job,) = queued(sweep_dir)
        assert squeue_state(job) == "RUNNING"
        subprocess.run([*command, job], check=True)
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    return proc, job, out


@pytest.mark.slurm
def test_scancel_stops_a_job_for_good_and_the_sweep_says_so(tmp_path, cluster):
    """SIGTERM from `scancel` writes `last` and stops the run; unlike submitit's time-limit
    signal it is not requeued (a requeue would undo the cancel). The run is failed, with
    SLURM's state and what the run said, and a relaunch leaves it alone."""
    proc, job, out = signal_a_running_job(tmp_path, 100000, ["scancel"])
    assert proc.returncode != 0 and "1 of 1 launched job(s) failed" in out, out[-3000:]
    assert squeue_state(job) == "CANCELLED"  # not requeued
    run = tmp_path / "sweep" / "default"
    summary = summary_json(run)
    assert summary["status"] == "failed", summary
    assert f"SLURM job {job} CANCELLED" in summary["reason"] and "SIGTERM after step" in summary["reason"]
    assert (run / "checkpoints" / "last.pt").is_file()
    listed = runs(tmp_path / "sweep", "list")
    assert listed.split("\n")[1].split()[:2] == ["failed", "CANCELLED"], listed


def runs(root: Path, *args: str) -> str:
    """`python -m trainer.runs --root <root> <args>`'s output (it must succeed)."""
    proc = subprocess.run([sys.executable, "-m", "trainer.runs", "--root", str(root), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def wait_for_state(job: str, states: tuple[str, ...], timeout: float = 180) -> str:
    deadline = time.time() + timeout
    while (state := squeue_state(job)) not in states and time.time() < deadline:
        time.sleep(0.5)
    return state


@pytest.mark.slurm
def test_a_detached_sweep_exits_and_a_relaunch_submits_only_what_slurm_does_not_hold(tmp_path, cluster_to_restart):
    """Detached: the jobs are submitted and the command exits, printing their ids. While
    they wait in the queue (held), a relaunch of a bigger grid submits only the new job,
    also after slurmctld restarted; `runs list` shows SLURM's state beside the run's own;
    a released job finishes on its own; `runs cancel` cancels a sweep's queued jobs and
    marks the runs failed; a relaunch then submits nothing."""
    sweep_dir = tmp_path / "sweep"
    args = [*SLURM, "hydra.launcher.detach=true", "+hydra.launcher.additional_parameters.hold=true", *JOB,
            f"hydra.sweep.dir={sweep_dir}", f"outputs={tmp_path}/out"]  # fmt: skip
    first = sweep(ROOT, *args, "trainer.seed=1,2")
    assert first.returncode == 0, first.stderr[-3000:]
    jobs = queued(sweep_dir)
    assert len(jobs) == 2 and all(squeue_state(j) == "PENDING" for j in jobs)
    assert f"submitted 2 job(s) to SLURM, not waiting for them (hydra.launcher.detach=true): {' '.join(jobs)}" in (
        first.stdout
    )
    for seed, job in zip((1, 2), jobs):
        assert json.loads((sweep_dir / f"trainer.seed={seed}" / "slurm.json").read_text())["job_id"] == job
    lines = runs(sweep_dir, "list").splitlines()
    assert lines[0].split()[:2] == ["status", "slurm"]
    assert [line.split()[:2] for line in lines[1:3]] == [["submitted", "PENDING"]] * 2

    second = sweep(ROOT, *args, "trainer.seed=1,2,3")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "1 new, 2 waiting in the SLURM queue (skipped)" in second.stdout + second.stderr
    assert len(queued(sweep_dir)) == 3

    subprocess.run(["scontrol", "shutdown", "slurmctld"], check=True, capture_output=True)
    time.sleep(1)
    start = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True)
    assert start.returncode == 0, start.stdout + start.stderr
    third = sweep(ROOT, *args, "trainer.seed=1,2,3")  # the restarted controller still has the jobs
    assert third.returncode == 0 and "3 waiting in the SLURM queue (skipped)" in third.stdout + third.stderr, (
        third.stderr[-3000:]
    )
    assert len(queued(sweep_dir)) == 3

    subprocess.run(["scontrol", "release", jobs[0]], check=True)  # trainer.seed=1 runs by itself
    assert wait_for_state(jobs[0], ("COMPLETED", "FAILED")) == "COMPLETED"
    assert summary_json(sweep_dir / "trainer.seed=1")["status"] == "completed"

    assert "cancelled 2 SLURM job(s)" in runs(sweep_dir, "cancel", str(sweep_dir))
    listed = {line.split()[3]: line.split()[:2] for line in runs(sweep_dir, "list").splitlines()[1:4]}
    assert listed == {"trainer.seed=1": ["completed", "COMPLETED"], "trainer.seed=2": ["failed", "CANCELLED"],
                      "trainer.seed=3": ["failed", "CANCELLED"]}  # fmt: skip
    reason = summary_json(sweep_dir / "trainer.seed=3")["reason"]
    assert reason.startswith("cancelled by ") and "with `python -m trainer.runs cancel`" in reason
    last = sweep(ROOT, *args, "trainer.seed=1,2,3")
    assert "1 done (not retrained), 2 failed or diverged" in last.stdout + last.stderr and len(queued(sweep_dir)) == 3


@pytest.mark.slurm
def test_a_job_killed_for_memory_is_failed_with_the_reason(tmp_path, cluster):
    """The local cluster enforces --mem as a real one does; the job is killed without a
    word from the run, and the sweep settles it: failed, with SLURM's account of it."""
    sweep_dir = tmp_path / "sweep"
    args = [*SLURM, "+hydra.launcher.additional_parameters.mem=200M", *JOB, f"hydra.sweep.dir={sweep_dir}",
            f"outputs={tmp_path}/out"]  # fmt: skip
    first = sweep(ROOT, *args)
    assert first.returncode != 0 and "1 of 1 launched job(s) failed" in first.stderr, first.stderr[-3000:]
    summary = summary_json(sweep_dir / "default")
    assert summary["status"] == "failed" and summary["reason"].startswith("killed for memory: SLURM job ")
    assert "Exceeded job memory limit" in summary["reason"]
    assert runs(sweep_dir, "list").splitlines()[1].split()[:2] == ["failed", "FAILED"]
    again = sweep(ROOT, *args)
    assert "1 failed or diverged (skipped" in again.stdout + again.stderr and len(queued(sweep_dir)) == 1


@pytest.mark.slurm
def test_a_search_cannot_be_detached(tmp_path, cluster):
    proc = sweep(ROOT, "+search=tiny", *SLURM, "hydra.launcher.detach=true", f"hydra.sweep.dir={tmp_path}/s",
                 f"outputs={tmp_path}/out")  # fmt: skip
    assert proc.returncode != 0
    assert "hydra.launcher.detach=true: " in proc.stderr and "search_workers.sbatch" in proc.stderr
    assert not queued(tmp_path / "s")  # nothing submitted


@pytest.mark.slurm
def test_a_job_requeued_by_the_scheduler_resumes_and_logs_every_step_once(tmp_path, cluster):
    """`scontrol requeue` (what a preemption with PreemptMode=REQUEUE does): SLURM sends
    SIGTERM, the run writes `last`, SLURM starts the job again, and the new process resumes
    in the same run directory; the sweep collects the finished run."""
    # 800 steps: on a loaded machine slurmd delivers the requeue's SIGTERM seconds late, and
    # a shorter job (400 steps) once finished before it arrived (a fresh-clone run, 2026-12-07)
    proc, _, out = signal_a_running_job(tmp_path, 800, ["scontrol", "requeue"])
    assert proc.returncode == 0, out[-3000:]
    sweep_dir = tmp_path / "sweep"
    run = sweep_dir / "default"
    summary = summary_json(run)
    assert summary["status"] == "completed" and summary["steps"] == 800
    log = "".join(p.read_text() for p in run.glob("*.log"))
    assert "SIGTERM received" in log and "resumed from" in log
    steps = [s for s, _ in scalars(run / "tb" / "train")["loss/total"]]
    assert steps == list(range(1, 801))  # no step twice, none missing


@pytest.mark.slurm
def test_a_job_at_its_time_limit_is_signalled_requeued_and_resumes(tmp_path, cluster):
    """A one-minute time limit with the warning 50 s before it: submitit's SIGUSR2 arrives
    while the job trains (SLURM sends it within its own polling, up to a minute), the run
    writes `last`, submitit requeues the job, and the new process resumes where `last`
    was written; then the test cancels it. No step is logged twice, none is missing."""
    sweep_dir = tmp_path / "sweep"
    args = [*SLURM, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=50", *TINY, "trainer.epochs=1",
            "trainer.steps_per_epoch=1000000", "trainer.checkpoint_every=50", "trainer.log_every=10",
            "trainer.seed=3", f"hydra.sweep.dir={sweep_dir}", f"outputs={tmp_path}/out"]  # fmt: skip
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "trainer", "-m", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    run = sweep_dir / "default"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and "resumed from" not in "".join(p.read_text() for p in run.glob("*.log")):
            time.sleep(1)
        time.sleep(3)  # a few steps after the resume
        (job,) = queued(sweep_dir)
        subprocess.run(["scancel", job], check=True)
        proc.communicate(timeout=180)
    finally:
        proc.kill()
    log = "".join(p.read_text() for p in run.glob("*.log"))
    assert "SIGUSR2 received" in log and "resumed from" in log
    steps = [s for s, _ in scalars(run / "tb" / "train")["loss/total"]]
    # no step twice, none missing (the step each stop was made at is logged too)
    assert steps == sorted(set(steps)) and set(range(10, steps[-1] + 1, 10)) <= set(steps)
    assert summary_json(run)["steps"] >= steps[-1] > 50


def sbatch(*args: str, env: dict) -> subprocess.CompletedProcess:
    """`sbatch --wait`: submits, and returns when the job (every array task) has ended."""
    return subprocess.run(["sbatch", "--wait", "--parsable", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.mark.slurm
def test_the_ddp_recipe_trains_one_run_with_two_gloo_processes(tmp_path, cluster):
    """sweeps/slurm/ddp.sbatch on the local node: one torchrun, two CPU workers (gloo), one
    run directory named after the job id."""
    job = sbatch("--gpus-per-node=0", "--cpus-per-task=2", "--mem=3G", "--time=10", f"--output={tmp_path}/%j.out",
                 "sweeps/slurm/ddp.sbatch", "trainer.device=cpu", *TINY, "trainer.batch_size=4",
                 env={"GPUS_PER_NODE": "2", "TRAINER_OUTPUTS": str(tmp_path)})  # fmt: skip
    job_id = job.stdout.strip()
    assert job.returncode == 0, (job.stderr + "".join(p.read_text() for p in tmp_path.glob("*.out")))[-3000:]
    summary = summary_json(tmp_path / "ddp" / job_id)
    assert summary["status"] == "completed" and summary["steps"] == 6
    # torchrun says this only when it starts more than one worker on the node
    assert "Setting OMP_NUM_THREADS environment variable for each process" in (tmp_path / f"{job_id}.out").read_text()
    assert (
        json.loads((tmp_path / "ddp" / job_id / "experiment.json").read_text())["config"]["trainer"]["batch_size"] == 4
    )


@pytest.mark.slurm
def test_the_search_workers_recipe_runs_two_array_tasks_on_one_study_to_exactly_n_trials(tmp_path, cluster):
    import optuna

    storage = f"journal:///{tmp_path}/optuna.log"
    job = sbatch("--array=0-1", "--gpus-per-task=0", "--cpus-per-task=1", "--mem=2G", "--time=10",
                 f"--output={tmp_path}/%A_%a.out", "sweeps/slurm/search_workers.sbatch", "tiny",
                 "hydra.sweeper.n_trials=5", "trainer.epochs=2", "trainer.steps_per_epoch=2", "trainer.batch_size=2",
                 "trainer.val_batch_size=4", "trainer.num_workers=0", "data.segment_seconds=0.25", "data.val_size=4",
                 "data.corpus_size=4", "data.noise_corpus_size=4", f"hydra.sweep.dir={tmp_path}/search",
                 f"outputs={tmp_path}/out", env={"OPTUNA_STORAGE": storage, "OMP_NUM_THREADS": "1"})  # fmt: skip
    outs = "".join(p.read_text() for p in tmp_path.glob("*.out"))
    assert job.returncode == 0, (job.stderr + outs)[-3000:]
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="tiny", storage=JournalStorage(JournalFileBackend(f"{tmp_path}/optuna.log")))
    counted = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == 5 and not [t for t in study.trials if t.state.name == "RUNNING"]
    workers = {t.system_attrs.get("worker") for t in counted}
    assert len(workers) == 2 and None not in workers  # both array tasks ran trials


@pytest.mark.slurm
def test_a_waiting_sweep_whose_queued_jobs_are_cancelled_ends_and_says_so(tmp_path, cluster):
    """The tasks of an array cancelled before any started become one record in squeue
    (`<array id>`, not `<array id>_<task>`): the sweep still sees them end."""
    sweep_dir = tmp_path / "sweep"
    args = [*SLURM, "+hydra.launcher.additional_parameters.hold=true", *JOB, "trainer.seed=1,2",
            f"hydra.sweep.dir={sweep_dir}", f"outputs={tmp_path}/out"]  # fmt: skip
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "trainer", "-m", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(queued(sweep_dir)) < 2:
            time.sleep(0.5)
        assert "cancelled 2 SLURM job(s)" in runs(sweep_dir, "cancel", str(sweep_dir))
        out, _ = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode != 0 and "2 of 2 launched job(s) failed" in out, out[-3000:]
    for seed in (1, 2):
        assert summary_json(sweep_dir / f"trainer.seed={seed}")["reason"].startswith("cancelled by ")
