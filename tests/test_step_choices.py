"""The choices for a faster reduced-precision step (bf16 autocast on the conv U-Net):
channels-last 2-D convs, BatchNorm in float32 under autocast, a fused optimizer. Each is a
config switch that must compute what the default computes; their speed is measured by
`python -m benchmarks.step`."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from models import ConvUNet
from models.layers import BatchNorm1dFloat32, BatchNorm2dFloat32
from tests.conftest import ROOT, THREADS, tiny
from trainer.build import build_optimizer
from trainer.run import assemble

X = torch.randn(3, 1000, generator=torch.Generator().manual_seed(0))


def pair(**options) -> tuple[ConvUNet, ConvUNet]:
    """The default model and one with `options`, holding the same parameters."""
    torch.manual_seed(0)
    default = ConvUNet(hidden=4, depth=3)
    other = ConvUNet(hidden=4, depth=3, **options)
    other.load_state_dict(default.state_dict())
    return default, other


@pytest.mark.parametrize(
    "options", [dict(channels_last=True), dict(norm_float32=True), dict(channels_last=True, norm_float32=True)]
)
def test_the_options_compute_the_default_model(options):
    default, other = pair(**options)
    out, out2 = default(X), other(X)
    torch.testing.assert_close(out2, out, rtol=0, atol=1e-5)
    out.pow(2).mean().backward()
    out2.pow(2).mean().backward()
    for (name, p), q in zip(default.named_parameters(), other.parameters()):
        torch.testing.assert_close(q.grad.reshape(p.shape), p.grad, rtol=1e-4, atol=1e-6, msg=name)
    # BatchNorm's running statistics moved alike
    for a, b in zip(default.buffers(), other.buffers()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_channels_last_runs_2d_convs_on_channels_last_tensors():
    _, model = pair(channels_last=True)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))]
    assert not convs  # no 1-D conv left
    shapes = []

    def record(module, inputs, out):
        shapes.append((out.dim(), out.is_contiguous(memory_format=torch.channels_last)))

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    model(X)
    for h in hooks:
        h.remove()
    assert shapes and all(s == (4, True) for s in shapes)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)


def test_state_dicts_load_across_layouts():
    """A checkpoint of one layout serves the other: (out, in, k) <-> (out, in, 1, k)."""
    default, other = pair(channels_last=True)
    back = ConvUNet(hidden=4, depth=3)
    back.load_state_dict(other.state_dict())
    for (name, a), b in zip(default.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(RuntimeError, match="size mismatch"):  # other shapes still fail
        ConvUNet(hidden=8, depth=3, channels_last=True).load_state_dict(default.state_dict())


@pytest.mark.parametrize("norm", [BatchNorm1dFloat32(3), BatchNorm2dFloat32(3)])
def test_float32_batchnorm_runs_in_float32_under_bf16_autocast(norm, monkeypatch):
    x = torch.randn(4, 3, *([1] if isinstance(norm, nn.BatchNorm2d) else []), 50).bfloat16()
    reference = copy.deepcopy(norm)
    reached = []  # the dtype that reaches the kernel: CPU's bf16 batch norm matches float32 bit
    kernel = nn.functional.batch_norm  # for bit, so only this shows where the math ran

    def recorded(x, *args, **kwargs):
        reached.append(x.dtype)
        return kernel(x, *args, **kwargs)

    monkeypatch.setattr(nn.functional, "batch_norm", recorded)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x)
    assert reached == [torch.float32]
    assert out.dtype == torch.bfloat16  # what follows stays in bf16
    expected = nn.modules.batchnorm._BatchNorm.forward(reference, x.float())  # plain BatchNorm on float32
    torch.testing.assert_close(out, expected.bfloat16(), rtol=0, atol=0)
    torch.testing.assert_close(norm.running_var, reference.running_var)
    assert norm.running_mean.dtype == torch.float32


@pytest.mark.parametrize("optim", ["adam", "adamw", "sgd"])
def test_a_fused_optimizer_steps_like_the_default(optim):
    cfg = tiny(f"optim={optim}").optim
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 1))
    fused_model = copy.deepcopy(model)
    cfg_fused = OmegaConf.merge(cfg, {"fused": True})
    plain, fused = build_optimizer(cfg, model), build_optimizer(cfg_fused, fused_model)
    assert fused.defaults["fused"] is True and not plain.defaults.get("fused")
    x = torch.randn(16, 5)
    for _ in range(3):
        for m, opt in ((model, plain), (fused_model, fused)):
            m(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
    for a, b in zip(model.parameters(), fused_model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_every_choice_composes_and_a_run_trains(tiny_run):
    choices = ("model=conv", "model.channels_last=true", "model.norm_float32=true", "optim.fused=true")
    parts = assemble(tiny(*choices, "precision=amp_bf16"))
    assert parts.network.raw.channels_last and parts.optim.optimizer.defaults["fused"] is True
    run_dir, summary = tiny_run(*choices, "precision=amp_bf16", "trainer.epochs=1")
    assert summary["status"] == "completed"


# the variants `python -m benchmarks.step` times by default, and the two it adds with --batch2 4
VARIANTS = [
    "fp32 eager",
    "bf16 eager",
    "bf16 + channels_last",
    "bf16 + norm_float32",
    "bf16 + fused optimizer",
    "bf16 + all three",
    "fp32 + channels_last + fused",
    "fp32 eager, batch 4",
    "bf16 + all three, batch 4",
]


def test_the_step_benchmark_prints_each_variant():
    """`python -m benchmarks.step` end to end on a tiny model, as a user runs it: one row per
    variant, each timed (its figures are not checked: a benchmark)."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.step", "--steps", "1", "--blocks", "1", "--batch2", "4", "model=conv",
         "model.hidden=4", "trainer.batch_size=2", "data.segment_seconds=0.25", "data.corpus_size=4",
         "data.noise_corpus_size=4", "data.val_size=4"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": THREADS},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert rows[0][0].strip() == "variant"  # the header, then a row per variant
    table = {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}
    assert list(table) == VARIANTS
    for name, (batch, step_ms, samples_s, vs_fp32, _mfu) in table.items():
        assert int(batch) == (4 if name.endswith("batch 4") else 2), name
        assert float(step_ms) > 0 and float(samples_s) > 0 and vs_fp32.endswith("x"), name
    assert table["fp32 eager"][3] == table["fp32 eager, batch 4"][3] == "1.00x"  # each against fp32 at its batch
