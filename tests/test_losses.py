"""Losses and SI-SDR against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
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
    # a ratio that is not a whole number: residual energy 1.5^2 * 4 = 9
    assert si_sdr(2 * ref + 1.5 * err, ref).item() == pytest.approx(10 * math.log10(16 / 9), abs=1e-4)


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


def test_si_sdr_per_row_ignores_each_rows_offset_and_matches_the_one_dimensional_value():
    torch.manual_seed(1)
    ref = torch.randn(3, 500)
    est = 0.5 * ref + 0.3 * torch.randn(3, 500)
    rows = torch.stack([si_sdr(e, r) for e, r in zip(est, ref)])
    offsets = torch.tensor([[2.0], [-1.0], [0.5]])  # a different DC offset per row
    torch.testing.assert_close(si_sdr(est + offsets, ref - offsets), rows)
    # silence against silence: the eps terms give 0 dB, not NaN
    assert si_sdr(torch.zeros(4), torch.zeros(4)).item() == 0.0


def test_mrstft_resolutions_are_parallel_wavegans_and_the_formula_holds_per_resolution():
    loss = MultiResolutionSTFTLoss()
    assert loss.resolutions == [(1024, 120, 600), (2048, 240, 1200), (512, 50, 240)]
    assert [getattr(loss, f"window{i}").shape[0] for i in range(3)] == [600, 1200, 240]
    torch.manual_seed(0)
    x, y = torch.randn(2, 4000), torch.randn(2, 4000) * 0.3
    y[:, :2000] = 0  # silent bins: the magnitude floor (eps) enters the log term
    single = MultiResolutionSTFTLoss(fft_sizes=[256], hop_sizes=[64], win_lengths=[200], eps=1e-5)
    spec = [torch.stft(s, 256, 64, 200, window=torch.hann_window(200), return_complex=True).abs().clamp_min(1e-5)
            for s in (x, y)]  # fmt: skip
    convergence = (
        torch.linalg.vector_norm(spec[1] - spec[0], dim=(-2, -1)) / torch.linalg.vector_norm(spec[1], dim=(-2, -1))
    ).mean()
    log_mag = (spec[1].log() - spec[0].log()).abs().mean()
    torch.testing.assert_close(single(x, y), convergence + log_mag)
    two = MultiResolutionSTFTLoss(fft_sizes=[256, 128], hop_sizes=[64, 32], win_lengths=[200, 100], eps=1e-5)
    other = MultiResolutionSTFTLoss(fft_sizes=[128], hop_sizes=[32], win_lengths=[100], eps=1e-5)
    torch.testing.assert_close(two(x, y), (single(x, y) + other(x, y)) / 2)  # the mean over resolutions
    for sizes in ([1, 2, 1], [2, 1, 1], [1, 2, 2], [2, 2, 1], [1, 1, 2]):
        with pytest.raises(ValueError, match="same length"):
            n_fft, hops, wins = ([256, 128][:n] for n in sizes)
            MultiResolutionSTFTLoss(fft_sizes=n_fft, hop_sizes=hops, win_lengths=wins)
    assert MultiResolutionSTFTLoss().state_dict() == {}  # the windows are not part of a checkpoint
    # a silent estimate: the default magnitude floor keeps the log term finite
    assert torch.isfinite(MultiResolutionSTFTLoss()(torch.zeros(1, 4000), x[:1]))


def tone(seconds: float, amplitude: float, rate: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return amplitude * torch.sin(2 * torch.pi * 997 * t)


def test_loudness_is_bs1770_where_defined_and_the_plain_formula_for_short_or_silent_clips():
    import torchaudio.functional as AF

    from losses.level import loudness

    short = torch.stack([tone(0.3, 0.5), tone(0.3, 0.1)])  # under one 400 ms block
    torch.testing.assert_close(loudness(short, 16000), -0.691 + 10 * torch.log10(short.pow(2).mean(-1) + 1e-10))
    long = torch.stack([tone(1.0, 0.5), tone(1.0, 0.05)])
    torch.testing.assert_close(loudness(long, 16000), AF.loudness(long.unsqueeze(-2), 16000))
    block = torch.stack([tone(0.4, 0.5)])  # exactly one 400 ms block: gated already
    torch.testing.assert_close(loudness(block, 16000), AF.loudness(block.unsqueeze(-2), 16000))
    silent = torch.zeros(2, 16000)
    torch.testing.assert_close(loudness(silent, 16000), torch.full((2,), -0.691 - 100.0))
    mixed = torch.stack([tone(1.0, 0.5), torch.zeros(16000), tone(1.0, 0.05)]).requires_grad_()
    level = loudness(mixed, 16000)
    gated = AF.loudness(long.unsqueeze(-2), 16000)  # each finite row measured on its own
    torch.testing.assert_close(level, torch.stack([gated[0], torch.tensor(-100.691), gated[1]]))
    level.sum().backward()
    assert torch.isfinite(mixed.grad).all() and mixed.grad[0].abs().sum() > 0  # no NaN from the silent row


def test_loudness_normalisation_brings_both_to_minus_23_lufs_and_amplifies_at_most_from_the_gate():
    from losses.level import LoudnessNormalized, loudness

    seen = []
    norm = LoudnessNormalized(lambda e, t: seen.append((e, t)) or (e - t).abs().mean(), 16000)
    x = tone(1.0, 0.5)[None]
    assert norm(0.1 * x, x).item() == pytest.approx(0.0, abs=1e-5)  # the level alone costs nothing
    estimate, target = seen[0]
    torch.testing.assert_close(loudness(target, 16000), torch.tensor([-23.0]), atol=0.01, rtol=0)
    whisper = 1e-5 * x  # about -100 LUFS, under the -70 LUFS gate
    norm(whisper, x)
    gain = seen[1][0][..., 1:] / whisper[..., 1:]  # (the tone starts at 0)
    torch.testing.assert_close(gain, torch.full_like(gain, 10 ** ((-23.0 + 70.0) / 20)), rtol=1e-4, atol=0)


def test_clipping_penalty_is_the_mean_excess_beyond_the_threshold():
    from losses.level import ClippingPenalty

    estimate = torch.tensor([[1.5, -1.2, 0.5, 0.99]])
    assert ClippingPenalty(threshold=0.99)(estimate, None).item() == pytest.approx((0.51 + 0.21) / 4)
    assert ClippingPenalty(threshold=0.99)(0.5 * estimate, None).item() == 0.0
    assert ClippingPenalty()(estimate, None).item() == pytest.approx((0.51 + 0.21) / 4)  # 0.99 by default


def test_composite_without_weights_weighs_each_term_one_and_refuses_no_terms():
    est, ref = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])
    total, terms = Composite({"a": L1Loss(), "b": L1Loss()})(est, ref)
    assert total.item() == pytest.approx(3.0) and terms["a"].item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="loss.terms is empty"):
        Composite({}, {})


def _numpy_stft(x: np.ndarray, n_fft: int = 512, hop: int = 256) -> np.ndarray:
    """GTCRN's STFT by hand: reflect-padded by n_fft/2 (torch's center=True), periodic
    square-root Hann, one-sided FFT per frame; (bins, frames)."""
    padded = np.pad(x, n_fft // 2, mode="reflect")
    window = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft))
    frames = [padded[i : i + n_fft] * window for i in range(0, len(padded) - n_fft + 1, hop)]
    return np.fft.rfft(np.array(frames), axis=1).T


def test_gtcrn_compressed_losses_match_a_hand_computed_stft():
    from losses import CompressedSpectralLoss

    g = np.random.default_rng(3)
    target = g.standard_normal(4000) * 0.1
    estimate = 0.6 * target + 0.03 * g.standard_normal(4000)
    e, t = _numpy_stft(estimate), _numpy_stft(target)
    me, mt = np.abs(e), np.abs(t)
    magnitude = np.mean((me**0.3 - mt**0.3) ** 2)
    d = e / me**0.7 - t / mt**0.7  # each bin's magnitude raised to 0.3, its phase kept
    complex_ = np.mean(d.real**2) + np.mean(d.imag**2)
    est, ref = torch.tensor(estimate[None], dtype=torch.float32), torch.tensor(target[None], dtype=torch.float32)
    assert CompressedSpectralLoss("magnitude")(est, ref).item() == pytest.approx(magnitude, rel=1e-4)
    assert CompressedSpectralLoss("complex")(est, ref).item() == pytest.approx(complex_, rel=1e-4)
    # a pure gain g: both terms are (g^0.3 - 1)^2 times the mean of |X|^0.6
    scaled = CompressedSpectralLoss("complex")(0.5 * ref, ref).item()
    assert scaled == pytest.approx((0.5**0.3 - 1) ** 2 * np.mean(mt**0.6), rel=1e-4)
    assert CompressedSpectralLoss("magnitude")(0.5 * ref, ref).item() == pytest.approx(scaled, rel=1e-4)
    assert CompressedSpectralLoss("complex")(ref, ref).item() == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(ValueError, match="part must be"):
        CompressedSpectralLoss("phase")


def test_the_gtcrn_loss_config_weighs_its_terms_as_gtcrn_does():
    from trainer.build import build_loss

    loss = build_loss(compose_cfg("loss=gtcrn").loss)
    g = torch.Generator().manual_seed(1)
    target = torch.randn(2, 4000, generator=g) * 0.1
    estimate = target + 0.05 * torch.randn(2, 4000, generator=g)
    total, terms = loss(estimate, target)
    assert set(terms) == {"complex", "magnitude", "si_sdr"}
    assert total.item() == pytest.approx(
        30 * terms["complex"].item() + 70 * terms["magnitude"].item() + 0.1 * terms["si_sdr"].item(), rel=1e-6
    )
    # GTCRN's SI-SNR term: -log10 of the projected target's energy over the residual's, per example
    x, s = estimate.double().numpy(), target.double().numpy()
    x, s = x - x.mean(1, keepdims=True), s - s.mean(1, keepdims=True)
    projected = (x * s).sum(1, keepdims=True) / (s * s).sum(1, keepdims=True) * s
    bels = -np.log10((projected**2).sum(1) / ((x - projected) ** 2).sum(1)).mean()
    assert 0.1 * terms["si_sdr"].item() == pytest.approx(bels, rel=1e-4)
