"""The real CLI in a subprocess: what a run leaves on disk, multirun naming, resume."""

from __future__ import annotations

import json

import torch

from tests.conftest import TINY, cli, scalars, summary_json, tiny
from trainer.run import assemble, run

TRAIN_TAGS = {
    "loss/total",
    "loss/si_sdr",
    "opt/lr",
    "opt/grad_norm",
    "perf/samples_per_s",
    "perf/step_ms",
    "perf/data_wait",
}
VAL_TAGS = {"loss/total", "loss/si_sdr", "metrics/si_sdr", "metrics/si_sdri"}


def test_run_writes_tensorboard_checkpoints_history_and_summary(tmp_path):
    run_dir = tmp_path / "run"
    cli(*TINY, f"hydra.run.dir={run_dir}", check=True)

    train, val = scalars(run_dir / "tb" / "train"), scalars(run_dir / "tb" / "val")
    assert TRAIN_TAGS <= set(train), set(train)
    assert VAL_TAGS <= set(val), set(val)
    assert [s for s, _ in train["loss/total"]] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in val["metrics/si_sdr"]] == [3, 6]  # once per epoch, on the global step axis
    assert not {t for t in val if t.startswith(("opt/", "perf/"))}  # the val writer only gets val data

    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert [h["si_sdr"] for h in history] == [v for _, v in val["metrics/si_sdr"]]

    summary = summary_json(run_dir)
    assert summary["status"] == "completed" and summary["steps"] == 6
    assert summary["objective"] == max(h["si_sdr"] for h in history) == summary["best"]

    # HParams: a session summary sits in the val run, with the final metric as a scalar
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb" / "val"))
    acc.Reload()
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(acc.PluginTagToContent("hparams"))
    assert "hparam/si_sdr" in val

    # checkpoints load with weights_only and rebuild the model exactly
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert {"model", "optimizer", "schedule", "scaler", "state", "rng", "config"} <= set(last)
    assert last["state"]["step"] == 6 and last["state"]["history"] == history
    model = assemble(tiny()).network.raw
    model.load_state_dict(last["model"])
    assert best["state"]["best_epoch"] == summary["best_epoch"]
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))

    # the same command again finds the finished run and changes nothing
    before = sorted(p.name for p in (run_dir / "tb" / "train").iterdir())
    again = cli(*TINY, f"hydra.run.dir={run_dir}", check=True)
    assert "already completed" in again.stderr + again.stdout
    assert sorted(p.name for p in (run_dir / "tb" / "train").iterdir()) == before


def test_multirun_job_dirs_are_named_from_swept_choices(tmp_path):
    sweep = tmp_path / "sweep"
    cli("-m", "optim=adamw,sgd", *TINY, "trainer.epochs=1", f"hydra.sweep.dir={sweep}", check=True)
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["optim=adamw", "optim=sgd"]
    for job in jobs:
        assert summary_json(sweep / job)["status"] == "completed"
        assert (sweep / job / "tb" / "train").is_dir() and (sweep / job / "tb" / "val").is_dir()


def test_resume_refuses_a_checkpoint_from_another_config(tmp_path):
    run_dir = tmp_path / "run"
    run(tiny("trainer.epochs=1"), run_dir)  # in this process: only the refusal needs the CLI
    proc = cli(*TINY, "trainer.epochs=1", "optim.lr=0.5", f"hydra.run.dir={run_dir}")
    assert proc.returncode != 0
    assert "optim.lr" in proc.stderr and "different config" in proc.stderr


def test_resume_from_another_runs_checkpoint_and_train_longer(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    run(tiny("trainer.epochs=1"), first)
    cli(*TINY, "trainer.epochs=2", f"resume={first}/checkpoints/last.pt", f"hydra.run.dir={second}", check=True)
    h1 = json.loads((first / "history.json").read_text())
    h2 = json.loads((second / "history.json").read_text())
    assert len(h1) == 1 and len(h2) == 2 and h2[0] == h1[0]
    assert [s for s, _ in scalars(second / "tb" / "train")["loss/total"]] == [4, 5, 6]
    assert summary_json(first)["steps"] == 3  # the source is untouched
