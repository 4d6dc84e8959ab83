"""Optuna searches through the trainer_optuna sweeper: resume, stale trials, failure policy,
pruning, parallel workers on SQLite and PostgreSQL, reports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, THREADS, cli, summary_json

optuna = pytest.importorskip("optuna")

FIXED = [  # every preset parameter pinned to a tiny value, unless a test searches it
    "trainer.epochs=2", "trainer.steps_per_epoch=2", "trainer.batch_size=2", "trainer.val_batch_size=4",
    "trainer.num_workers=0", "trainer.log_every=1", "trainer.progress=none", "data.segment_seconds=0.25",
    "data.val_size=4", "data.corpus_size=4", "data.noise_corpus_size=4", "data.families=[white,coloured]",
]  # fmt: skip
PINNED = [
    "optim=adamw",
    "optim.lr=0.003",
    "optim.weight_decay=0.01",
    "model.hidden=4",
    "model.layers=1",
    "loss.weights.mrstft=1.0",
]


def search(tmp: Path, study: str, *extra: str, storage: str | None = None, check: bool = True, timeout: float = 300):
    storage = storage or f"sqlite:///{tmp}/optuna.db"
    flags = [a for a in extra if a == "-m"]  # Hydra wants -m (for a sweep override like choice()) first
    extra = tuple(a for a in extra if a != "-m")
    return cli(
        *flags,
        "+search=denoise_lstm",
        *FIXED,
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweeper.study_name={study}",
        f"hydra.sweep.dir={tmp}/{study}",
        *extra,
        check=check,
        timeout=timeout,
    )


def load(tmp: Path, study: str, storage: str | None = None):
    return optuna.load_study(study_name=study, storage=storage or f"sqlite:///{tmp}/optuna.db")


def test_rerun_continues_the_study_without_repeating_or_overwriting(tmp_path):
    search(tmp_path, "resume", "hydra.sweeper.n_trials=2", "model.hidden=4", "trainer.batch_size=2")
    first = (tmp_path / "resume" / "trial_0000" / "summary.json").read_text()
    again = search(tmp_path, "resume", "hydra.sweeper.n_trials=2", "model.hidden=4", "trainer.batch_size=2")
    assert "2 of 2 trials done" in again.stdout + again.stderr
    assert len(load(tmp_path, "resume").trials) == 2  # nothing new ran
    search(tmp_path, "resume", "hydra.sweeper.n_trials=4", "model.hidden=4", "trainer.batch_size=2")
    study = load(tmp_path, "resume")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert sorted(p.name for p in (tmp_path / "resume").glob("trial_*")) == [
        "trial_0000",
        "trial_0001",
        "trial_0002",
        "trial_0003",
    ]
    assert (tmp_path / "resume" / "trial_0000" / "summary.json").read_text() == first  # earlier dirs untouched
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == 4  # the resumed sampler did not replay earlier draws
    for t in study.trials:  # each trial knows its run directory, and it holds that trial
        assert summary_json(Path(t.user_attrs["run_dir"]))["objective"] == pytest.approx(t.value)
    _study_report_renders(tmp_path, "resume", trials=4)


def _study_report_renders(tmp_path: Path, study: str, trials: int) -> None:
    """The study report of a finished search (run on the study above, to spare a search)."""
    out = tmp_path / "study_report"
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps.report", "--study", f"sqlite:///{tmp_path}/optuna.db", study, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "best value" in proc.stdout and "best parameters" in proc.stdout
    for name in (
        "study.md",
        "study.csv",
        "study.html",
        "optimization_history.png",
        "parallel_coordinate.png",
        "param_importances.png",
    ):
        assert (out / name).stat().st_size > 0, name
    rows = (out / "study.csv").read_text().strip().splitlines()
    assert len(rows) == trials + 1 and rows[0].startswith("trial,state,value,seconds")
    # pointed at the search directory, the sweep report adds the study's view
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps.report", str(tmp_path / study)], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0 and (tmp_path / study / "study.html").is_file()


def test_stale_running_trial_is_failed_at_start(tmp_path):
    from trainer.search.optuna_compat import open_storage, record_heartbeat, trial_id

    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="stale", storage=open_storage(url, 1, 1), direction="maximize")
    killed = study.ask()  # a trial whose sweeper was SIGKILLed: RUNNING, one old heartbeat
    record_heartbeat(study, trial_id(killed))
    time.sleep(2.5)
    proc = search(
        tmp_path,
        "stale",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.grace_period=1",
        "hydra.sweeper.heartbeat_interval=1",
        *PINNED,
    )
    assert "marked 1 stale RUNNING trial(s) as FAIL: [0]" in proc.stdout + proc.stderr
    trials = load(tmp_path, "stale").trials
    assert trials[0].state.name == "FAIL" and trials[0].user_attrs["stale"] is True
    assert "killed" in trials[0].user_attrs["reason"]
    assert trials[1].state.name == "COMPLETE"  # the killed trial did not use up the budget


def test_crashing_and_diverging_trials_fail_with_reasons_while_the_sweep_finishes(tmp_path):
    # one searched parameter with three values: duplicate draws are refused, so three
    # trials cover ok, raise and diverge exactly once
    proc = search(
        tmp_path,
        "flaky",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.max_failure_rate=1.0",
        *PINNED,
        "model._target_=tests.helpers.Flaky",
        "+model.mode=choice(ok,raise,diverge)",
    )
    assert proc.returncode == 0
    trials = load(tmp_path, "flaky").trials
    by_mode = {t.params["+model.mode"]: t for t in trials if "duplicate_of" not in t.user_attrs}
    assert len(by_mode) == 3 and all(t.params["+model.mode"] in by_mode for t in trials)
    assert by_mode["ok"].state.name == "COMPLETE"
    assert by_mode["raise"].state.name == "FAIL" and "RuntimeError: flaky" in by_mode["raise"].user_attrs["reason"]
    assert by_mode["diverge"].state.name == "FAIL" and "non-finite" in by_mode["diverge"].user_attrs["reason"]
    summaries = {m: summary_json(Path(t.user_attrs["run_dir"])) for m, t in by_mode.items()}
    assert summaries["raise"]["status"] == "failed" and summaries["diverge"]["status"] == "diverged"
    assert all(t.value is None or t.value == t.value for t in by_mode.values())  # no NaN in the study


def test_failures_beyond_the_rate_stop_the_sweep(tmp_path):
    proc = search(
        tmp_path,
        "boom",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.max_failure_rate=0.25",
        *PINNED,
        "model._target_=tests.helpers.Flaky",
        "+model.mode=raise",
        check=False,
    )
    assert proc.returncode != 0 and "max_failure_rate" in proc.stderr
    assert [t.state.name for t in load(tmp_path, "boom").trials] == ["FAIL", "FAIL"]  # 2 > 0.25 x 4


def test_pruned_trials_are_pruned_not_failed(tmp_path):
    proc = search(
        tmp_path,
        "prune",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.max_failure_rate=0.0",
        "trainer.epochs=4",
        "optuna/pruner=none",
        "optuna.pruner={_target_:optuna.pruners.ThresholdPruner,lower:1000.0}",
    )
    assert proc.returncode == 0  # pruning is not a failure, even at max_failure_rate=0
    trials = load(tmp_path, "prune").trials
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    for t in trials:
        summary = summary_json(Path(t.user_attrs["run_dir"]))
        assert summary["status"] == "pruned" and summary["epochs"] == 1 and "pruned" in summary["reason"]
        assert list(t.intermediate_values) == [1]  # the first validation was reported, then it stopped


def test_multi_objective_search(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    cli(
        "+search=denoise_pareto",
        *FIXED,
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=pareto",
        f"hydra.sweep.dir={tmp_path}/pareto",
        "hydra.sweeper.n_trials=2",
        "model.hidden=4",
        "trainer.warmup_steps=0",
        check=True,
    )
    study = load(tmp_path, "pareto")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert all(t.state.name == "COMPLETE" and len(t.values) == 2 and t.values[1] > 0 for t in study.trials)


def _workers(tmp: Path, study: str, storage: str, n: int = 2, trials: int = 6) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable, "-m", "trainer", "+search=denoise_lstm", *FIXED, f"hydra.sweeper.storage={storage}",
        f"hydra.sweeper.study_name={study}", f"hydra.sweep.dir={tmp}/{study}", f"hydra.sweeper.n_trials={trials}",
        "model.hidden=4", "trainer.batch_size=2", "hydra.sweeper.sampler.seed=null",
    ]  # fmt: skip
    procs = [
        subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(n)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return outs


def _check_shared_study(tmp: Path, study_name: str, storage: str, trials: int = 6) -> None:
    study = optuna.load_study(study_name=study_name, storage=storage)
    counted = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == trials  # the workers stopped together at n_trials
    assert all(t in counted or "surplus" in t.user_attrs or "duplicate_of" in t.user_attrs for t in study.trials)
    dirs = [t.user_attrs["run_dir"] for t in counted]
    assert len(set(dirs)) == trials  # every trial ran once, in its own directory
    assert sorted(Path(d).name for d in dirs) == [
        f"trial_{t.number:04d}" for t in sorted(counted, key=lambda t: t.number)
    ]
    for t in counted:
        summary = summary_json(Path(t.user_attrs["run_dir"]))
        assert summary["status"] == ("pruned" if t.state.name == "PRUNED" else "completed")
        if t.state.name == "COMPLETE":
            assert summary["objective"] == pytest.approx(t.value)
    # both workers ran trials, and at the same time (not one after the other behind a lock)
    by_worker: dict[str, list] = {}
    for t in counted:
        by_worker.setdefault(t.system_attrs["worker"], []).append(t)
    assert len(by_worker) >= 2, {w: len(ts) for w, ts in by_worker.items()}
    pairs = [(a, b) for w, ts in by_worker.items() for a in ts for v, us in by_worker.items() if v != w for b in us]
    assert any(a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete for a, b in pairs)


def test_two_workers_share_one_sqlite_study(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    _workers(tmp_path, "shared", storage)
    _check_shared_study(tmp_path, "shared", storage)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres(tmp_path):
    """A throwaway PostgreSQL server on loopback (skipped where the binaries are absent)."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin")) if Path("/usr/lib/postgresql").is_dir() else []
    bindir = bins[-1] if bins else (Path(shutil.which("initdb")).parent if shutil.which("initdb") else None)
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql; .ci/run does)")
    run_as: list[str] = []
    # not under pytest's tmp dir: its parents are private to root, and the server runs as 'postgres'
    root = Path(tempfile.mkdtemp(prefix="pg-test-"))
    if os.geteuid() == 0:  # initdb refuses to run as root
        if shutil.which("runuser") is None or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip("running as root without a 'postgres' user to own the server")
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    port = _free_port()
    data = root / "data"
    subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *run_as,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "log"),
            "-w",
            "start",
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [*run_as, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optuna"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_postgresql_study(tmp_path, postgres):
    pytest.importorskip("psycopg")
    _workers(tmp_path, "shared_pg", postgres)
    _check_shared_study(tmp_path, "shared_pg", postgres)


def test_search_killed_mid_trial_and_rerun_completes_without_repeats(tmp_path):
    """SIGKILL of the whole search during its second trial, then the same command again."""
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    args = [
        sys.executable, "-m", "trainer", "+search=denoise_lstm", *FIXED, "trainer.progress=log",
        f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db", "hydra.sweeper.study_name=killed",
        f"hydra.sweep.dir={tmp_path}/killed", "hydra.sweeper.n_trials=3", "hydra.sweeper.grace_period=1",
        "hydra.sweeper.heartbeat_interval=1", "model.layers=1", "trainer.batch_size=2",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": THREADS}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "trial_0001" in line and "training" in line:  # the second trial has started
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the search ended before it could be killed"
    first_done = (tmp_path / "killed" / "trial_0000" / "summary.json").read_text()
    time.sleep(2.5)  # older than the grace period
    rerun = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    trials = load(tmp_path, "killed").trials
    assert not [t for t in trials if t.state.name == "RUNNING"]
    assert trials[1].state.name == "FAIL" and trials[1].user_attrs.get("stale") is True
    counted = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == 3  # the requested count, the killed trial not among them
    params = [tuple(sorted(t.params.items())) for t in trials if t.state.name != "FAIL" or t.number == 1]
    assert len(set(params)) == len(params)  # no parameter set tried twice
    assert (tmp_path / "killed" / "trial_0000" / "summary.json").read_text() == first_done  # not overwritten
    assert len({t.user_attrs["run_dir"] for t in counted}) == 3


def test_a_run_that_does_not_search_never_imports_optuna():
    """Hydra imports every plugin module at start-up: the sweeper's must stay light (Optuna
    and its scikit-learn cost ~2 s per process; the sweep loop lives in _impl)."""
    code = (
        "import sys; from trainer.launch.startup import register; register();"
        "from hydra.core.plugins import Plugins; from hydra.plugins.sweeper import Sweeper;"
        "names = [p.__name__ for p in Plugins.instance().discover(Sweeper)];"
        "assert 'TrainerOptunaSweeper' in names, names; assert 'optuna' not in sys.modules; print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
