"""Losses and SI-SDR against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from losses import Composite, L1Loss, MultiResolutionSTFTLoss, SISDRLoss
from losses.functional import si_sdr
from tests.conftest import compose_cfg, options


def test_si_sdr_hand_computed():
    ref = torch.tensor([1.0, -1.0, 1.0, -1.0])
    err = torch.tensor([1.0, 1.0, -1.0, -1.0])  # zero-mean, orthogonal to ref
    est = 2 * ref + err
    # projection: alpha = <est, ref>/|ref|^2 = 2 -> target energy 16, residual energy 4
    assert si_sdr(est, ref).item() == pytest.approx(10 * math.log10(16 / 4), abs=1e-4)
    # scale invariant, and the mean is removed first
    assert si_sdr(-3 * est + 0.5, ref).item() == pytest.approx(10 * math.log10(16 / 4), abs=1e-4)


def test_si_sdr_batched_and_loss_sign():
    torch.manual_seed(0)
    ref = torch.randn(3, 1000)
    est = ref + 0.1 * torch.randn(3, 1000)
    per = si_sdr(est, ref)
    assert per.shape == (3,)
    assert torch.all(per > 15)
    assert SISDRLoss()(est, ref).item() == pytest.approx(-per.mean().item(), rel=1e-5)


def test_l1_hand_computed():
    assert L1Loss()(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])).item() == pytest.approx(1.5)


def test_mrstft_zero_for_identical_and_hand_value_for_half_gain():
    torch.manual_seed(0)
    x = torch.randn(2, 8000)
    loss = MultiResolutionSTFTLoss()
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    # |S(x/2)| = |S(x)|/2 in every bin: convergence = 0.5, mean |log 2| = ln 2, per resolution
    assert loss(0.5 * x, x).item() == pytest.approx(0.5 + math.log(2), rel=1e-4)


def test_mrstft_stays_float32_under_autocast():
    x = torch.randn(1, 4000, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = MultiResolutionSTFTLoss()(x * 0.9, x.detach())
    assert value.dtype == torch.float32
    value.backward()
    assert torch.isfinite(x.grad).all()


def test_composite_weights_and_named_terms():
    est, ref = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])
    comp = Composite({"a": L1Loss(), "b": L1Loss()}, {"a": 2.0, "b": 0.5})
    total, terms = comp(est, ref)
    assert set(terms) == {"a", "b"}
    assert total.item() == pytest.approx(2.5 * 1.5)


def test_composite_rejects_mismatched_weights():
    with pytest.raises(ValueError, match="loss.weights"):
        Composite({"a": L1Loss()}, {"b": 1.0})


@pytest.mark.parametrize("name", [n for n in options("loss") if n != "rnnt"])
def test_every_loss_computes_in_float32_from_bf16_inputs(name, monkeypatch):
    """What a bf16 model hands the loss: bf16 tensors under autocast. Each loss must compute
    in float32 from them (its casts and autocast-off blocks): the same value, to float32's
    precision, as the float32 computation on the same numbers."""
    from trainer.build import build_loss

    loss = build_loss(compose_cfg(f"loss={name}").loss)
    g = torch.Generator().manual_seed(0)
    reference = torch.randn(2, 8000, generator=g) * 0.1
    estimate = (reference + 0.05 * torch.randn(2, 8000, generator=g)).bfloat16()
    reference = reference.bfloat16()
    expected_total, expected_terms = loss(estimate.float(), reference.float())
    reached = []  # CPU's STFT upcasts bf16 by itself: only the dtype it is handed shows the guard
    stft = torch.stft

    def recorded(x, *args, **kwargs):
        reached.append(x.dtype)
        return stft(x, *args, **kwargs)

    monkeypatch.setattr(torch, "stft", recorded)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, terms = loss(estimate, reference)
    assert all(dtype == torch.float32 for dtype in reached), reached
    assert total.dtype == torch.float32 and all(v.dtype == torch.float32 for v in terms.values())
    torch.testing.assert_close(total, expected_total, rtol=1e-5, atol=1e-6)
    for key, value in terms.items():
        torch.testing.assert_close(value, expected_terms[key], rtol=1e-5, atol=1e-6)
