"""The SLURM job behind a run folder: recorded when it is submitted, asked of the scheduler.

A job submitted to SLURM may wait in the queue for hours before its process writes a file,
and a job killed by the scheduler (cancelled, over its memory) may never write one again;
in both cases only the scheduler knows. So the run folder keeps `slurm.json`: the job id,
written by the launcher at submission (hydra/launcher=slurm) and by the job itself when it
starts under SLURM, with the ids of earlier jobs of the same run.

`states` asks `squeue` (one call for many jobs; finished jobs stay in it `MinJobAge`
seconds, 300 by default: there may be no accounting database for `sacct`). `settle` turns
a run whose job ended without the run finishing into a `failed` run whose summary.json
says why (SLURM's state, reason, exit signal, and the job log's out-of-memory line), so
that the planner, `runs list` and the sweep summary agree, and keep agreeing after the
scheduler forgot the job.
"""

from __future__ import annotations

import getpass
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from trainer import summary as run_summary
from trainer.experiments.index import FINISHED, RETRYABLE, SLURM, Record, read_run
from trainer.experiments.lock import held
from trainer.files import read_json, write_json

# the job is (or will again be) in the queue: a relaunch must not submit it a second time
ACTIVE = {
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
    "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD",
}  # fmt: skip
# ended by the scheduler, not by the run: a run that saved `last` on the way out is still failed
KILLED = {"CANCELLED", "OUT_OF_MEMORY", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
GONE = "GONE"  # the scheduler no longer knows the job (it ended more than MinJobAge ago)
MEMORY = re.compile(r"exceeded .*memory limit|oom[-_ ]?kill|out of memory", re.IGNORECASE)


def job_id_from_env(env: dict[str, str] | None = None) -> str | None:
    """This process's SLURM job as squeue and submitit name it: `<array id>_<task>` for an
    array task, `<id>` otherwise; None outside SLURM."""
    env = os.environ if env is None else env
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def record(run_dir: Path, job_id: str | None, experiment: dict[str, Any] | None = None, **extra: Any) -> None:
    """Make `job_id` the run's current SLURM job (None: the run now trains outside SLURM);
    earlier ones are kept in `jobs`."""
    path = Path(run_dir) / SLURM
    if job_id is None and not path.exists():
        return
    before = read_json(path)
    before = before if isinstance(before, dict) else {}
    if before.get("job_id") == job_id and job_id is not None:
        return
    jobs = [j for j in before.get("jobs", []) if j != job_id] + ([job_id] if job_id else [])
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json(
        path,
        {
            "job_id": job_id,
            "jobs": jobs,
            "experiment": experiment or before.get("experiment"),
            "recorded": time.time(),
            **extra,
        },
    )


def recorded(run_dir: Path) -> dict[str, Any]:
    data = read_json(Path(run_dir) / SLURM)
    return data if isinstance(data, dict) else {}


def states(job_ids: list[str]) -> dict[str, str] | None:
    """{job id: SLURM state} for the jobs the scheduler still knows (GONE for the others);
    None when there is no scheduler to ask, or it does not answer."""
    ids = sorted({j for j in job_ids if j})
    if not ids:
        return {}
    # asked by array: the tasks of an array cancelled before any started are one record, `<id>`
    arrays = sorted({j.split("_")[0] for j in ids})
    try:
        out = subprocess.run(
            ["squeue", "--array", "-t", "all", "-h", "-o", "%i|%T", "-j", ",".join(arrays)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 and "Invalid job id" not in out.stderr:  # no controller to ask
        return None
    known = dict(line.split("|", 1) for line in out.stdout.splitlines() if "|" in line)
    return {j: known.get(j) or known.get(j.split("_")[0], GONE) for j in ids}


def details(job_id: str) -> dict[str, str]:
    """`scontrol show job`'s fields of one job ({} when it is not known)."""
    try:
        out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return {}
    fields = {}
    for word in out.stdout.split():
        key, sep, value = word.partition("=")
        if sep and key not in fields:  # an array's first line is the task asked for
            fields[key] = value
    return fields


def memory_line(log: str | None) -> str | None:
    """The line of a job's log that says it was killed for memory, if one does."""
    try:
        tail = Path(log).read_bytes()[-20000:].decode(errors="replace") if log else ""
    except OSError:
        return None
    hits = [line.strip() for line in tail.splitlines() if MEMORY.search(line)]
    return hits[-1] if hits else None


def why(job_id: str, state: str) -> str:
    """SLURM's account of how a job ended, in one line."""
    if state == GONE:
        return f"SLURM job {job_id} left the queue without the run finishing (the scheduler no longer knows the job)"
    info = details(job_id)
    text = f"SLURM job {job_id} {state}"
    if info.get("Reason") not in (None, "None"):
        text += f" ({info['Reason']})"
    code, _, sig = info.get("ExitCode", "0:0").partition(":")
    if sig not in ("", "0"):
        text += f", killed by signal {sig}"
    elif code not in ("", "0"):
        text += f", exit code {code}"
    memory = memory_line(info.get("StdErr")) or memory_line(info.get("StdOut"))
    if memory or state == "OUT_OF_MEMORY":
        text = "killed for memory: " + text + (f": {memory}" if memory else "")
    return text


def needs_settling(r: Record, state: str | None) -> bool:
    """Whether the run's job ended and left the run unfinished without saying so."""
    if r.job is None or state is None or state in ACTIVE:
        return False
    if r.status in FINISHED or r.status in RETRYABLE:
        return False
    if r.status == "interrupted":  # it saved `last` and said so: failed only if SLURM ended it
        return state in KILLED
    return True  # incomplete (no summary) or SUBMITTED (never started)


def settle(run_dir: Path, r: Record, state: str | None) -> Record:
    """The run as it stands once its job's end is known: when the job ended without the run
    finishing (cancelled, killed for memory, vanished), summary.json says `failed` and why."""
    run_dir = Path(run_dir)
    if not needs_settling(r, state) or held(run_dir):  # held: a live process still trains there
        return r
    assert r.job is not None and state is not None
    reason = why(r.job, state)
    mark = recorded(run_dir).get("cancelled")
    if isinstance(mark, dict):
        reason = f"cancelled by {mark.get('by', 'a user')} with `python -m trainer.runs cancel` ({reason})"
    outcome: dict[str, Any] = dict(run_summary.read(run_dir) or {})
    if r.reason and outcome:
        reason += f"; the run said: {r.status}, {r.reason}"
    outcome.update(
        status="failed",
        reason=reason,
        experiment=outcome.get("experiment") or (recorded(run_dir).get("experiment") or {"hash": r.hash}),
    )
    outcome.setdefault("monitor", r.monitor)
    outcome.setdefault("objective", None)
    run_summary.write(run_dir, outcome)  # type: ignore[arg-type]
    return read_run(run_dir, name=r.path)


def cancel(jobs: dict[Path, str]) -> dict[Path, str]:
    """`scancel` each run's job and mark the run as cancelled by this user;
    {run folder: job id} of the jobs cancelled."""
    if not jobs:
        return {}
    subprocess.run(["scancel", *sorted(set(jobs.values()))], check=True, capture_output=True, text=True, timeout=60)
    user = getpass.getuser()
    for run_dir, job_id in jobs.items():
        data = recorded(run_dir)  # the job's record, with the mark added
        data["cancelled"] = {"by": user, "at": time.time(), "job_id": job_id}
        write_json(Path(run_dir) / SLURM, data)
    return jobs


def wait_until_ended(job_ids: list[str], timeout: float = 120) -> dict[str, str] | None:
    """The jobs' states once none is active any more (or at `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        now = states(job_ids)
        if now is None or not any(s in ACTIVE for s in now.values()) or time.monotonic() > deadline:
            return now
        time.sleep(1)


def settle_all(run_dirs: list[Path]) -> dict[Path, tuple[Record, str | None]]:
    """{run folder: (its run, settled, and its job's state)} for the folders that record a
    SLURM job; one `squeue` for all of them."""
    runs = {Path(d): read_run(Path(d)) for d in run_dirs if (Path(d) / SLURM).is_file()}
    runs = {d: r for d, r in runs.items() if r.job is not None}
    now = states([r.job for r in runs.values() if r.job]) or {}
    return {d: (settle(d, r, now.get(r.job or "")), now.get(r.job or "")) for d, r in runs.items()}
