"""Speech quality metrics used in evaluation and (on a subset) in validation.

PESQ (ITU-T P.862, wide- and narrow-band) through the `pesq` package and STOI/ESTOI
through `pystoi`, the implementations the literature reports. Both are slow on CPU, run
on numpy arrays, and need 16 kHz (PESQ wide-band), 8 or 16 kHz (narrow-band) or any
rate (STOI resamples to 10 kHz itself): inputs are resampled here when needed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torchaudio.functional as AF

from losses.functional import si_sdr

__all__ = ["si_sdr", "pesq", "stoi", "lsd", "clipping_fraction", "high_band_excess_db"]


def nan_mean(values) -> float:
    """Mean of the finite values (PESQ gives NaN where it finds no utterance); NaN if none."""
    finite = [float(v) for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _at(x: torch.Tensor | np.ndarray, sr: int, target: int) -> np.ndarray:
    x = torch.as_tensor(x, dtype=torch.float32)
    if sr != target:
        x = AF.resample(x, sr, target)
    return x.numpy().astype(np.float64)


def pesq(reference, degraded, sample_rate: int, mode: str = "wb") -> float:
    """PESQ MOS-LQO; NaN when PESQ cannot score the pair (no speech found, too short)."""
    from pesq import PesqError
    from pesq import pesq as _pesq

    rate = 16000 if mode == "wb" else 8000
    try:
        return float(_pesq(rate, _at(reference, sample_rate, rate), _at(degraded, sample_rate, rate), mode))
    except PesqError:  # no utterance found, or a clip shorter than PESQ's analysis window
        return math.nan


def stoi(reference, degraded, sample_rate: int, extended: bool = False) -> float:
    """STOI (or ESTOI); NaN for clips too short for its 30-frame (384 ms) analysis, where
    pystoi only warns and returns a meaningless 1e-5."""
    import warnings

    from pystoi import stoi as _stoi

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(
            _stoi(
                _at(reference, sample_rate, sample_rate),
                _at(degraded, sample_rate, sample_rate),
                sample_rate,
                extended=extended,
            )
        )
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return math.nan
    return value


def _power_spectrogram(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """|STFT|^2, (batch, freq, frames), float32."""
    window = torch.hann_window(n_fft, device=x.device)
    return torch.stft(x.float(), n_fft, hop, window=window, return_complex=True).abs().pow(2)


def lsd(
    estimate: torch.Tensor,
    reference: torch.Tensor,
    sample_rate: int,
    n_fft: int = 2048,
    hop: int = 512,
    low_hz: float = 0.0,
    eps: float = 1e-10,
) -> torch.Tensor:
    """Log-spectral distance per example (the super-resolution literature's definition:
    Kuleshov et al. 2017, NU-Wave, AudioSR): the RMS over frequency of the difference of
    log10 power spectra, averaged over frames. `low_hz` keeps only bins at or above it
    (the high band: the part the model had to regenerate)."""
    est, ref = _power_spectrogram(estimate, n_fft, hop), _power_spectrogram(reference, n_fft, hop)
    freqs = torch.linspace(0, sample_rate / 2, est.shape[-2], device=est.device)
    band = freqs >= low_hz
    diff = (torch.log10(ref[..., band, :] + eps) - torch.log10(est[..., band, :] + eps)).pow(2)
    return diff.mean(dim=-2).sqrt().mean(dim=-1)


def clipping_fraction(output: torch.Tensor, threshold: float = 0.99) -> torch.Tensor:
    """Share of samples at or beyond `threshold` in magnitude, per example: what a
    playback chain (or a 16-bit file) would clip."""
    return (output.float().abs() >= threshold).float().mean(dim=-1)


def high_band_excess_db(
    output: torch.Tensor, target: torch.Tensor, sample_rate: int, cutoff_hz: float, n_fft: int = 512, eps: float = 1e-10
) -> torch.Tensor:
    """Energy above `cutoff_hz` in the output relative to the target, in dB, per example.
    Positive: the model added high-frequency content the target lacks (aliasing, spurious
    harmonics, musical noise); negative: it removed some."""
    out, ref = _power_spectrogram(output, n_fft, n_fft // 4), _power_spectrogram(target, n_fft, n_fft // 4)
    freqs = torch.linspace(0, sample_rate / 2, out.shape[-2], device=out.device)
    band = freqs >= cutoff_hz
    return 10 * torch.log10((out[..., band, :].sum((-2, -1)) + eps) / (ref[..., band, :].sum((-2, -1)) + eps))
