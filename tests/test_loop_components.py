"""The loop's components, each on its own: the metrics window, the checkpointer's cadence,
the time ledger, validation's cadence (the stop policy: tests/test_stopping.py)."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.checkpoint import load
from trainer.config import ValidationConfig
from trainer.loop.checkpointer import Checkpointer
from trainer.loop.loggers import Logger
from trainer.loop.stopping import Diverged
from trainer.loop.timing import Ledger
from trainer.loop.validation import Validation
from trainer.loop.window import MetricsWindow, StepOut
from trainer.run_state import RunState, Speed


def step(loss: float, grad_norm: float = 1.0, skipped: bool = False, **terms: float) -> StepOut:
    return StepOut(torch.tensor(loss), {k: torch.tensor(v) for k, v in terms.items()}, torch.tensor(grad_norm), skipped)


def test_the_window_logs_at_warm_up_end_every_log_every_and_at_epoch_end():
    window = MetricsWindow(log_every=4, warm_at=3, speed=Speed(), check_grads=True)
    due = [s for s in range(1, 13) if window.due(s, end_of_epoch=s == 10)]
    assert due == [3, 4, 8, 10, 12]


def test_the_window_means_its_steps_and_records_only_steady_windows():
    speed = Speed()
    window = MetricsWindow(log_every=2, warm_at=2, speed=speed, check_grads=True)
    window.add(step(1.0, 2.0, l1=0.5), samples=4, data_seconds=0.0)
    window.add(step(3.0, 4.0, l1=1.5), samples=4, data_seconds=0.0)
    first = window.flush(2)  # the warm-up's last step: timed as warm-up, not as a steady window
    assert first["loss/total"] == 2.0 and first["opt/grad_norm"] == 3.0 and first["loss/l1"] == 1.0
    assert speed.warmup_seconds is not None and speed.window_step_ms == []
    window.add(step(5.0, skipped=True), samples=4, data_seconds=0.0)
    second = window.flush(3)  # the next window starts empty
    assert second["loss/total"] == 5.0 and second["opt/skipped_steps"] == 1.0
    assert speed.window_step_ms == [second["perf/step_ms"]] and len(speed.window_data_wait) == 1
    assert second["perf/samples_per_s"] == pytest.approx(4 / (second["perf/step_ms"] / 1000))


def test_a_non_finite_step_anywhere_in_the_window_is_divergence():
    window = MetricsWindow(log_every=10, warm_at=0, speed=Speed(), check_grads=True)
    window.add(step(math.nan), 1, 0.0)
    window.add(step(1.0), 1, 0.0)  # a later finite step does not hide it
    with pytest.raises(Diverged, match="step 2"):
        window.check(2)
    window.reset()
    window.add(step(1.0, grad_norm=math.inf), 1, 0.0)
    with pytest.raises(Diverged):
        window.flush(3)
    fp16 = MetricsWindow(log_every=10, warm_at=0, speed=Speed(), check_grads=False)
    fp16.add(step(1.0, grad_norm=math.inf, skipped=True), 1, 0.0)  # the scaler's business
    fp16.check(1)


def test_the_checkpointer_is_due_every_n_steps_except_at_an_epoch_end(tmp_path):
    every3 = Checkpointer(tmp_path / "a", every_steps=3)
    assert [s for s in range(1, 10) if every3.due(s, end_of_epoch=s == 6)] == [3, 9]
    assert not any(Checkpointer(tmp_path / "b", every_steps=0).due(s) for s in range(1, 10))


def test_the_checkpointer_writes_last_and_best_only_where_it_writes(tmp_path):
    snap = {"format": 1, "model": {"w": torch.ones(2)}}
    writer = Checkpointer(tmp_path / "ckpt")
    writer.save_last(snap)
    writer.save_best({**snap, "model": {"w": torch.zeros(2)}})
    assert torch.equal(load(writer.last)["model"]["w"], torch.ones(2))
    assert torch.equal(load(writer.best)["model"]["w"], torch.zeros(2))
    reader = Checkpointer(tmp_path / "other", writes=False)  # a data-parallel rank other than 0
    reader.save_last(snap)
    assert not (tmp_path / "other").exists()


def test_the_ledger_books_each_part_and_the_training_time(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("trainer.loop.timing.time.perf_counter", lambda: now[0])
    state = RunState()
    ledger = Ledger(state)
    now[0] += 2.0
    assert ledger.lap("data") == 2.0
    now[0] += 3.0
    ledger.lap("steps")
    ledger.restart()  # what happens here is nobody's
    now[0] += 10.0
    with ledger.spent("checkpoints"):
        now[0] += 0.5
    ledger.lap("steps")  # the context's exit is the new mark
    assert state.speed.seconds == {"data": 2.0, "steps": 3.0, "checkpoints": 0.5}
    ledger.account()
    ledger.account()
    assert state.train_seconds == 15.5


class Recording(Logger):
    def __init__(self):
        self.scalars, self.media_calls = [], []

    def log(self, metrics, step):
        self.scalars.append((step, dict(metrics)))

    def media(self, examples, step, sample_rate, kind, first):
        self.media_calls.append((step, len(examples), kind, first))


def test_validation_decides_slow_metrics_and_media_per_epoch_and_tags_like_train():
    cfg = ValidationConfig(slow_every=2, slow_examples=5, media_examples=3, media_every=3, spectrogram="mel")
    log = Recording()
    v = Validation(cfg, log)
    assert [v.slow_examples(e) for e in range(1, 7)] == [0, 5, 0, 5, 0, 5]
    assert [v.media_examples(e) for e in range(1, 7)] == [3, 0, 3, 0, 0, 3]  # the first, then every 3
    assert Validation(ValidationConfig(slow_every=0, media_every=0), log).slow_examples(2) == 0
    v.write({"loss/total": 1.0, "si_sdr": 7.0}, [{"x": 1}], step=40, epoch=1, sample_rate=16000)
    v.write({"loss/total": 0.5, "si_sdr": 8.0}, [], step=80, epoch=2, sample_rate=16000)
    assert log.scalars == [
        (40, {"loss/total": 1.0, "metrics/si_sdr": 7.0}),
        (80, {"loss/total": 0.5, "metrics/si_sdr": 8.0}),
    ]
    assert log.media_calls == [(40, 1, "mel", True)]  # inputs and targets with the first only


def test_a_validation_cap_keeps_a_fixed_evenly_spread_subset():
    from tests.conftest import tiny
    from trainer.config import ConfigError, validate
    from trainer.run import assemble

    full = assemble(tiny("data.val_size=8")).feed.valid_loader.dataset
    capped = assemble(tiny("data.val_size=8", "trainer.validation.max_examples=3")).feed.valid_loader.dataset
    assert len(full) == 8 and len(capped) == 3
    for i, j in enumerate([0, 4, 7]):  # spread over the set, ends included
        assert torch.equal(capped[i]["noisy"], full[j]["noisy"])
    assert len(assemble(tiny("data.val_size=8", "trainer.validation.max_examples=50")).feed.valid_loader.dataset) == 8
    with pytest.raises(ConfigError, match="trainer.validation.max_examples"):
        validate(tiny("trainer.validation.max_examples=0"))
