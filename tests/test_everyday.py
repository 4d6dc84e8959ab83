"""The everyday surface, through the real CLI: one name per run in a sweep (plan, report,
runs CLI, TensorBoard), short names, speed for short runs, quiet logs, the help page, and a
refused multirun that creates nothing."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, THREADS, TINY, cli, compose_cfg, summary_json
from trainer.identity import MAX_ALIAS

SEARCH = [
    "+search=tiny",
    "hydra.sweeper.n_trials=3",
    *[o for o in TINY if not o.startswith("model.hidden")],  # the search draws model.hidden
]


def runs(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer.runs", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def report(sweep: Path) -> list[dict[str, str]]:
    proc = subprocess.run([sys.executable, "-m", "sweeps.report", str(sweep)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return list(csv.DictReader(open(sweep / "report.csv")))


def noisy_lines(text: str) -> list[str]:
    """Console lines at WARNING level, or Python warnings (FutureWarning, UserWarning, ...)."""
    return [line for line in text.splitlines() if re.search(r"\[WARNING\]|\bWARNING\b|\w+Warning\b", line)]


@pytest.fixture
def outputs(tmp_path):
    env = {**os.environ, "TRAINER_OUTPUTS": str(tmp_path / "outputs")}
    return tmp_path / "outputs", env


def test_a_reused_run_has_the_sweeps_name_everywhere(outputs, tmp_path):
    root, env = outputs
    single = cli(*TINY, "optim=adamw", env=env, check=True)  # the default, spelled out
    (folder,) = (root / "runs").iterdir()
    # a single run is named by what differs from the defaults: optim=adamw is the default
    assert "optim" not in folder.name and len(folder.name) <= MAX_ALIAS, folder.name
    sweep = root / "multirun" / "sweep"
    proc = cli("-m", *TINY, "optim=adamw,sgd", f"hydra.sweep.dir={sweep}", env=env, check=True)
    assert re.search(r"done\s+\w{10}\s+optim=adamw\s", proc.stderr + proc.stdout), single.stderr
    rows = report(sweep)
    # the sweep's names, not the single run's long alias (the baseline row is marked as such)
    assert sorted(r["run"].removesuffix(" (baseline)") for r in rows) == ["optim=adamw", "optim=sgd"]
    plan = json.loads((sweep / "sweep.json").read_text())["experiments"]
    reused = next(e for e in plan if e["alias"] == "optim=adamw")
    assert Path(os.path.normpath(sweep / reused["run_dir"])) == folder  # the row is the reused run

    shown = runs("show", "optim=adamw", env=env)  # the name the sweep gave it
    assert shown.returncode == 0 and str(folder.name) in shown.stdout, shown.stderr
    typed = runs("show", *TINY, "optim=adamw", env=env)  # what the user typed, composed to its experiment
    assert typed.returncode == 0 and str(folder.name) in typed.stdout, typed.stderr
    missing = runs("show", "optim=radam", env=env)
    assert missing.returncode == 2 and "optim=radam" in missing.stderr
    diff = runs("diff", "optim=adamw", "optim=sgd", env=env)
    assert diff.returncode == 0 and "optim._target_" in diff.stdout, diff.stderr

    printed = runs("tensorboard", str(sweep), "--print", env=env)
    assert printed.returncode == 0, printed.stderr
    spec = shlex.split(printed.stdout)[shlex.split(printed.stdout).index("--logdir_spec") + 1]
    names = dict(item.split(":", 1) for item in spec.split(","))
    assert set(names) == {"optim=adamw", "optim=sgd"} and Path(names["optim=adamw"]).resolve() == folder / "tb"


def test_tensorboard_shows_each_run_under_its_label(outputs, tmp_path):
    """TensorBoard itself, started by `runs tensorboard`, lists the runs by their labels."""
    root, env = outputs
    sweep = tmp_path / "sweep"
    cli("-m", *TINY, "trainer.epochs=1", "optim=adamw,sgd", f"hydra.sweep.dir={sweep}", env=env, check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    board = subprocess.Popen([sys.executable, "-m", "trainer.runs", "tensorboard", str(sweep), "--port", str(port),
                              "--host", "127.0.0.1"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        listed, deadline = [], time.time() + 180  # a loaded 2-core machine starts it slowly
        while time.time() < deadline and len(listed) < 4:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5) as reply:
                    listed = json.loads(reply.read())
            except OSError:
                pass
            time.sleep(1)
    finally:
        os.killpg(board.pid, 15)
        board.wait(timeout=30)
    assert sorted(listed) == ["optim=adamw/train", "optim=adamw/val", "optim=sgd/train", "optim=sgd/val"]


def test_short_runs_report_speed_and_say_how(outputs, tmp_path):
    root, env = outputs
    sweep = tmp_path / "sweep"
    # 3 steps: fewer than trainer.warmup_steps (10); 1 step: nothing after the first to time
    cli("-m", *TINY, "trainer.epochs=1", "trainer.steps_per_epoch=3,1", f"hydra.sweep.dir={sweep}", env=env, check=True)
    three, one = (summary_json(sweep / f"trainer.steps_per_epoch={n}") for n in (3, 1))
    assert three["samples_per_s"] > 0 and three["warmup_steps"] == 1 and three["step_ms"] > 0
    assert "samples_per_s" not in one
    rows = {r["run"].removesuffix(" (baseline)"): r for r in report(sweep)}
    assert float(rows["trainer.steps_per_epoch=3"]["samples/s"]) > 0
    text = (sweep / "report.md").read_text()
    assert "measured over the steps after the first" in text
    assert "no speed for trainer.steps_per_epoch=1: one step: nothing after the first to time" in text


def test_the_default_job_and_a_search_print_no_warning(outputs, tmp_path):
    root, env = outputs
    # the default job's first steps, past the early steps whose gradients are clipped
    default = cli("trainer.epochs=1", "trainer.steps_per_epoch=60", "trainer.progress=log", "data.corpus_size=64",
                  "data.noise_corpus_size=32", "data.val_size=16", env=env, check=True)  # fmt: skip
    assert summary_json(next((root / "runs").iterdir()))["status"] == "completed"
    assert noisy_lines(default.stdout + default.stderr) == []
    search = cli(*SEARCH, f"hydra.sweep.dir={root / 'search'}",
                 f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db", env=env, check=True)  # fmt: skip
    said = search.stdout + search.stderr
    assert noisy_lines(said) == [] and said.count("a heartbeat every") == 1
    # search trials are named by their sampled parameters: no storage URL, no trial link
    listed = runs("list", env=env).stdout.splitlines()
    trials = [line for line in listed if "search/trial_" in line]
    assert len(trials) == 3 and not any("optuna" in line or "sqlite" in line for line in trials)
    assert all("model.hidden=" in line and "optim.lr=" in line for line in trials)
    assert max(len(line) for line in listed) < 200


def test_help_lists_groups_and_commands_that_exist():
    proc = subprocess.run([sys.executable, "-m", "trainer", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "OMP_NUM_THREADS": THREADS})  # fmt: skip
    assert proc.returncode == 0 and "powered by Hydra" not in proc.stdout, proc.stderr
    text = proc.stdout
    for group in ("data", "augment", "model", "optim", "sched", "loss", "precision", "compile", "task"):
        line = re.search(rf"^  {group}\s+(.+)$", text, re.M)
        assert line and len(line.group(1)) > 20, f"{group}: no description"  # from conf/config.yaml's comment
    for group in ("+sweep", "+search", "+experiment"):
        assert re.search(rf"^  {re.escape(group)}\s+\S", text, re.M), group
    assert "adamw, adafactor, adam" in text  # the options, the default first
    modules = set(re.findall(r"python -m ([\w.]+)", text))
    assert {"trainer.runs", "sweeps.report", "trainer.evaluate", "trainer.enhance", "trainer.export"} <= modules
    for module in modules:
        path = ROOT / module.replace(".", "/")
        assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), module
    everyday = text.split("Everyday:")[1].split("Companion commands:")[0]
    commands = [line.split("   ")[0].strip() for line in everyday.strip().splitlines()]
    assert len(commands) >= 4
    for command in commands:  # each example composes (the first job of a sweep)
        words = [w for w in shlex.split(command)[3:] if w != "-m"]
        compose_cfg(*(re.sub(r"=([^,]*),.*$", r"=\1", w).replace("range(3)", "0") for w in words))


def test_a_refused_multirun_creates_nothing(outputs):
    root, env = outputs
    proc = cli("-m", "optim=adamw,nosuch", env=env)
    assert proc.returncode != 0 and "optim/nosuch" in proc.stderr
    assert not root.exists()
