"""Engine behaviour: learning, exact resume after SIGKILL and SIGTERM, Ctrl-C, divergence handling."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from tests.conftest import (
    ROOT,
    THREADS,
    TINY,
    before_and_after_one_epoch,
    cli,
    compose_cfg,
    scalars,
    summary_json,
    tiny,
)


@pytest.mark.parametrize("model", ["conv", "lstm"])
def test_short_run_lowers_validation_loss(model):
    cfg = tiny(f"model={model}", "model.hidden=16", "trainer.batch_size=8", "trainer.steps_per_epoch=40")
    before, after = before_and_after_one_epoch(cfg)
    assert after["loss/total"] < before["loss/total"] - 1.0, (before, after)  # SI-SDR loss, in dB
    assert after["si_sdri"] > before["si_sdri"]


RESUME = [
    *TINY,
    "trainer.epochs=2",
    "trainer.steps_per_epoch=6",
    "trainer.checkpoint_every=2",
    "trainer.deterministic=true",
]


def _kill_at_step(run_dir, step: int, sig: int = signal.SIGKILL) -> int:
    """Send `sig` when the run logs `step`; returns the exit status."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": THREADS}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer", *RESUME, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in proc.stdout:
        if f" step {step} " in line:
            proc.send_signal(sig)
            break
    proc.stdout.read()
    proc.wait(timeout=60)
    assert proc.returncode != 0, "the run ended before the signal arrived"
    return proc.returncode


def _same_run(reference, resumed) -> None:
    want, got = scalars(reference / "tb" / "train"), scalars(resumed / "tb" / "train")
    assert [s for s, _ in got["loss/total"]] == list(range(1, 13))  # no step twice, none missing
    assert got["loss/total"] == want["loss/total"]  # bit-identical per-step losses
    assert got["opt/lr"] == want["opt/lr"]
    assert scalars(resumed / "tb" / "val")["metrics/si_sdr"] == scalars(reference / "tb" / "val")["metrics/si_sdr"]
    a = torch.load(reference / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    untimed = lambda path: [{k: v for k, v in h.items() if k != "seconds"} for h in json.loads(path.read_text())]  # noqa: E731
    assert untimed(resumed / "history.json") == untimed(reference / "history.json")


def test_sigkill_and_resume_reproduces_every_step(tmp_path):
    from trainer.run import run

    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    run(compose_cfg(*RESUME), reference)  # in this process; the interrupted runs are real CLI processes

    assert _kill_at_step(resumed, 5) == -signal.SIGKILL  # mid-epoch 1; the last checkpoint is from step 4
    assert not (resumed / "summary.json").exists()
    proc = cli(*RESUME, f"hydra.run.dir={resumed}", check=True)
    assert "resumed from" in proc.stdout + proc.stderr
    _same_run(reference, resumed)

    # SIGTERM (a cluster's preemption notice): the step in flight finishes, `last` is
    # written at that step, the summary says so, the exit status is 128 + 15
    stopped = tmp_path / "sigterm"
    assert _kill_at_step(stopped, 5, signal.SIGTERM) == 143
    summary = summary_json(stopped)
    assert summary["status"] == "interrupted" and "SIGTERM" in summary["reason"]
    step = torch.load(stopped / "checkpoints" / "last.pt", weights_only=True)["state"]["step"]
    assert step >= 5 and summary["steps"] == step
    cli(*RESUME, f"hydra.run.dir={stopped}", check=True)
    _same_run(reference, stopped)


def test_ctrl_c_saves_and_exits_130(tmp_path):
    run = tmp_path / "run"
    assert _kill_at_step(run, 3, signal.SIGINT) == 130
    assert summary_json(run)["status"] == "interrupted"
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["state"]["step"] >= 3


def test_non_finite_loss_stops_the_run_as_diverged(tmp_path):
    run_dir = tmp_path / "run"
    cli(
        *TINY,
        "+loss.terms.bad={_target_:tests.helpers.NaNAfter,after:4}",
        "+loss.weights.bad=1.0",
        f"hydra.run.dir={run_dir}",
        check=True,
    )
    summary = summary_json(run_dir)
    assert summary["status"] == "diverged"
    assert "non-finite" in summary["reason"] and "step 5" in summary["reason"]
    assert summary["objective"] == "-inf"  # never NaN; the worst value for a max metric
    # the last checkpoint is the last good state (end of epoch 1), never the NaN one
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert last["state"]["step"] == 3
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())


def test_objective_is_never_nan():
    from trainer.run import objective
    from trainer.run_state import RunState

    assert objective(RunState(status="diverged", best=3.0), -math.inf) == -math.inf
    assert objective(RunState(status="completed", best=None), math.inf) == math.inf
    assert objective(RunState(status="completed", best=2.5), -math.inf) == 2.5
