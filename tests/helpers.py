"""Test-only components, reachable from config as `_target_: tests.helpers.<name>`, and the
small helpers the tests share."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import torch
from torch import nn


class NaNAfter(nn.Module):
    """A loss term that is 0 for `after` training calls, then NaN."""

    def __init__(self, after: int = 3):
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.calls += 1
        zero = (estimate * 0).mean()
        return zero + float("nan") if self.calls > self.after else zero


class Boom(nn.Module):
    """A model that raises on its first forward: a job that crashes."""

    def __init__(self, **ignored):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom: this job fails on purpose")


class Flaky(nn.Module):
    """The LSTM enhancer, or a job that crashes (`mode=raise`), diverges (`mode=diverge`) or
    is killed outright, as the kernel kills a process out of memory (`mode=killed`)."""

    def __init__(self, mode: str = "ok", **lstm_args):
        super().__init__()
        from models import LSTMEnhancer

        self.mode = mode
        self.inner = LSTMEnhancer(**lstm_args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "raise":
            raise RuntimeError("flaky: this trial crashes on purpose")
        if self.mode == "killed":
            os.kill(os.getpid(), signal.SIGKILL)
        out = self.inner(x)
        return out * float("nan") if self.mode == "diverge" else out


class FailsAtWidth(nn.Module):
    """The LSTM enhancer, except that `hidden == fail_hidden` raises: one bad job in a sweep."""

    def __init__(self, hidden: int = 4, fail_hidden: int = 5, **lstm_args):
        super().__init__()
        from models import LSTMEnhancer

        if hidden == fail_hidden:
            raise RuntimeError(f"model.hidden={hidden}: this job fails on purpose")
        self.inner = LSTMEnhancer(hidden=hidden, **lstm_args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def poison_step(parts, step: int) -> None:
    """Multiply the gradient of the first parameter by inf on the `step`-th backward."""
    calls = {"n": 0}

    def hook(grad):
        calls["n"] += 1
        return grad * float("inf") if calls["n"] == step else grad

    next(parts.network.raw.parameters()).register_hook(hook)


def train_quietly(parts, trainer_cfg, tmp):
    """`engine.train` with no loggers, checkpoints under `tmp/ckpt`; returns the RunState."""
    from trainer.loop.checkpointer import Checkpointer
    from trainer.loop.engine import train
    from trainer.run_state import RunState

    return train(parts, trainer_cfg, RunState(), checkpointer=Checkpointer(tmp / "ckpt"), history=tmp / "history.json")


class NaNBackward(nn.Module):
    """The LSTM enhancer plus `0 * sqrt(p)` with p = 0: the forward is finite, but
    SqrtBackward0 computes 0 / 0 = NaN: what anomaly mode must name."""

    def __init__(self, **lstm_args):
        super().__init__()
        from models import LSTMEnhancer

        self.inner = LSTMEnhancer(**lstm_args)
        self.zero = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + 0 * torch.sqrt(self.zero)


class TermOnce(nn.Module):
    """The LSTM enhancer that sends this process SIGTERM at its `after`-th training forward,
    once: the first run that finds no `marker` file creates it and is interrupted (as a
    preempted job is), every later run trains normally."""

    def __init__(self, marker: str, after: int = 4, **lstm_args):
        super().__init__()
        from models import LSTMEnhancer

        self.marker, self.after, self.calls = marker, after, 0
        self.inner = LSTMEnhancer(**lstm_args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import os
        import signal
        from pathlib import Path

        if self.training:
            self.calls += 1
            if self.calls == self.after and not Path(self.marker).exists():
                Path(self.marker).touch()
                os.kill(os.getpid(), signal.SIGTERM)
        return self.inner(x)


def untrained_checkpoint(folder: Path, *overrides: str) -> Path:
    """`folder/model.pt`: the job's model (the default job's, or `overrides`'), untrained,
    with the config that rebuilds it: what the tools that use a trained model read."""
    from tests.conftest import compose_cfg
    from trainer.build import build_model
    from trainer.checkpoint import weights
    from trainer.identity import job_config

    cfg = compose_cfg(*overrides)
    path = Path(folder) / "model.pt"
    torch.save(weights(build_model(cfg.model), job_config(cfg)), path)
    return path
