"""Sweeps as experiments: identity, relaunch that trains only what is missing, repeats
with intervals, provenance, the runs index, and the bad inputs of all of them."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sweeps import stats
from sweeps.report import Run, code_warning
from tests.conftest import ROOT, THREADS, TINY, cli, summary_json, tiny
from trainer import identity, provenance
from trainer.experiments.index import RunsIndex, read_run
from trainer.experiments.lock import RunLock, held

# a sweep job small enough that a two-process launch takes seconds
EXTRA = ["trainer.epochs=1", "trainer.warmup_steps=0"]
JOB = [o for o in TINY if not o.startswith("trainer.epochs")] + EXTRA


def events(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "tb" / "train").glob("events.out.tfevents.*"))


def manifest(sweep: Path) -> dict[str, dict]:
    return {e["alias"]: e for e in json.loads((sweep / "sweep.json").read_text())["experiments"]}


# --- identity --------------------------------------------------------------------------


def test_two_spellings_of_one_experiment_share_a_hash_and_real_changes_do_not():
    default = identity.of(tiny(), "default")
    assert identity.of(tiny("optim=adamw"), "optim=adamw").hash == default.hash  # the default, spelled out
    assert identity.of(tiny("trainer.progress=none", "trainer.device=cpu"), "x").hash == default.hash  # neutral
    assert identity.of(tiny("retry_failed=true", "outputs=/elsewhere"), "x").hash == default.hash
    changed = [
        identity.of(tiny(o), o).hash for o in ("optim=sgd", "optim.lr=0.002", "trainer.seed=1", "model.hidden=5")
    ]
    assert len({default.hash, *changed}) == 5
    # repeats: another seed is another experiment of the same group, whatever follows the seed
    one, two = identity.of(tiny("trainer.seed=1"), "s1"), identity.of(tiny("trainer.seed=2"), "s2")
    assert one.hash != two.hash and one.group == two.group == default.group and one.seed == 1
    assert identity.of(tiny("trainer.seed=1", "data.seed=7"), "x").group != default.group  # an explicit data seed


def test_an_identity_collision_between_different_configs_is_impossible_by_construction():
    # values that print alike but compute differently
    variants = [{"a": 1}, {"a": 1.0}, {"a": "1"}, {"a": True}, {"a": None}, {"a": "None"}, {"a": [1]},
                {"a.b": 1}, {"a": {"b": 1}}, {"a": {"b": "1"}}, {1: "a"}, {"1": "a"}, {}]  # fmt: skip
    assert len({identity.digest(v) for v in variants}) == len(variants)
    assert identity.digest({"a": 1, "b": 2}) == identity.digest({"b": 2, "a": 1})  # key order is not identity


leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=3))
trees = st.recursive(
    leaves, lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=2), kids, max_size=3))
)


def typed(value):
    """What the hash must tell apart: the value with every type spelled out."""
    if isinstance(value, dict):
        return ("dict", frozenset((k, typed(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", tuple(typed(v) for v in value))
    return (type(value).__name__, repr(value))


@settings(max_examples=300, deadline=None)
@given(trees, trees)
def test_equal_hashes_exactly_when_configs_are_equal_with_their_types(a, b):
    assert (identity.digest({"x": a}) == identity.digest({"x": b})) == (typed(a) == typed(b))


# --- relaunch ---------------------------------------------------------------------------


def test_relaunch_trains_only_what_is_missing_and_an_interrupted_job_resumes(tmp_path):
    out, marker = tmp_path / "outputs", tmp_path / "interrupted-once"
    env = {**os.environ, "TRAINER_OUTPUTS": str(out)}
    model = ["model._target_=tests.helpers.TermOnce", f"+model.marker={marker}", "+model.after=2",
             "trainer.epochs=2", "trainer.checkpoint_every=1"]  # fmt: skip
    # sweep dirs under outputs, where Hydra's timestamped default puts them (and the runs
    # index looks); named here so that the test knows which is which
    sweep = out / "multirun" / "first"
    # adamw first, alone (the marker exists: nothing interrupts it); a one-job multirun
    # has no swept key, so its folder is `default`
    marker.touch()
    cli("-m", "optim=adamw", *JOB, *model, f"hydra.sweep.dir={sweep}", env=env, check=True)
    marker.unlink()
    adamw = sweep / "default"
    # then the sweep of three: adamw is reused; sgd is preempted (SIGTERM) mid-way and the
    # sweep stops there, as a sweep that crashed at job 40 of 48 does
    first = cli("-m", "optim=adamw,sgd,radam", *JOB, *model, f"hydra.sweep.dir={sweep}", env=env)
    assert first.returncode == 143, first.stderr[-2000:]
    assert manifest(sweep)["optim=adamw"] | {"run_dir": "default", "action": "done"} == manifest(sweep)["optim=adamw"]
    assert summary_json(adamw)["status"] == "completed"
    assert summary_json(sweep / "optim=sgd")["status"] == "interrupted"
    assert not (sweep / "optim=radam").exists()
    done_mtime = (adamw / "summary.json").stat().st_mtime_ns

    # the same command again, in a new sweep dir (Hydra's default): the finished job is
    # reported, not retrained; the interrupted one resumes in its own folder; the missing one runs
    second = out / "multirun" / "second"
    cli("-m", "optim=adamw,sgd,radam", *JOB, *model, f"hydra.sweep.dir={second}", env=env, check=True)
    plan = manifest(second)
    assert {a: e["action"] for a, e in plan.items()} == {
        "optim=adamw": "done",
        "optim=sgd": "resume",
        "optim=radam": "new",
    }
    assert (second / plan["optim=adamw"]["run_dir"]).resolve() == adamw.resolve()
    assert (adamw / "summary.json").stat().st_mtime_ns == done_mtime
    resumed = summary_json(sweep / "optim=sgd")
    assert resumed["status"] == "completed" and resumed["steps"] == 2 * 3
    steps = [h["step"] for h in json.loads((sweep / "optim=sgd" / "history.json").read_text())]
    assert steps == [3, 6]  # one history, continued
    assert not (second / "optim=sgd").exists() and (second / "optim=radam" / "summary.json").is_file()

    # a third launch with another launcher in other processes: nothing left to train
    started = time.perf_counter()
    s3 = out / "multirun" / "third"
    third = cli("-m", "optim=adamw,sgd,radam", *JOB, *model, "hydra/launcher=joblib", f"hydra.sweep.dir={s3}", env=env,
                check=True)  # fmt: skip
    assert {e["action"] for e in manifest(s3).values()} == {"done"}
    assert "3 done (not retrained)" in third.stderr + third.stdout
    assert time.perf_counter() - started < 120  # (not a speed test: a retrain of 3 jobs would still pass)
    # the sweep's report lists the reused runs beside its own
    report = subprocess.run(
        [sys.executable, "-m", "sweeps.report", str(second)], cwd=ROOT, capture_output=True, text=True
    )
    assert report.returncode == 0, report.stderr
    import csv

    listed = {r["run"].removesuffix(" (baseline)"): r["status"] for r in csv.DictReader((second / "report.csv").open())}
    assert listed == {"optim=adamw": "completed", "optim=sgd": "completed", "optim=radam": "completed"}


def test_single_runs_spelled_two_ways_are_one_run(tmp_path):
    env = {**os.environ, "TRAINER_OUTPUTS": str(tmp_path)}
    cli(*JOB, env=env, check=True)
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1
    before = (folders[0] / "summary.json").stat().st_mtime_ns
    proc = cli(*JOB, "optim=adamw", "trainer.progress=none", env=env, check=True)
    assert "nothing to do" in proc.stderr + proc.stdout
    assert list((tmp_path / "runs").iterdir()) == folders
    assert (folders[0] / "summary.json").stat().st_mtime_ns == before  # its files stay as they are
    assert summary_json(folders[0])["experiment"]["hash"] == identity.of(tiny(*EXTRA), "").hash


def test_failed_jobs_are_retried_only_on_request_into_a_fresh_folder(tmp_path):
    env = {**os.environ, "TRAINER_OUTPUTS": str(tmp_path)}
    sweep = tmp_path / "sweep"
    args = ["-m", *JOB, "model._target_=tests.helpers.FailsAtWidth", "model.hidden=4,5"]  # the sweep after TINY's width
    assert cli(*args, f"hydra.sweep.dir={sweep}", env=env).returncode != 0  # hidden=5 fails on purpose
    assert summary_json(sweep / "model.hidden=5")["status"] == "failed"
    again = cli(*args, f"hydra.sweep.dir={tmp_path / 'again'}", env=env)
    assert again.returncode == 0  # nothing launched: the failure is skipped, and said so
    assert {a: e["action"] for a, e in manifest(tmp_path / "again").items()} == {
        "model.hidden=4": "done", "model.hidden=5": "failed"
    }  # fmt: skip
    retry = cli(*args, "retry_failed=true", f"hydra.sweep.dir={sweep}", env=env)
    assert retry.returncode != 0  # it fails again, deterministically
    plan = manifest(sweep)
    assert plan["model.hidden=5"]["action"] == "retry" and plan["model.hidden=4"]["action"] == "done"
    fresh = sweep / plan["model.hidden=5"]["run_dir"]
    assert fresh != sweep / "model.hidden=5" and fresh.name.startswith("model.hidden=5-")
    assert summary_json(sweep / "model.hidden=5")["status"] == "failed"  # the first attempt is kept
    assert summary_json(fresh)["status"] == "failed"


def test_a_damaged_summary_is_not_trusted_and_the_run_is_resumed(tmp_path):
    env = {**os.environ, "TRAINER_OUTPUTS": str(tmp_path)}
    sweep = tmp_path / "sweep"
    cli("-m", "optim=adamw,sgd", *JOB, f"hydra.sweep.dir={sweep}", env=env, check=True)
    (sweep / "optim=sgd" / "summary.json").write_text('{"status": "completed", "objective": ')  # cut short
    assert read_run(sweep / "optim=sgd").status == "incomplete"
    cli("-m", "optim=adamw,sgd", *JOB, f"hydra.sweep.dir={tmp_path / 'again'}", env=env, check=True)
    assert {a: e["action"] for a, e in manifest(tmp_path / "again").items()} == {
        "optim=adamw": "done",
        "optim=sgd": "resume",
    }
    assert summary_json(sweep / "optim=sgd")["status"] == "completed"  # rewritten from the checkpoint
    assert len(events(sweep / "optim=sgd")) == 1  # and not trained again


def test_two_concurrent_launches_of_one_sweep_train_each_experiment_once(tmp_path):
    env = {**os.environ, "TRAINER_OUTPUTS": str(tmp_path), "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "trainer", "-m", "optim=adamw,sgd,radam", *JOB, "trainer.steps_per_epoch=8",
           f"hydra.sweep.dir={sweep}"]  # fmt: skip
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    for name in ("optim=adamw", "optim=sgd", "optim=radam"):
        s = summary_json(sweep / name)
        assert s["status"] == "completed" and s["steps"] == 8
        assert len(events(sweep / name)) == 1, name  # one writer: trained by one process only
        steps = [h["step"] for h in json.loads((sweep / name / "history.json").read_text())]
        assert steps == [8]
        assert not held(sweep / name)  # both processes are gone: the locks with them


def test_the_run_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
    lock = RunLock(tmp_path)
    assert lock.acquire() and held(tmp_path)
    assert not RunLock(tmp_path).acquire()  # a second holder, even in this process, is refused
    assert str(os.getpid()) in RunLock(tmp_path).holder()
    lock.release()
    assert not held(tmp_path)
    # a holder killed with SIGKILL leaves no stale lock
    code = (
        "from trainer.experiments.lock import RunLock; "
        f"RunLock({str(tmp_path)!r}).acquire(); import os; os.kill(os.getpid(), 9)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT)
    assert not held(tmp_path) and RunLock(tmp_path).acquire()


# --- provenance ------------------------------------------------------------------------


def test_provenance_names_the_commit_and_keeps_the_diff_of_a_dirty_tree(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "code.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    clean = provenance.collect(tmp_path / "run1", ["python", "-m", "trainer"], root=repo)
    assert clean["git"] == {"commit": head, "dirty": False} and not (tmp_path / "run1" / "git.diff").exists()
    (repo / "code.py").write_text("x = 2\n")
    (repo / "new.py").write_text("")
    dirty = provenance.collect(tmp_path / "run2", None, root=repo)
    assert dirty["git"]["dirty"] is True and dirty["git"]["diff_file"] == "git.diff"
    diff = (tmp_path / "run2" / "git.diff").read_text()
    assert "-x = 1" in diff and "+x = 2" in diff and "# untracked: new.py" in diff
    assert provenance.code_version(dirty) != provenance.code_version(clean) == head[:12]
    assert provenance.collect(None, None, root=tmp_path / "nowhere")["git"]["commit"] is None
    for key in ("host", "cpu", "gpus", "versions", "command", "platform"):
        assert key in clean
    assert clean["cpu"]["model"] and "torch" in clean["versions"]


def test_a_run_records_its_provenance_and_identity_in_summary_json(tmp_path):
    env = {**os.environ, "TRAINER_OUTPUTS": str(tmp_path)}
    cli(*JOB, "optim=sgd", env=env, check=True)
    (run_dir,) = (tmp_path / "runs").iterdir()
    s = summary_json(run_dir)
    assert s["provenance"]["command"][:3] == ["python", "-m", "trainer"] and "optim=sgd" in s["provenance"]["command"]
    assert s["provenance"]["git"]["commit"] == provenance.git_state()["commit"]
    assert (run_dir / "git.diff").exists() == bool(s["provenance"]["git"]["dirty"])
    registered = json.loads((run_dir / "experiment.json").read_text())
    assert registered["experiment"] == s["experiment"] and registered["choices"]["optim"] == "sgd"
    assert s["experiment"]["hash"] == identity.of(tiny(*EXTRA, "optim=sgd"), "").hash


def test_the_report_warns_when_rows_come_from_different_code(tmp_path):
    def run(commit, dirty=False):
        git = {"commit": commit, "dirty": dirty} | ({"diff_sha256": "ab" * 32} if dirty else {})
        return Run(tmp_path, {}, {"status": "completed", "provenance": {"git": git}}, [], {})

    assert code_warning([run("a" * 40), run("a" * 40)]) is None
    warning = code_warning([run("a" * 40), run("a" * 40, dirty=True), run("b" * 40)])
    assert "aaaaaaaaaaaa (1 runs)" in warning and "aaaaaaaaaaaa+abababab" in warning and "bbbbbbbbbbbb" in warning


# --- repeats and intervals -----------------------------------------------------------------


def test_intervals_match_hand_computed_student_t_values():
    e = stats.estimate([1.0, 2.0, 3.0])
    assert (e.n, e.mean, e.sd) == (3, 2.0, 1.0)
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2)
    assert e.lo == pytest.approx(2 - half) and e.hi == pytest.approx(2 + half)
    assert stats.estimate([5.0]).lo is None and stats.estimate([]) is None
    assert e.format(".1f") == "2.0 ± 1.0 [-0.5, 4.5]" and stats.estimate([5.0]).format(".1f") == "5.0"
    paired = stats.ratio({0: 2.0, 1: 4.0}, {0: 1.0, 1: 2.0})  # 2x on both seeds: no spread
    assert paired.mean == 2.0 and paired.sd == 0.0 and paired.lo == paired.hi == 2.0
    unpaired = stats.ratio({0: 10.0, 1: 12.0}, {5: 5.0, 6: 6.0})
    assert unpaired.mean == pytest.approx(11 / 5.5) and unpaired.lo < 2 < unpaired.hi
    assert e.overlaps(stats.estimate([3.0, 4.0, 5.0])) and not stats.estimate([1.0, 1.1]).overlaps(
        stats.estimate([9.0, 9.1])
    )


def test_a_repeated_sweep_reports_mean_sd_and_intervals_per_configuration(tmp_path):
    env = {**os.environ, "TRAINER_OUTPUTS": str(tmp_path)}
    sweep = tmp_path / "sweep"
    cli("-m", "optim=adamw,sgd", "trainer.seed=range(2)", *JOB, f"hydra.sweep.dir={sweep}", env=env, check=True)
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps.report", str(sweep), "--baseline", "optim=adamw"], cwd=ROOT, capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    import csv

    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert [r["run"] for r in rows] == ["#1 optim=adamw (baseline)", "#2 optim=sgd"] and {r["n"] for r in rows} == {"2"}
    sgd = [summary_json(sweep / f"optim=sgd,trainer.seed={s}")["best"] for s in (0, 1)]
    expected = stats.estimate(sgd)
    assert rows[1]["best si_sdr"] == expected.format(".3f") and "[" in rows[1]["samples/s"]
    assert rows[0]["speedup"].startswith("1.00x")
    assert rows[0]["≈ metric"] in ("#2", "none") and rows[1]["≈ metric"] == (
        "#1" if rows[0]["≈ metric"] == "#2" else "none"
    )
    # at a common point: the history's value at epoch 1 is the final one here
    at = subprocess.run([sys.executable, "-m", "sweeps.report", str(sweep), "--at-epoch", "common"], cwd=ROOT,
                        capture_output=True, text=True)  # fmt: skip
    assert at.returncode == 0 and "@ epoch 1" in at.stdout
    assert (
        subprocess.run(
            [sys.executable, "-m", "sweeps.report", str(sweep), "--at-step", "1"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.count("—")
        > 4
    )  # fmt: skip  (no run validated by step 1)


# --- the runs index ----------------------------------------------------------------------


def fake_run(root: Path, name: str, *, status="completed", optim="adam", lr=0.001, best=1.0, seed=0, metrics=None):
    folder = root / name
    folder.mkdir(parents=True)
    exp = {"hash": identity.digest({"name": name}), "group": identity.digest({"optim": optim}), "alias": folder.name,
           "seed": seed}  # fmt: skip
    (folder / "experiment.json").write_text(
        json.dumps({"experiment": exp, "choices": {"optim": optim}, "config": {"optim": {"lr": lr}}, "created": 1.0})
    )
    summary = {"status": status, "experiment": exp, "monitor": "si_sdr", "best": best, "final": best,
               "final_metrics": metrics or {"si_sdri": best + 1}, "steps": 10}  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_the_index_filters_sorts_and_follows_the_folders(tmp_path):
    fake_run(tmp_path, "multirun/a/optim=adam", best=3.0)
    fake_run(tmp_path, "multirun/a/optim=sgd", optim="sgd", lr=0.05, best=5.0)
    fake_run(tmp_path, "runs/bad", status="failed", lr=0.1, best=float("nan"))
    index = RunsIndex(tmp_path).refresh()
    assert {r.path for r in index.select()} == {"multirun/a/optim=adam", "multirun/a/optim=sgd", "runs/bad"}
    assert [r.path for r in index.select(where=["optim=sgd"])] == ["multirun/a/optim=sgd"]
    assert [r.path for r in index.select(where=["optim.lr=0.001"])] == ["multirun/a/optim=adam"]
    assert [r.path for r in index.select(metric=["si_sdri>5"])] == ["multirun/a/optim=sgd"]
    assert [r.path for r in index.select(metric=["best>=3"], sort="-best")] == [
        "multirun/a/optim=sgd",
        "multirun/a/optim=adam",
    ]
    assert [r.path for r in index.select(status=["failed"])] == ["runs/bad"]
    # a changed summary is re-read, a removed folder dropped, a new one found
    time.sleep(0.01)
    (tmp_path / "multirun/a/optim=adam/summary.json").write_text("{broken")
    os.utime(tmp_path / "multirun/a/optim=adam", ns=(time.time_ns(), time.time_ns()))
    import shutil

    shutil.rmtree(tmp_path / "runs/bad")
    fake_run(tmp_path, "search/s/trial_0000", best=7.0)
    index.refresh()
    by_path = {r.path: r for r in index.select()}
    assert set(by_path) == {"multirun/a/optim=adam", "multirun/a/optim=sgd", "search/s/trial_0000"}
    assert by_path["multirun/a/optim=adam"].status == "incomplete"  # damaged: not trusted
    assert index.lookup("optim=sgd").path == "multirun/a/optim=sgd"
    assert index.lookup(by_path["search/s/trial_0000"].hash[:8]).best == 7.0
    with pytest.raises(ValueError, match="no run folder"):
        index.lookup("nothing-like-this")
    index.close()
    # a damaged index file is rebuilt from the folders
    (tmp_path / ".runs.sqlite").write_bytes(b"not a database" * 100)
    assert len(RunsIndex(tmp_path).refresh().select()) == 3


def test_the_runs_command_lists_filters_and_diffs(tmp_path):
    fake_run(tmp_path, "multirun/a/optim=adam", best=3.0)
    fake_run(tmp_path, "multirun/a/optim=sgd", optim="sgd", lr=0.05, best=5.0)
    env = {**os.environ, "TRAINER_OUTPUTS": str(tmp_path), "OMP_NUM_THREADS": THREADS}

    def runs(*args):
        return subprocess.run([sys.executable, "-m", "trainer.runs", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True)  # fmt: skip

    listed = runs("list", "--where", "optim=sgd")
    assert listed.returncode == 0 and "optim=adam " not in listed.stdout
    (row,) = [line.split() for line in listed.stdout.splitlines() if line.startswith("completed")]
    assert row[2] == "optim=sgd" and row[-1] == "multirun/a/"  # the folder is named by the alias: its parent shown
    diff = runs("diff", "optim=adam", "optim=sgd")
    assert diff.returncode == 0
    assert "optim.lr: 0.001 -> 0.05" in diff.stdout and "best" in diff.stdout and "+2" in diff.stdout
    assert "multirun/a/optim=sgd" in runs("show", "optim=sgd").stdout
    bad = runs("diff", "optim=adam", "nope")
    assert bad.returncode == 2 and "nope: no run folder" in bad.stderr
    assert runs("list", "--metric", "best").returncode != 0  # no operator: refused with a message
