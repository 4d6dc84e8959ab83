"""The listening page (sweeps/listen.py): built from a real sweep through the CLI, scored
as trainer.evaluate scores, cached, and driven in headless Chromium: it loads without
errors, plays, keeps the position when the column changes, sorts by the scores and shows
the CSV's differences."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.browser import Browser, chromium
from tests.conftest import ROOT, TINY

CLIPS = 6
JOB = [*TINY, "trainer.epochs=1", f"data.val_size={CLIPS}", "data.segment_seconds=2"]  # clips long enough to play
ENV = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}


def listen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweeps.listen", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A 2-run sweep and its page."""
    tmp = tmp_path_factory.mktemp("listen")
    sweep_dir = tmp / "sweep"
    subprocess.run([sys.executable, "-m", "trainer", "-m", *JOB, "model.hidden=4,5", f"hydra.sweep.dir={sweep_dir}",
                    f"outputs={tmp}/out"], cwd=ROOT, env=ENV, capture_output=True, check=True, timeout=600)  # fmt: skip
    made = listen(str(sweep_dir), "--clips", str(CLIPS))
    assert made.returncode == 0, made.stderr[-3000:]
    return sweep_dir


def rows(page_csv: Path) -> list[dict]:
    with open(page_csv, newline="") as f:
        return list(csv.DictReader(f))


def test_the_page_scores_every_run_on_the_same_clips_as_evaluate_does_and_caches_them(sweep):
    page, table = sweep / "listen.html", rows(sweep / "listen.csv")
    assert page.is_file() and page.stat().st_size < 2_000_000
    columns = {r["column"] for r in table}
    assert columns == {"input", "model.hidden=4", "model.hidden=5"}
    clips = {r["clip"] for r in table}
    assert len(clips) == CLIPS and {r["noise"] for r in table} and {r["talker"] for r in table} <= {
        "male", "female", "child",
    }  # fmt: skip
    for r in table:  # the difference is against the input, per clip and metric
        if r["column"] != "input":
            base = next(b for b in table if (b["clip"], b["metric"], b["column"]) == (r["clip"], r["metric"], "input"))
            assert float(r["diff"]) == pytest.approx(float(r["value"]) - float(base["value"]))
    # the cache beside each run: the same scores come back, nothing is recomputed
    (cache,) = (sweep / "model.hidden=4" / "listen").iterdir()
    scores = json.loads((cache / "scores.json").read_text())
    si_sdr = {
        r["clip"]: float(r["value"]) for r in table if r["column"] == "model.hidden=4" and r["metric"] == "si_sdr"
    }
    assert {s["file"]: s["si_sdr_out"] for s in scores} == pytest.approx(si_sdr)
    before = (cache / "scores.json").stat().st_mtime_ns
    started = time.monotonic()
    again = listen(str(sweep), "--clips", str(CLIPS), "-o", str(sweep / "again.html"))
    assert again.returncode == 0 and (cache / "scores.json").stat().st_mtime_ns == before, again.stderr
    assert rows(sweep / "again.csv") == table
    assert time.monotonic() - started < 60


def test_the_report_links_the_page(sweep):
    proc = subprocess.run([sys.executable, "-m", "sweeps.report", str(sweep), "--baseline", "model.hidden=4"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"listening page: {sweep / 'listen.html'}" in proc.stdout
    assert '<a href="listen.html">' in (sweep / "report.html").read_text()


@pytest.fixture
def browser(sweep):
    pytest.importorskip("websocket")
    if chromium() is None:
        pytest.skip("no Chromium (apt-get install chromium; .ci/run does)")
    with Browser((sweep / "listen.html").as_uri()) as b:
        yield b


def test_in_a_browser_the_page_plays_switches_columns_in_place_and_sorts_by_score(browser, sweep):
    b, table = browser, rows(sweep / "listen.csv")
    assert b.js("document.querySelectorAll('#rows tr').length") == CLIPS
    assert b.errors == []
    # play (muted: autoplay) and the position advances
    b.js('const a = document.querySelector(\'audio[data-clip="0"][data-col="0"]\'); a.muted = true; a.play()')
    b.wait_for('document.querySelector(\'audio[data-clip="0"][data-col="0"]\').currentTime > 0.3')
    # A/B: the next column plays from where the first was
    b.js("document.querySelectorAll('audio').forEach((a) => { a.muted = true; })")
    moved = b.js("window.listen.step(1)")
    assert moved["from"] > 0.3 and abs(moved["to"] - moved["from"]) < 0.05, moved
    assert b.js("window.listen.state.current.dataset.col") == "1"
    assert b.js('document.querySelector(\'audio[data-clip="0"][data-col="0"]\').paused')
    b.wait_for("!window.listen.state.current.paused && window.listen.state.current.currentTime > 0")
    # sorted by a run's SI-SDR, descending: the rows come in the order the CSV's scores say
    b.js("const s = document.getElementById('sort'); s.value = 'value:1:si_sdr'; s.dispatchEvent(new Event('change'))")
    shown = b.js("[...document.querySelectorAll('#rows tr')].map((tr) => tr.querySelector('b').textContent)")
    si_sdr = {
        r["clip"]: float(r["value"]) for r in table if r["column"] == "model.hidden=4" and r["metric"] == "si_sdr"
    }
    assert shown == sorted(si_sdr, key=lambda c: -si_sdr[c])
    # every difference shown is the CSV's, to the two decimals shown
    cells = b.js(
        "[...document.querySelectorAll('#rows tr')].flatMap((tr) => [...tr.querySelectorAll('td.cell')].flatMap("
        "(td) => [...td.querySelectorAll('.score')].map((s) => [tr.querySelector('b').textContent, "
        "Number(td.dataset.col), s.dataset.metric, s.querySelector('.diff').textContent])))"
    )
    names = ["input", "model.hidden=4", "model.hidden=5"]
    expected = {(r["clip"], r["column"], r["metric"]): r["diff"] for r in table}
    checked = 0
    for clip, col, metric, text in cells:
        want = expected[(clip, names[col], metric)]
        assert text == ("" if want == "" else f"({float(want):+.2f})"), (clip, col, metric)
        checked += want != ""
    assert checked >= CLIPS * 2
    # a filter by the clips' attributes hides the others
    noise = next(r["noise"] for r in table)
    b.js(f"const f = document.querySelector('select[data-attr=\"noise\"]'); f.value = {json.dumps(noise)}; "
         "f.dispatchEvent(new Event('change'))")  # fmt: skip
    visible = b.js(
        "[...document.querySelectorAll('#rows tr:not(.hidden)')].map((tr) => tr.querySelector('b').textContent)"
    )
    assert sorted(visible) == sorted({r["clip"] for r in table if r["noise"] == noise})
    assert b.errors == []


def test_bad_input_is_named(tmp_path, sweep):
    # a run without a checkpoint is skipped, with a warning
    bare = tmp_path / "untrained"
    bare.mkdir()
    shutil.copy(sweep / "model.hidden=4" / "experiment.json", bare / "experiment.json")
    proc = listen(str(sweep / "model.hidden=4"), str(bare), "--clips", "2", "-o", str(tmp_path / "p.html"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{bare}: no checkpoint (checkpoints/best.pt): skipped" in proc.stderr
    assert {r["column"] for r in rows(tmp_path / "p.csv")} == {"input", "model.hidden=4"}
    # a folder of clips: sub-folders are an attribute, an unreadable file is named and skipped
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for name in ("a/one", "b/two", "b/broken"):
        for part in ("noisy", "clean"):
            (data / part / name).parent.mkdir(parents=True, exist_ok=True)
            sf.write(data / part / f"{name}.wav", rng.standard_normal(16000).astype(np.float32) * 0.05, 16000)
    (data / "noisy" / "b" / "broken.wav").write_bytes(b"RIFF not really audio")
    proc = listen(str(sweep / "model.hidden=4"), "--data", str(data), "-o", str(tmp_path / "d.html"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "broken.wav: cannot be read" in proc.stderr
    got = {(r["clip"], r["folder"]) for r in rows(tmp_path / "d.csv")}
    assert got == {("a/one", "a"), ("b/two", "b")}
    # runs of different tasks cannot share a page
    superres = tmp_path / "superres"
    subprocess.run([sys.executable, "-m", "trainer", *JOB, "task=superres", "model=conv", "model.hidden=4",
                    f"hydra.run.dir={superres}", f"outputs={tmp_path}/out"], cwd=ROOT, env=ENV, check=True,
                   capture_output=True, timeout=600)  # fmt: skip
    proc = listen(str(sweep / "model.hidden=4"), str(superres), "-o", str(tmp_path / "x.html"))
    assert proc.returncode == 2 and not (tmp_path / "x.html").exists()
    assert "runs of different tasks or sample rates cannot share a page" in proc.stderr
    assert "model.hidden=4: Denoise at 16000 Hz" in proc.stderr and "superres: SuperResolution" in proc.stderr
