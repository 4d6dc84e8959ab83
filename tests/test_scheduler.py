"""What the planner and the runs index make of a run's SLURM job (trainer/experiments/scheduler.py),
with `squeue` answering as SLURM 22.05 does, from a stand-in on PATH: queued jobs are not
submitted twice, a job gone from the queue leaves a failed run that says why, and no
answer from the scheduler changes nothing. tests/test_slurm.py does the same on the real
scheduler."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from trainer.experiments import scheduler
from trainer.experiments.index import RunsIndex, read_run
from trainer.experiments.plan import plan
from trainer.identity import Experiment

EXP = Experiment(hash="ab" * 32, group="cd" * 32, alias="optim=sgd", seed=3)


@pytest.fixture
def squeue(tmp_path, monkeypatch):
    """Set what `squeue` prints (stdout, stderr, exit status); returns the file where each
    call's arguments are logged."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "squeue.calls"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def answer(out: str = "", err: str = "", code: int = 0) -> Path:
        (bin_dir / "out").write_text(out)
        (bin_dir / "err").write_text(err)
        script = bin_dir / "squeue"
        script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\ncat {bin_dir}/out\ncat {bin_dir}/err >&2\nexit {code}\n')
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
        return calls

    return answer


def submitted(run_dir: Path, job: str) -> Path:
    scheduler.record(run_dir, job, EXP.to_dict())
    return run_dir


def test_a_submitted_run_is_indexed_and_a_relaunch_leaves_it_to_slurm(tmp_path, squeue):
    outputs = tmp_path / "outputs"
    run = submitted(outputs / "sweep" / EXP.alias, "41_2")
    calls = squeue("41_2|PENDING\n41_3|RUNNING\n")
    index = RunsIndex(outputs).refresh()
    (found,) = index.find(EXP.hash)
    index.close()
    assert (found.status, found.job, found.alias, found.seed) == ("submitted", "41_2", "optim=sgd", 3)
    p = plan(EXP, outputs / "sweep", outputs, retry_failed=True)
    assert (p.action, p.run_dir, p.status) == ("queued", run, "submitted, SLURM job 41_2 PENDING")
    assert calls.read_text().split()[-2:] == ["-j", "41"]  # asked by array: see the next test
    squeue("41_2|RUNNING\n")
    assert plan(EXP, outputs / "sweep", outputs, retry_failed=True).action == "running"
    assert not (run / "summary.json").exists()


def test_the_tasks_of_an_array_cancelled_before_starting_are_found_by_the_array(squeue):
    squeue("7|CANCELLED\n9_0|COMPLETED\n")
    assert scheduler.states(["7_1", "7_0", "9_0", "9_1"]) == {
        "7_0": "CANCELLED", "7_1": "CANCELLED", "9_0": "COMPLETED", "9_1": scheduler.GONE,
    }  # fmt: skip


def test_a_job_gone_from_the_queue_leaves_a_failed_run_that_says_why(tmp_path, squeue):
    outputs = tmp_path / "outputs"
    run = submitted(outputs / "sweep" / EXP.alias, "41_2")
    squeue(err="slurm_load_jobs error: Invalid job id specified\n", code=1)  # what squeue says of forgotten jobs
    p = plan(EXP, outputs / "sweep", outputs, retry_failed=False)
    assert p.action == "failed"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["experiment"]["hash"] == EXP.hash
    assert summary["reason"] == (
        "SLURM job 41_2 left the queue without the run finishing (the scheduler no longer knows the job)"
    )
    retry = plan(EXP, outputs / "sweep", outputs, retry_failed=True)  # a fresh folder; the failed one stays
    assert retry.action == "retry" and retry.run_dir != run and (run / "summary.json").is_file()


def test_without_an_answer_from_slurm_nothing_is_submitted_again_nor_settled(tmp_path, squeue):
    outputs = tmp_path / "outputs"
    run = submitted(outputs / "sweep" / EXP.alias, "41_2")
    squeue(err="slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n", code=1)
    assert scheduler.states(["41_2"]) is None
    p = plan(EXP, outputs / "sweep", outputs, retry_failed=True)
    assert p.action == "queued" and "no answer from SLURM" in str(p.status)
    assert not (run / "summary.json").exists()


@pytest.mark.parametrize(
    "own, state, settled",
    [
        ("incomplete", "FAILED", True),  # killed without a word (memory, a segfault)
        ("incomplete", "COMPLETED", True),
        ("submitted", "CANCELLED", True),  # cancelled before it started
        ("interrupted", "CANCELLED", True),  # scancel: the run saved `last`, SLURM ended it
        ("interrupted", "TIMEOUT", True),
        ("interrupted", "FAILED", False),  # the run's own stop (exit 143): resumable
        ("interrupted", scheduler.GONE, False),
        ("incomplete", "PENDING", False),  # requeued: it will run again
        ("incomplete", None, False),  # no answer
        ("completed", "CANCELLED", False),  # finished before the cancel landed
        ("failed", "FAILED", False),
    ],
)
def test_which_runs_are_settled(tmp_path, own, state, settled):
    from trainer.experiments.index import Record

    assert scheduler.needs_settling(Record(path="r", status=own, job="5"), state) is settled
    assert not scheduler.needs_settling(Record(path="r", status=own, job=None), state)


def test_a_run_started_outside_slurm_no_longer_follows_its_old_job(tmp_path):
    run = submitted(tmp_path / "run", "41_2")
    scheduler.record(run, None)  # what the job does when it starts outside SLURM
    data = json.loads((run / "slurm.json").read_text())
    assert data["job_id"] is None and data["jobs"] == ["41_2"] and read_run(run).job is None
    scheduler.record(run, "50")
    assert json.loads((run / "slurm.json").read_text())["jobs"] == ["41_2", "50"]
    scheduler.record(tmp_path / "plain", None)  # a run that never met SLURM gets no file
    assert not (tmp_path / "plain").exists()


def test_the_job_id_is_the_one_squeue_and_submitit_print():
    assert scheduler.job_id_from_env(
        {"SLURM_JOB_ID": "12", "SLURM_ARRAY_JOB_ID": "10", "SLURM_ARRAY_TASK_ID": "2"}
    ) == ("10_2")
    assert scheduler.job_id_from_env({"SLURM_JOB_ID": "12"}) == "12"
    assert scheduler.job_id_from_env({}) is None


def test_a_kill_for_memory_is_read_from_the_job_log(tmp_path):
    log = tmp_path / "job.out"
    log.write_text("step 3\nslurmstepd-vm: error: Exceeded job memory limit\n*** JOB 5 ON vm CANCELLED ***\n")
    assert scheduler.memory_line(str(log)) == "slurmstepd-vm: error: Exceeded job memory limit"
    log.write_text("step 3\nall fine\n")
    assert scheduler.memory_line(str(log)) is None and scheduler.memory_line(None) is None
