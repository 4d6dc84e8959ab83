"""bf16 on any CPU: the probe that decides where the LSTM's recurrence runs, both of its
paths, and every model and loss under every precision against float32.

A CPU without native bf16 (AVX2 only) is simulated on any x86 machine by capping oneDNN's
instruction set (`ONEDNN_MAX_CPU_ISA=AVX2`), which makes oneDNN refuse the bf16 LSTM
exactly as such a CPU does; the float32 path is also forced in-process on every machine.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest
import torch
from torch import nn

from models import ConvUNet, LSTMEnhancer, LSTMStack, Transducer, kernels
from models.lstm import recurrence_dtype
from tests.conftest import CPU_PRECISIONS, TINY, cli, options, summary_json, tiny, use_bf16_lstm
from trainer.build import build_loss


def _has_avx2() -> bool:
    try:
        return platform.machine() in ("x86_64", "AMD64") and " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.fixture
def unforced(monkeypatch):
    """The real probe, with no forced answer and a fresh verdict; forgotten afterwards."""
    monkeypatch.delenv(kernels.ENV, raising=False)
    kernels.reset()
    yield
    kernels.reset()


def test_the_verdict_on_this_cpu_is_what_its_kernel_does(unforced):
    verdict = kernels.cpu_bf16_lstm()
    lstm = nn.LSTM(6, 8, batch_first=True)
    x = torch.randn(2, 5, 6)
    if verdict.native:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert lstm(x)[0].dtype == torch.bfloat16
        assert recurrence_dtype("cpu", torch.bfloat16)[0] == torch.bfloat16
    else:
        assert "bf16 LSTM" in verdict.reason
        assert recurrence_dtype("cpu", torch.bfloat16)[0] == torch.float32
    assert kernels.cpu_bf16_lstm() is verdict  # probed once per process


def test_the_probe_falls_back_when_the_kernel_raises(unforced, monkeypatch):
    class Refuses(nn.LSTM):
        def forward(self, *args, **kwargs):
            if torch.is_autocast_enabled("cpu"):
                raise RuntimeError("could not create a primitive descriptor for the LSTM forward propagation primitive")
            return super().forward(*args, **kwargs)

    monkeypatch.setattr(kernels.nn, "LSTM", Refuses)
    verdict = kernels.cpu_bf16_lstm()
    assert not verdict.native and verdict.reason == "bf16 LSTM not supported by this CPU's oneDNN"


@pytest.mark.parametrize("damage", ["zeros", "noise", "nan"])
def test_the_probe_refuses_a_kernel_that_gives_wrong_results(unforced, monkeypatch, damage):
    """A kernel that runs but computes nonsense must not be used silently."""

    class Wrong(nn.LSTM):
        def forward(self, x, *args, **kwargs):
            low = torch.is_autocast_enabled("cpu")
            with torch.autocast("cpu", enabled=False):  # a "kernel" that runs on every CPU
                out, state = super().forward(x.float(), *args, **kwargs)
            if not low:
                return out, state
            bad = {"zeros": out * 0, "noise": out + 0.2 * torch.randn_like(out), "nan": out * float("nan")}[damage]
            return bad, state

    monkeypatch.setattr(kernels.nn, "LSTM", Wrong)
    verdict = kernels.cpu_bf16_lstm()
    assert not verdict.native and "wrong results" in verdict.reason


def test_the_probe_leaves_the_global_rng_where_it_was(unforced):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    kernels.cpu_bf16_lstm()
    assert torch.equal(torch.rand(3), expected)


def test_a_forced_answer_is_checked_and_named(monkeypatch):
    monkeypatch.setenv(kernels.ENV, "fast")
    kernels.reset()
    with pytest.raises(ValueError, match=kernels.ENV):
        kernels.cpu_bf16_lstm()
    monkeypatch.setenv(kernels.ENV, "float32")
    kernels.reset()
    assert not kernels.cpu_bf16_lstm().native and kernels.ENV in kernels.cpu_bf16_lstm().reason
    kernels.reset()


def test_the_float32_path_is_exactly_the_float32_recurrence(monkeypatch):
    use_bf16_lstm("float32", monkeypatch)
    torch.manual_seed(0)
    stack = LSTMStack(6, 8, layers=2, bidirectional=True)
    x = torch.randn(3, 10, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, (h, c) = stack(x)
    assert low.dtype == h.dtype == torch.float32
    torch.testing.assert_close(low, stack(x)[0], rtol=0, atol=0)
    kernels.reset()


# Relative error of the output against the float32 run that each precision may not exceed.
# bf16 keeps 8 mantissa bits, fp16 11; a wrong path is off by orders of magnitude more.
_TOLERANCE = {None: 1e-6, torch.bfloat16: 0.08, torch.float16: 0.01}


def _models():
    kw = dict(n_fft=64, hop=32, hidden=8)
    return {
        "lstm-magnitude": (lambda: LSTMEnhancer(**kw), "audio"),
        "lstm-complex-bidirectional": (lambda: LSTMEnhancer(domain="complex", bidirectional=True, **kw), "audio"),
        "lstm-waveform-projected": (lambda: LSTMEnhancer(domain="waveform", proj_size=4, **kw), "audio"),
        "lstm-residual-stacked": (lambda: LSTMEnhancer(residual=True, layers=3, dropout=0.0, **kw), "audio"),
        "conv": (lambda: ConvUNet(hidden=4, depth=2), "audio"),
        "transducer": (lambda: Transducer(5, hidden=8, layers=1, embed=4, pred_hidden=8, joint=8), "tokens"),
    }


def _inputs(kind: str):
    gen = torch.Generator().manual_seed(0)
    if kind == "audio":
        return torch.randn(2, 1600, generator=gen) * 0.1
    return {
        "audio": torch.randn(2, 3200, generator=gen) * 0.1,
        "audio_lengths": torch.tensor([3200, 2400]),
        "tokens": torch.tensor([[1, 2, 3], [4, 1, 0]]),
        "token_lengths": torch.tensor([3, 2]),
    }


def _output(out) -> torch.Tensor:
    return (out.logits if hasattr(out, "logits") else out).float()


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


@pytest.mark.parametrize("name", sorted(_models()))
@pytest.mark.parametrize("cpu_precision", sorted(CPU_PRECISIONS), indirect=True)
def test_every_model_under_every_cpu_precision_matches_float32(name, cpu_precision):
    """Forward and backward run (no crash) and agree with float32 within the dtype's
    rounding (no silent wrong result), on both paths of the bf16 LSTM."""
    make, kind = _models()[name]
    torch.manual_seed(0)
    model = make().eval()  # eval: no dropout or batch statistics between the two runs
    inputs = _inputs(kind)
    reference = _output(model(inputs)).detach()
    with torch.autocast("cpu", dtype=cpu_precision or torch.float32, enabled=cpu_precision is not None):
        out = _output(model(inputs))
    out.square().mean().backward()
    assert out.shape == reference.shape and torch.isfinite(out).all()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert _relative(out, reference) < _TOLERANCE[cpu_precision], _relative(out, reference)


@pytest.mark.parametrize("option", [o for o in options("loss") if o != "rnnt"])  # rnnt: with the transducer above
@pytest.mark.parametrize("cpu_precision", ["bf16-float32", "fp16"], indirect=True)
def test_every_loss_under_autocast_matches_float32(option, cpu_precision):
    loss = build_loss(tiny(f"loss={option}").loss)
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(2, 8000, generator=gen) * 0.1
    estimate = (target + 0.05 * torch.randn(2, 8000, generator=gen)).requires_grad_()
    reference, _ = loss(estimate, target)
    with torch.autocast("cpu", dtype=cpu_precision):
        total, terms = loss(estimate, target)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(estimate.grad).all()
    # every loss computes in float32 inside autocast: the same number
    torch.testing.assert_close(total.float(), reference, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not _has_avx2(), reason="needs an x86 CPU with AVX2 to cap oneDNN at it")
def test_a_cpu_without_native_bf16_trains_bf16_end_to_end(tmp_path):
    """`python -m trainer precision=amp_bf16` on a CPU whose oneDNN has no bf16 LSTM: the
    probe finds it (nothing forced), says so once, the run completes, summary.json says
    which path ran."""
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != kernels.ENV}
    proc = cli(
        *TINY, "precision=amp_bf16", f"hydra.run.dir={run_dir}", env={**env, "ONEDNN_MAX_CPU_ISA": "AVX2"}, check=True
    )
    log = proc.stdout + proc.stderr
    assert log.count("bf16 LSTM not supported by this CPU's oneDNN: recurrence in float32") == 1
    summary = summary_json(run_dir)
    assert summary["status"] == "completed"
    assert summary["precision_paths"] == {"lstm": "float32: bf16 LSTM not supported by this CPU's oneDNN"}


@pytest.mark.parametrize("path", ["float32", "native"])
def test_summary_records_which_lstm_path_ran(tiny_run, monkeypatch, path):
    use_bf16_lstm(path, monkeypatch)
    _, summary = tiny_run("precision=amp_bf16")
    assert summary["status"] == "completed"
    assert summary["precision_paths"]["lstm"].startswith("float32: " if path == "float32" else "bfloat16: ")
    kernels.reset()
    _, fp32 = tiny_run(name="fp32")
    assert fp32["precision_paths"] == {}  # no autocast: nothing to say
