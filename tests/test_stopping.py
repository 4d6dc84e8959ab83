"""The stop policy on its own: budget, early stopping, target, pruning, divergence."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from trainer.config import EarlyStoppingConfig
from trainer.loop.stopping import Diverged, StopPolicy
from trainer.run_state import RunState
from trainer.status import Status
from trainer.tasks import Task


class _Max(Task):
    monitor, mode = "si_sdr", "max"

    def __init__(self):  # the policy needs only the monitored metric and its direction
        pass


def _policy(epochs=10, patience=2, target=None):
    return StopPolicy(_Max(), epochs, EarlyStoppingConfig(enabled=True, patience=patience, min_delta=0.0), target)


def test_best_early_stopping_and_history():
    policy, state = _policy(patience=2), RunState()
    for value in (1.0, 3.0, 2.0):
        policy.validated(state, {"si_sdr": value}, seconds=1.0)
    assert (state.best, state.best_epoch, state.bad_epochs, state.status) == (3.0, 2, 1, Status.RUNNING)
    assert policy.validated(state, {"si_sdr": 2.5}, seconds=2.0) is False
    assert state.status == Status.EARLY_STOPPED and "for 2 validations" in state.reason
    assert [h["epoch"] for h in state.history] == [1, 2, 3, 4]


def test_the_budget_completes_and_the_target_is_timed_once():
    policy, state = _policy(epochs=3, patience=9, target=2.0), RunState()
    for seconds, value in ((1.0, 1.0), (2.0, 2.5), (3.0, 4.0)):
        state.step += 10
        policy.validated(state, {"si_sdr": value}, seconds=seconds)
    assert state.status == Status.COMPLETED and state.finished
    assert (state.speed.time_to_target, state.speed.steps_to_target) == (2.0, 20)


def test_a_non_finite_metric_diverges_and_the_pruner_and_signals_set_their_status():
    policy, state = _policy(), RunState()
    with pytest.raises(Diverged, match="validation si_sdr is nan after epoch 1"):
        policy.validated(state, {"si_sdr": math.nan}, seconds=1.0)
    policy.diverged(state, Diverged("boom"))
    assert (state.status, state.reason) == (Status.DIVERGED, "boom")
    running = RunState(epoch=3)
    policy.pruned(running, None, 1.0)  # no search: nothing happens
    policy.pruned(running, SimpleNamespace(report=lambda epoch, value: False, number=7), 1.0)
    assert running.status == Status.RUNNING
    policy.pruned(running, SimpleNamespace(report=lambda epoch, value: epoch == 3, number=7), 1.0)
    assert running.status == Status.PRUNED and "after epoch 3" in running.reason
    stopped = RunState(step=12)
    policy.interrupted(stopped, "SIGTERM")
    assert (stopped.status, stopped.reason) == (Status.INTERRUPTED, "SIGTERM after step 12")


def test_the_history_and_the_divergence_message_carry_the_right_numbers():
    policy, state = _policy(), RunState(epoch=2, step=7)
    policy.validated(state, {"si_sdr": 1.0, "pesq": 2.0}, seconds=1.23456)
    assert state.history == [{"epoch": 3, "step": 7, "seconds": 1.235, "si_sdr": 1.0, "pesq": 2.0}]
    with pytest.raises(Diverged, match="after epoch 4$"):
        policy.validated(state, {"si_sdr": math.inf}, seconds=2.0)
