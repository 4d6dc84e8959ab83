"""The search stack on current Optuna (4.x, under a Hydra sweeper released for Optuna 2):
every sampler option runs, journal storage for workers without a database server, bad
storage and changed search spaces refused before a trial starts, studies from Optuna 2.10
migrated, optuna-dashboard in a real headless browser."""

from __future__ import annotations

import html
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_search import PINNED, _check_shared_study, _workers, search

optuna = pytest.importorskip("optuna")

GRID = [o for o in PINNED if not o.startswith(("model.hidden", "model.layers"))]  # the rest pinned
FIXTURE = Path(__file__).parent / "data" / "optuna-2.10-study.db"  # written by this project under Optuna 2.10.1


def trials_of(storage_url: str, study: str):
    from trainer.search.optuna_compat import open_storage

    return optuna.load_study(study_name=study, storage=open_storage(storage_url)).trials


@pytest.mark.parametrize(
    "sampler, extra",
    [
        ("tpe", ["model.hidden=4"]),
        ("random", ["model.hidden=4"]),
        ("cmaes", ["model.hidden=4"]),
        ("gp", ["model.hidden=4", "hydra.sweeper.sampler.n_startup_trials=1"]),
        ("grid", ["-m", *GRID, "model.hidden=choice(4,6)", "model.layers=choice(1,2)"]),
    ],
)
def test_every_sampler_runs_a_tiny_search(tmp_path, sampler, extra):
    proc = search(tmp_path, sampler, f"hydra/sweeper/sampler={sampler}", "hydra.sweeper.n_trials=3", *extra)
    name = {"tpe": "TPESampler", "random": "RandomSampler", "cmaes": "CmaEsSampler", "gp": "GPSampler",
            "grid": "GridSampler"}[sampler]  # fmt: skip
    assert f"sampler {name}" in proc.stdout + proc.stderr
    trials = trials_of(f"sqlite:///{tmp_path}/optuna.db", sampler)
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 3
    if sampler == "grid":  # 2 x 2 grid points for the two searched dimensions, none repeated
        points = {(t.params["model.hidden"], t.params["model.layers"]) for t in done}
        assert len(points) == 3 and points <= {(4, 1), (4, 2), (6, 1), (6, 2)}


def test_grid_caps_the_budget_at_the_grid_and_refuses_continuous_ranges(tmp_path):
    search(tmp_path, "g", "-m", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=10", *GRID,
           "model.hidden=choice(4,6)", "model.layers=1")  # fmt: skip
    assert len(trials_of(f"sqlite:///{tmp_path}/optuna.db", "g")) == 2  # the whole grid, once
    proc = search(tmp_path, "g2", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2", check=False)
    assert proc.returncode != 0 and "needs discrete values" in proc.stderr and "hydra.sweeper.params." in proc.stderr


def test_nsga2_runs_a_multi_objective_search(tmp_path):
    from tests.conftest import cli
    from tests.test_search import FIXED

    proc = cli(
        "+search=denoise_pareto", "hydra/sweeper/sampler=nsgaii", "hydra.sweeper.sampler.population_size=2", *FIXED,
        f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db", "hydra.sweeper.study_name=nsga",
        f"hydra.sweep.dir={tmp_path}/nsga", "hydra.sweeper.n_trials=3", "model.hidden=4", "trainer.warmup_steps=0",
        check=True,
    )  # fmt: skip
    assert "sampler NSGAIISampler" in proc.stdout + proc.stderr
    trials = trials_of(f"sqlite:///{tmp_path}/optuna.db", "nsga")
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 3 and all(len(t.values) == 2 for t in complete)
    assert all(t in complete or "duplicate_of" in t.user_attrs for t in trials)  # repeats drawn again, not run


def test_three_workers_share_one_journal_file(tmp_path):
    """No database server: three concurrent local workers append to one journal file and
    stop together at the requested count, with no trial lost or run twice."""
    from trainer.search.optuna_compat import open_storage

    url = f"journal:///{tmp_path}/optuna.log"
    _workers(tmp_path, "journal", url, n=3, trials=6)
    _check_shared_study(tmp_path, "journal", open_storage(url), trials=6)
    numbers = [t.number for t in trials_of(url, "journal")]
    assert len(numbers) == len(set(numbers))


def test_a_journal_preset_option_composes():
    from tests.conftest import cli

    proc = cli("+search=tiny", "optuna/storage=journal", "--cfg", "hydra", check=True)
    assert "storage: journal:///" in proc.stdout and "/outputs/optuna.log" in proc.stdout


@pytest.mark.parametrize(
    "url, why",
    [
        ("not-a-url", "ArgumentError"),
        ("postgresql://optuna@127.0.0.1:1/optuna", "OperationalError"),  # nothing listens on port 1
        ("mysql://u@127.0.0.1:1/x", "ImportError"),  # no driver installed
    ],
)
def test_a_bad_storage_url_is_refused_before_any_trial(tmp_path, url, why):
    proc = search(tmp_path, "bad", "hydra.sweeper.n_trials=1", storage=url, check=False, timeout=120)
    assert proc.returncode != 0
    assert f"hydra.sweeper.storage={url}" in proc.stderr and why in proc.stderr, proc.stderr[-2000:]
    assert not list((tmp_path / "bad").glob("trial_*"))  # nothing ran


def test_a_changed_search_space_is_refused_with_how_to_start_a_new_study(tmp_path):
    search(tmp_path, "space", "hydra.sweeper.n_trials=1", "model.hidden=choice(4,6)")
    proc = search(tmp_path, "space", "hydra.sweeper.n_trials=2", "model.hidden=choice(4,8)", check=False)
    assert proc.returncode != 0
    assert "model.hidden" in proc.stderr and "hydra.sweeper.study_name=space_v2" in proc.stderr, proc.stderr[-2000:]
    assert len(trials_of(f"sqlite:///{tmp_path}/optuna.db", "space")) == 1  # no trial was started


def test_a_study_from_optuna_2_10_is_upgraded_and_continues(tmp_path):
    """tests/data/optuna-2.10-study.db was written by `python -m trainer +search=tiny` under
    Optuna 2.10.1 (3 completed trials, 1 pruned). Opening it is refused with the command
    that upgrades it; after `optuna storage upgrade` every trial is there and the same
    search continues it."""
    db = tmp_path / "old.db"
    shutil.copy(FIXTURE, db)
    url = f"sqlite:///{db}"
    common = ["+search=tiny", "hydra.sweeper.study_name=made_by_optuna_2_10", "trainer.epochs=1",
              "trainer.steps_per_epoch=2", "data.val_size=4", "data.corpus_size=4", "data.noise_corpus_size=4",
              "trainer.num_workers=0", "trainer.validation.slow_examples=0", "trainer.validation.media_examples=0",
              f"hydra.sweeper.storage={url}", f"hydra.sweep.dir={tmp_path}/search"]  # fmt: skip
    from tests.conftest import cli

    refused = cli(*common, "hydra.sweeper.n_trials=5")
    assert refused.returncode != 0 and f"optuna storage upgrade --storage '{url}'" in refused.stderr
    assert db.read_bytes() == FIXTURE.read_bytes()  # the refusal changed nothing

    optuna_cli = Path(sys.executable).parent / "optuna"
    subprocess.run([str(optuna_cli), "storage", "upgrade", "--storage", url], check=True, capture_output=True)
    study = optuna.load_study(study_name="made_by_optuna_2_10", storage=url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED"]
    assert study.best_value == pytest.approx(3.5867960453033447)
    assert study.best_params == {"model.hidden": 64, "model.layers": 1, "optim.lr": pytest.approx(0.009145320282946534)}
    assert study.trials[3].user_attrs["status"] == "pruned"

    cli(*common, "hydra.sweeper.n_trials=5", check=True)  # the same search, one trial more
    after = optuna.load_study(study_name="made_by_optuna_2_10", storage=url).trials
    assert len(after) == 5 and after[4].state.name in ("COMPLETE", "PRUNED")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _page_text(url: str) -> str:
    """The text of a page after its JavaScript ran, in headless Chromium."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    dom = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def test_dashboard_shows_the_trials_and_the_best_value_in_a_browser(tmp_path):
    pytest.importorskip("optuna_dashboard")
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("no Chromium (apt-get install chromium; .ci/run does)")
    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="small", storage=url, direction="maximize")
    for value in (0.5, 1.25, 2.75, 2.0):
        trial = study.ask()
        trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
        study.tell(trial, value)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "sweeps.dashboard", url, "--port", str(port)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.3)
        base = f"http://127.0.0.1:{port}/dashboard/studies/{study._study_id}"
        overview = _page_text(base)
        assert "small" in overview and "Best Trial (number=2) 2.75" in overview, overview[:2000]
        listing = _page_text(f"{base}/trials")
        assert "4 Trials" in listing and all(f"Trial {n} Complete" in listing for n in range(4)), listing[:2000]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_project_sampler_configs_win_whatever_the_plugin_path_order():
    """Launcher workers get sweeps/plugins first on PYTHONPATH; Hydra's scan then runs the
    released plugin's config after this project's, which must not undo its grid (seeded)
    and motpe (TPE on Optuna 4)."""
    import os

    from tests.conftest import cli

    env = {**os.environ, "PYTHONPATH": str(ROOT / "sweeps" / "plugins")}
    grid = cli("+search=denoise_lstm", "hydra/sweeper/sampler=grid", "--cfg", "hydra", env=env, check=True)
    assert "_target_: optuna.samplers.GridSampler" in grid.stdout and "seed: 0" in grid.stdout
    motpe = cli("+search=denoise_pareto", "hydra/sweeper/sampler=motpe", "--cfg", "hydra", env=env, check=True)
    assert "_target_: optuna.samplers.TPESampler" in motpe.stdout
