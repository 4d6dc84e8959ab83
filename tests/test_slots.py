"""`hydra/launcher=slots`, sweeps beyond the full product (zip, exclude) and the dry run:
slots planned from the devices and cores, never more jobs than slots, a freed slot refilled
at once, each job on its own device and thread budget, failures and SIGTERM, the jobs a
sweep file expands to, and a search that keeps every slot busy within its budget."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from tests.conftest import ROOT, TINY, cli, summary_json
from trainer.launch.startup import add_plugin_folder

add_plugin_folder()  # the project's plugins, as `python -m trainer` finds them
from hydra_plugins.trainer_experiment_sweeper._grid import expand  # noqa: E402
from hydra_plugins.trainer_slots_launcher._pool import plan_slots  # noqa: E402

SLOTS = ["hydra/launcher=slots", "hydra.launcher.cpu_slots=2", "hydra.launcher.grace_s=60"]


def jobs(*overrides: str, zip_keys=None, exclude=None) -> list[list[str]]:
    return expand(OverridesParser.create().parse_overrides(list(overrides)), zip_keys, exclude)


def test_slots_follow_the_gpus_jobs_per_gpu_and_the_cores():
    two = plan_slots(gpus=["3", "5"], cores=16, jobs_per_gpu=2)
    assert [(s.name, s.visible, s.threads) for s in two] == [
        ("cuda:0#0", "3", 4), ("cuda:0#1", "3", 4), ("cuda:1#0", "5", 4), ("cuda:1#1", "5", 4),
    ]  # fmt: skip
    assert [s.name for s in plan_slots(devices=["cuda:1"], gpus=["3", "5"], cores=16)] == ["cuda:1"]
    assert plan_slots(devices=["cuda:1"], gpus=["3", "5"], cores=16)[0].visible == "5"
    cpu = plan_slots(gpus=[], cores=8, threads=3)
    assert [(s.name, s.device, s.visible, s.threads) for s in cpu] == [("cpu#0", "cpu", "", 3), ("cpu#1", "cpu", "", 3)]
    assert [s.threads for s in plan_slots(gpus=[], cores=8, cpu_slots=3)] == [2, 2, 2]  # never more threads than cores
    assert len(plan_slots(gpus=[], cores=2)) == 2
    with pytest.raises(ValueError, match="'cuda:2' is not one of this machine's devices"):
        plan_slots(devices=["cuda:2"], gpus=["0", "1"])
    with pytest.raises(ValueError, match="jobs_per_gpu=0"):
        plan_slots(gpus=["0"], jobs_per_gpu=0)


def test_zip_steps_lists_together_and_exclude_leaves_combinations_out():
    assert jobs("a=1,2", "b=x,y", "c=5") == [["a=1", "b=x", "c=5"], ["a=1", "b=y", "c=5"], ["a=2", "b=x", "c=5"],
                                             ["a=2", "b=y", "c=5"]]  # fmt: skip
    assert jobs("a=1,2", "b=x,y", "c=5,6", zip_keys=[["a", "b"]]) == [
        ["a=1", "b=x", "c=5"], ["a=1", "b=x", "c=6"], ["a=2", "b=y", "c=5"], ["a=2", "b=y", "c=6"],
    ]  # fmt: skip
    # compile only with bf16; a list is any of its values; "!v" anything but v
    rules = [{"compile": "!none", "precision": "!amp_bf16"}, {"precision": ["fp32", "amp_fp16"], "+flag": True}]
    grid = jobs("precision=fp32,amp_bf16,amp_fp16", "compile=none,default", "+flag=true,false", exclude=rules)
    assert grid == [
        ["precision=fp32", "compile=none", "+flag=False"],
        ["precision=amp_bf16", "compile=none", "+flag=True"],
        ["precision=amp_bf16", "compile=none", "+flag=False"],
        ["precision=amp_bf16", "compile=default", "+flag=True"],
        ["precision=amp_bf16", "compile=default", "+flag=False"],
        ["precision=amp_fp16", "compile=none", "+flag=False"],
    ]  # fmt: skip
    with pytest.raises(HydraException, match="a has 2 values, b has 3 values"):
        jobs("a=1,2", "b=x,y,z", zip_keys=[["a", "b"]])
    with pytest.raises(HydraException, match="exclude names 'compiler', which this sweep does not set"):
        jobs("compile=none,default", exclude=[{"compiler": "none"}])


def dry_run(tmp_path: Path, *args: str) -> list[list[str]]:
    """The plan a dry run prints: one row of words per experiment."""
    before = sorted(tmp_path.rglob("*"))
    proc = cli("-m", *TINY, f"outputs={tmp_path}/out", f"hydra.sweep.dir={tmp_path}/sweep", "dry_run=true", *args,
               check=True)  # fmt: skip
    assert sorted(tmp_path.rglob("*")) == before  # nothing created
    return [line.split() for line in proc.stdout.splitlines() if line.startswith("  ")]


def test_a_sweep_file_with_zip_and_exclude_and_its_dry_run(tmp_path):
    rows = dry_run(tmp_path, "+sweep=precision_cpu", *SLOTS)
    assert [r[2] for r in rows] == [
        "compile=none,precision=fp32,precision.matmul=highest",
        "compile=none,precision=fp32,precision.matmul=high",
        "compile=none,precision=amp_bf16,precision.matmul=highest",
        "compile=default,precision=amp_bf16,precision.matmul=highest",
    ]
    assert [r[0] for r in rows] == ["new"] * 4 and [r[3] for r in rows] == ["cpu#0", "cpu#1", "next", "next"]


def test_a_single_runs_dry_run_says_what_it_would_do_and_creates_nothing(tmp_path):
    args = [*TINY, f"outputs={tmp_path}/out", "optim=sgd"]
    action, short, _, folder = cli(*args, "dry_run=true", check=True).stdout.split()[2:6]
    assert action == "new" and Path(folder).parent == tmp_path / "out" / "runs" and not (tmp_path / "out").exists()
    cli(*args, check=True)  # the run goes where the dry run said, and is then done
    assert summary_json(Path(folder))["experiment"]["hash"].startswith(short)
    assert cli(*args, "dry_run=true", check=True).stdout.split()[2] == "done"


def started_and_ended(sweep: Path) -> dict[int, tuple[float, float, str]]:
    lines = (sweep / ".slots" / "timeline.jsonl").read_text().splitlines()
    return {e["job"]: (e["start"], e["end"], e["slot"]) for e in map(json.loads, lines)}


def test_jobs_run_on_their_own_slots_and_a_freed_slot_is_refilled_at_once(tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli("-m", *TINY, f"outputs={tmp_path}/out", f"hydra.sweep.dir={sweep}", *SLOTS,
               "trainer.steps_per_epoch=800,3,4,5", "trainer.epochs=2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    times = started_and_ended(sweep)
    assert sorted(times) == [0, 1, 2, 3]
    for t in [t for start, end, _ in times.values() for t in (start, end)]:  # never more jobs than slots
        assert sum(start <= t < end for start, end, _ in times.values()) <= 2
    # the slot job 1 freed went to job 2 at once (a poll later, not when the long job 0 ended)
    first_short = min((1, 2, 3), key=lambda j: times[j][1])
    nxt = min((j for j in (1, 2, 3) if times[j][0] >= times[first_short][1] - 0.01), key=lambda j: times[j][0])
    assert times[nxt][0] - times[first_short][1] < 5.0 and times[nxt][0] < times[0][1]
    for run in sweep.iterdir():
        if run.name.startswith("trainer.steps_per_epoch="):
            slot = summary_json(run)["provenance"]["slot"]
            # what the job itself saw: no GPU, one thread (2 cores, 2 slots)
            assert slot["name"] in ("cpu#0", "cpu#1") and slot["seen_cuda_visible"] == "" and slot["seen_threads"] == 1


def test_a_killed_or_crashed_job_frees_its_slot_the_others_finish_and_the_exit_names_it(tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli("-m", *TINY, f"outputs={tmp_path}/out", f"hydra.sweep.dir={sweep}", *SLOTS,
               "model._target_=tests.helpers.Flaky", "+model.mode=killed,raise,ok")  # fmt: skip
    assert proc.returncode != 0
    assert "2 of 3 launched job(s) failed: model.mode=killed" in proc.stderr
    assert "killed by SIGKILL" in proc.stderr and "RuntimeError: flaky" in proc.stderr
    assert summary_json(sweep / "model.mode=ok")["status"] == "completed"
    assert {e[2] for e in started_and_ended(sweep).values()} <= {"cpu#0", "cpu#1"}


def descendants_of(pid: int) -> list[int]:
    """Every process below `pid`: the slots' job servers and the jobs they forked."""
    parents = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue
    found, frontier = [], [pid]
    while frontier:
        below = [p for p, parent in parents.items() if parent in frontier]
        found += below
        frontier = below
    return found


def test_sigterm_stops_every_job_resumably_and_leaves_no_process(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, f"outputs={tmp_path}/out", f"hydra.sweep.dir={sweep}", *SLOTS, "trainer.epochs=1",
            "trainer.steps_per_epoch=100000", "trainer.checkpoint_every=5", "optim=adamw,sgd,radam"]  # fmt: skip
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    sweeper = subprocess.Popen([sys.executable, "-m", "trainer", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and len(list(sweep.glob("optim=*/checkpoints/last.pt"))) < 2:  # both slots training
        time.sleep(0.5)
    processes = descendants_of(sweeper.pid)  # two slots' job servers and their jobs
    assert len(processes) == 4, sweeper.poll()
    sweeper.send_signal(signal.SIGTERM)
    out, _ = sweeper.communicate(timeout=120)
    assert sweeper.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "SIGTERM: stopping 2 job(s)" in out
    for pid in processes:  # gone, not orphaned
        assert not Path(f"/proc/{pid}").exists() or "Z" in (Path(f"/proc/{pid}") / "stat").read_text().split()[2]
    started = sorted(p.parent.parent for p in sweep.glob("optim=*/checkpoints/last.pt"))
    assert len(started) == 2 and all(summary_json(p)["status"] == "interrupted" for p in started)
    # the same command resumes the two and starts the third
    plan = {r[2]: r[0] for r in dry_run(tmp_path, *SLOTS, "trainer.epochs=1", "trainer.steps_per_epoch=100000",
                                        "trainer.checkpoint_every=5", "optim=adamw,sgd,radam")}  # fmt: skip
    assert sorted(plan.values()) == ["new", "resume", "resume"]


def search(tmp_path: Path, worker: str, *params: str) -> subprocess.Popen:
    args = ["-m", "hydra/sweeper=trainer_optuna", *[o for o in TINY if not o.startswith("trainer.steps_per_epoch")],
            f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db", "hydra.sweeper.study_name=s",
            f"hydra.sweep.dir={tmp_path}/{worker}", *SLOTS, *params]  # fmt: skip
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "trainer", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def test_a_search_on_slots_starts_the_next_trial_as_soon_as_one_ends(tmp_path):
    """Three long and three short trials on two slots: whatever the grid's order, a batch
    barrier would leave a slot idle between the end of a short trial and the end of a
    long one beside it. On slots, a start follows every end while trials are left."""
    proc = search(tmp_path, "w", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=6",
                  "trainer.steps_per_epoch=choice(2,150)", "trainer.seed=choice(0,1,2)")  # fmt: skip
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    times = started_and_ended(tmp_path / "w")
    assert len(times) == 6
    events = sorted(
        [(start, "start") for start, _, _ in times.values()] + [(end, "end") for _, end, _ in times.values()]
    )
    last_start = max(start for start, _, _ in times.values())
    for (t1, kind1), (t2, kind2) in zip(events, events[1:]):
        if t2 < last_start and kind1 == kind2 == "end":
            assert t2 - t1 < 0.5, events  # two ends in a row only when they ended together
    for t in [t for start, end, _ in times.values() for t in (start, end)]:
        assert sum(start <= t < end for start, end, _ in times.values()) <= 2


def test_two_search_workers_on_slots_stop_together_at_the_budget(tmp_path):
    params = ["hydra.sweeper.n_trials=6", "trainer.steps_per_epoch=3", "optim.lr=tag(log, interval(1e-4, 1e-2))"]
    workers = [search(tmp_path, f"w{i}", *params) for i in range(2)]
    for w in workers:
        out, _ = w.communicate(timeout=600)
        assert w.returncode == 0, out[-3000:]
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/optuna.db").trials
    counted = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == 6 and not [t for t in trials if t.state.name == "RUNNING"]
    ran = [started_and_ended(tmp_path / f"w{i}") for i in range(2)]
    assert sum(len(r) for r in ran) == len([t for t in trials if "surplus" not in t.user_attrs]) >= 6
    assert all(len(r) >= 1 for r in ran)  # both workers ran trials
