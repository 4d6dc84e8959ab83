"""docs/notebooks/inspect_run.ipynb, executed end to end as a researcher would run it: on two
tiny runs trained with the real CLI, headless (nbclient). Its numbers are the runs' own: the
mean SI-SDR and hf_excess_db of its clips are what each run's validation logged for its best
checkpoint, so the notebook loaded that checkpoint and rebuilt that validation set. The
committed file carries no outputs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, THREADS, TINY, summary_json

NOTEBOOK = ROOT / "docs" / "notebooks" / "inspect_run.ipynb"
CLIPS = 4  # the notebook's N_CLIPS; TINY's validation set (data.val_size=4) holds exactly that many


def start_training(tmp_path: Path, name: str, *overrides: str) -> subprocess.Popen:
    """`python -m trainer` on the TINY job, from the repo root, in the background (two at a
    time: each gets half of this worker's threads)."""
    threads = str(max(1, int(THREADS) // 2))
    return subprocess.Popen(
        [sys.executable, "-m", "trainer", *TINY, *overrides, f"outputs={tmp_path}/out-{name}",
         f"hydra.run.dir={tmp_path}/{name}"],
        cwd=ROOT, env={**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": threads},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def tagged(nb, tag: str):
    (cell,) = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    return cell


def best_epoch_metrics(run_dir: Path) -> dict:
    """The validation metrics of the epoch whose checkpoint is `best.pt`."""
    best = summary_json(run_dir)["best_epoch"]
    (entry,) = [e for e in json.loads((run_dir / "history.json").read_text()) if e["epoch"] == best]
    return entry


def test_the_inspect_run_notebook_runs_headless_on_two_trained_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # run B trains longer (another schedule, another best checkpoint): its scores must differ
    training = {"a": start_training(tmp_path, "a", "trainer.epochs=1"), "b": start_training(tmp_path, "b")}
    for name, proc in training.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"training run {name}: exit {proc.returncode}\n{out[-3000:]}"
    run_a, run_b = tmp_path / "a", tmp_path / "b"

    monkeypatch.setenv("RUN_DIR", str(run_a))
    monkeypatch.setenv("RUN_DIR_B", str(run_b))
    monkeypatch.setenv("OMP_NUM_THREADS", THREADS)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    resources = {"metadata": {"path": str(ROOT)}}  # the kernel starts in the repo root
    # raises CellExecutionError, naming the cell, if any cell fails
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources=resources).execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    for tag in ("spectrograms", "bands", "scatter"):  # each draws its figure inline
        assert [o for o in tagged(nb, tag).outputs if "image/png" in o.get("data", {})], tag
    html = "".join(o.data["text/html"] for o in tagged(nb, "audio").outputs if "text/html" in o.get("data", {}))
    assert html.count("<audio") == 3 * CLIPS  # input, output and target of every clip
    assert html.count('src="data:audio/wav;base64,') == 3 * CLIPS

    stdout = "".join(o.text for o in tagged(nb, "summary").outputs if o.output_type == "stream")
    got = json.loads(stdout.strip().splitlines()[-1])
    assert (got["run_a"], got["run_b"], got["clips"]) == (str(run_a), str(run_b), CLIPS)
    assert got["hf_cutoff_hz"] == 6000.0  # the denoise task's default: 75 % of Nyquist at 16 kHz
    for key in ("hf_excess_db", "si_sdr_a", "si_sdr_b"):
        assert len(got[key]) == CLIPS and all(math.isfinite(v) for v in got[key]), (key, got[key])
    hf = got["hf_excess_db"]
    assert got["example"] == max(range(CLIPS), key=lambda i: abs(hf[i]))
    assert got["example_hf_excess_db"] == pytest.approx(hf[got["example"]], abs=1e-3)

    # the run's own validation set through its best checkpoint: the means its validation logged
    logged_a, logged_b = best_epoch_metrics(run_a), best_epoch_metrics(run_b)
    assert sum(got["si_sdr_a"]) / CLIPS == pytest.approx(logged_a["si_sdr"], abs=1e-2)
    assert sum(hf) / CLIPS == pytest.approx(logged_a["hf_excess_db"], abs=1e-2)
    assert sum(got["si_sdr_b"]) / CLIPS == pytest.approx(logged_b["si_sdr"], abs=1e-2)
    assert got["si_sdr_a"] != got["si_sdr_b"]  # run B's own model scored the clips


def test_the_committed_notebook_has_no_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code
    for cell in code:
        source = "".join(cell["source"])
        assert cell["outputs"] == [], source[:80]
        assert cell["execution_count"] is None, source[:80]
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
