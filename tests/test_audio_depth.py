"""Audio-specific depth: TensorBoard media, speech metrics against references and hand
values, super-resolution, loudness and clipping losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from losses import ClippingPenalty, L1Loss, LoudnessNormalized
from losses.level import loudness
from models.lstm import LSTMEnhancer
from tests.conftest import TINY, before_and_after_one_epoch, cli, compose_cfg, tiny
from trainer import metrics as M
from trainer.loop.validation import validate
from trainer.run import assemble
from trainer.tasks import Denoise, SuperResolution

SR = 16000


def speechlike(seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Harmonics with a moving pitch and a syllable envelope: enough for PESQ's VAD."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 140 + 30 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None) ** 0.5
    return torch.tensor(0.1 * voice * envelope + 0.001 * rng.standard_normal(len(t)), dtype=torch.float32)


def media_run(tmp_path, *extra):
    run = tmp_path / "run"
    cli(
        *TINY,
        "trainer.validation.media_examples=2",
        "trainer.validation.slow_examples=2",
        "data.segment_seconds=0.5",
        *extra,
        f"hydra.run.dir={run}",
        check=True,
    )
    return run


def events(run, writer: str) -> EventAccumulator:
    acc = EventAccumulator(str(run / "tb" / writer), size_guidance={"images": 0, "audio": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_val_writer_gets_audio_and_spectrograms_train_writer_none(tmp_path):
    run = media_run(tmp_path)
    train, val = events(run, "train").Tags(), events(run, "val")
    assert train["images"] == [] and train["audio"] == []
    tags = val.Tags()
    roles = ("input", "output", "target")
    assert sorted(tags["audio"]) == sorted(f"audio/{i}/{r}" for i in range(2) for r in roles)
    assert sorted(tags["images"]) == sorted(f"spectrogram/{i}/{r}" for i in range(2) for r in roles)
    # inputs and targets once (first validation, step 3), outputs at every validation
    assert [e.step for e in val.Images("spectrogram/0/input")] == [3]
    assert [e.step for e in val.Audio("audio/1/target")] == [3]
    assert [e.step for e in val.Images("spectrogram/0/output")] == [3, 6]
    clip = val.Audio("audio/0/output")[-1]
    assert clip.sample_rate == SR and clip.length_frames == SR // 2
    image = val.Images("spectrogram/1/output")[-1]
    assert image.encoded_image_string.startswith(b"\x89PNG") and image.width > 300
    # slow metrics (PESQ, STOI) in the val writer; clipping and HF checks every epoch
    scalars = val.Tags()["scalars"]
    for name in ("si_sdr", "si_sdri", "stoi", "estoi", "clip_frac", "hf_excess_db"):
        assert f"metrics/{name}" in scalars, name


def test_slow_metrics_follow_their_cadence_and_subset():
    cfg = tiny("data.segment_seconds=0.5", "trainer.validation.slow_examples=3")
    parts = assemble(cfg)
    metrics, kept = validate(parts, slow_examples=3, keep=2)
    assert {"stoi", "estoi"} <= set(metrics) and len(kept) == 2
    assert set(kept[0]) == {"input", "output", "target"} and kept[0]["output"].shape == (SR // 2,)
    # the subset is the first N examples: recompute STOI on them by hand
    batch = next(iter(parts.feed.valid_loader))
    inputs, target = parts.task.pair(batch)
    with torch.no_grad():
        output = parts.network.raw(inputs)
    expected = np.nanmean([M.stoi(target[i], output[i], SR) for i in range(3)])  # NaN: too short after VAD
    assert math.isfinite(expected)
    assert metrics["stoi"] == pytest.approx(expected, abs=1e-6)
    plain, _ = validate(parts)
    assert "stoi" not in plain and "pesq_wb" not in plain


def test_pesq_and_stoi_match_the_reference_packages():
    from pesq import pesq
    from pystoi import stoi

    clean = speechlike(2.0)
    noisy = clean + 0.02 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    ref, deg = clean.double().numpy(), noisy.double().numpy()
    assert M.pesq(clean, noisy, SR, "wb") == pytest.approx(pesq(SR, ref, deg, "wb"), abs=1e-6)
    assert M.pesq(clean, noisy, SR, "nb") == pytest.approx(
        pesq(8000, M._at(clean, SR, 8000), M._at(noisy, SR, 8000), "nb"), abs=1e-6
    )
    assert M.stoi(clean, noisy, SR) == pytest.approx(stoi(ref, deg, SR), abs=1e-6)
    assert M.stoi(clean, clean, SR) == pytest.approx(1.0, abs=1e-6)
    assert M.pesq(clean, clean, SR, "wb") == pytest.approx(4.644, abs=0.01)  # PESQ-WB ceiling
    assert math.isnan(M.stoi(clean[:3000], noisy[:3000], SR))  # too short: NaN, not 1e-5


def test_lsd_clipping_and_high_band_against_hand_values():
    x = speechlike(1.0)[None]
    # twice the amplitude: log10 power differs by log10(4) in every bin, so LSD = 0.602
    assert M.lsd(2 * x, x, SR).item() == pytest.approx(math.log10(4), rel=1e-4)
    # a difference confined to the band above 4 kHz: the high-band LSD sees all of it
    spec = torch.fft.rfft(x)
    freqs = torch.fft.rfftfreq(x.shape[-1], 1 / SR)
    y = torch.fft.irfft(spec * torch.where(freqs >= 5000, 3.0, 1.0), n=x.shape[-1])
    assert M.lsd(y, x, SR, low_hz=6000).item() == pytest.approx(math.log10(9), rel=0.02)
    assert M.lsd(y, x, SR).item() < M.lsd(y, x, SR, low_hz=6000).item()
    # high-band excess: amplitude x3 above the cutoff = +9.54 dB of energy
    assert M.high_band_excess_db(y, x, SR, 6000).item() == pytest.approx(20 * math.log10(3), abs=0.2)
    assert M.high_band_excess_db(x, x, SR, 6000).item() == pytest.approx(0.0, abs=1e-4)
    clipped = torch.tensor([[0.5, 1.0, -0.995, 0.2], [0.0, 0.0, 0.0, 0.0]])
    assert M.clipping_fraction(clipped, 0.99).tolist() == [0.5, 0.0]
    # SI-SDR: a reference plus an orthogonal residual at 1/10 of its power is 10 dB
    a = torch.tensor([1.0, -1.0, 1.0, -1.0])
    b = torch.tensor([1.0, 1.0, -1.0, -1.0])
    assert M.si_sdr(a + math.sqrt(0.1) * b, a).item() == pytest.approx(10.0, abs=1e-4)


def test_task_metrics_include_the_field_checks():
    task = Denoise(sample_rate=SR, hf_cutoff_hz=6000)
    x = speechlike(0.5)[None]
    metrics = task.metrics(x * 1.0, x + 0.01, x)
    assert set(metrics) == {"si_sdr", "si_sdri", "clip_frac", "hf_excess_db"}
    with pytest.raises(ValueError, match="slow metric"):
        Denoise(monitor="pesq_wb")
    with pytest.raises(ValueError, match="task.slow_metrics"):
        Denoise(slow_metrics=["mos"])


def test_superres_input_is_band_limited():
    task = SuperResolution(input_rate=8000, sample_rate=SR)
    x = speechlike(1.0)[None] + 0.05 * torch.randn(1, SR, generator=torch.Generator().manual_seed(0))
    inputs, target = task.pair({"clean": x})
    assert inputs.shape == target.shape and torch.equal(target, x)
    power = torch.fft.rfft(inputs).abs().pow(2)[0]
    freqs = torch.fft.rfftfreq(SR, 1 / SR)
    high, low = power[freqs > 4100].sum(), power[freqs < 3700].sum()
    assert 10 * torch.log10(high / low) < -40  # the band above 4 kHz is gone
    with pytest.raises(ValueError, match="task.input_rate"):
        SuperResolution(input_rate=16000, sample_rate=SR)


def test_superres_trains_and_lowers_lsd():
    cfg = compose_cfg(
        *TINY,
        "task=superres",
        "model=conv",
        "model.hidden=8",
        "loss=l1_mrstft",
        "trainer.batch_size=8",
        "trainer.steps_per_epoch=30",
    )
    before, after = before_and_after_one_epoch(cfg)
    assert after["lsd"] < before["lsd"] - 0.5, (before, after)
    assert after["lsd"] < after["lsd_input"]  # better than handing the input back


def test_lstm_residual_spectrum_can_fill_an_empty_band():
    torch.manual_seed(0)
    x = speechlike(0.5)[None]
    freqs = torch.fft.rfftfreq(x.shape[-1], 1 / SR)
    x = torch.fft.irfft(torch.fft.rfft(x) * (freqs < 3000), n=x.shape[-1])  # nothing above 3 kHz
    high = {}
    for residual in (False, True):
        y = LSTMEnhancer(hidden=8, residual=residual)(x).detach()
        high[residual] = torch.fft.rfft(y).abs().pow(2)[0, freqs > 5000].sum().item()
    # a mask only rescales the input's (empty) bins: what reaches the band is leakage of
    # frame-to-frame mask changes; the residual adds a spectrum of its own (31x here, untrained)
    assert high[True] > 10 * high[False], high


def test_loudness_matches_torchaudio_and_stays_finite():
    import torchaudio.functional as AF

    x = torch.stack([speechlike(1.0, 0), 0.1 * speechlike(1.0, 1), torch.zeros(SR)])
    x.requires_grad_(True)
    value = loudness(x, SR)
    assert torch.allclose(value[:2], AF.loudness(x[:2, None].detach(), SR), atol=1e-4)
    assert torch.isfinite(value).all()  # the silent clip: ungated fallback, not NaN
    value.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.isfinite(loudness(x[:, :4000], SR)).all()  # shorter than one 400 ms block


def test_loudness_normalised_loss_ignores_level_only():
    loss = LoudnessNormalized(L1Loss(), SR)
    target = speechlike(1.0)[None]
    estimate = target + 0.01 * torch.randn(1, SR, generator=torch.Generator().manual_seed(2))
    base = loss(estimate, target)
    assert loss(4.0 * estimate, target).item() == pytest.approx(base.item(), rel=1e-4)
    assert L1Loss()(4.0 * estimate, target) > 10 * L1Loss()(estimate, target)  # the plain loss does not
    gain = torch.tensor(2.0, requires_grad=True)
    loss(gain * estimate, target).backward()
    assert abs(gain.grad.item()) < 1e-4  # no gradient along the level


def test_clipping_penalty_is_the_mean_excess():
    penalty = ClippingPenalty(threshold=0.9)
    out = torch.tensor([[1.0, -1.2, 0.5, 0.0]], requires_grad=True)
    value = penalty(out, torch.zeros_like(out))
    assert value.item() == pytest.approx((0.1 + 0.3) / 4)
    value.backward()
    assert out.grad.tolist() == [[0.25, -0.25, 0.0, 0.0]]


def test_one_nan_aware_mean_for_validation_and_scoring():
    import math

    from trainer.inference.evaluate import means
    from trainer.metrics import nan_mean

    assert nan_mean([1.0, math.nan, 3.0]) == 2.0 and math.isnan(nan_mean([math.nan]))
    rows = [
        {"file": "a", "pesq_wb_in": 1.0, "pesq_wb_out": math.nan},
        {"file": "b", "pesq_wb_in": 2.0, "pesq_wb_out": 3.0},
    ]
    assert means(rows) == {"pesq_wb_in": 1.5, "pesq_wb_out": 3.0, "pesq_wb_gain": 1.5, "files": 2}
