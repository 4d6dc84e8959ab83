"""Spectral losses, always evaluated in float32."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-magnitude L1, averaged over several STFT resolutions
    (Yamamoto et al., 2020, Parallel WaveGAN; the resolutions are theirs)."""

    def __init__(
        self,
        fft_sizes: Sequence[int] = (1024, 2048, 512),
        hop_sizes: Sequence[int] = (120, 240, 50),
        win_lengths: Sequence[int] = (600, 1200, 240),
        eps: float = 1e-7,
    ):
        super().__init__()
        if not len(fft_sizes) == len(hop_sizes) == len(win_lengths):
            raise ValueError("loss mrstft: fft_sizes, hop_sizes and win_lengths must have the same length")
        self.resolutions = list(zip(fft_sizes, hop_sizes, win_lengths))
        for i, (_, _, win) in enumerate(self.resolutions):
            self.register_buffer(f"window{i}", torch.hann_window(win), persistent=False)
        self.eps = eps

    def _mag(self, x: torch.Tensor, i: int) -> torch.Tensor:
        n_fft, hop, win = self.resolutions[i]
        spec = torch.stft(x, n_fft, hop, win, window=getattr(self, f"window{i}"), return_complex=True)
        return spec.abs().clamp_min(self.eps)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Half-precision STFT magnitudes underflow in quiet bins, where the log term lives.
        with torch.autocast(estimate.device.type, enabled=False):
            estimate, target = estimate.float(), target.float()
            total = estimate.new_zeros(())
            for i in range(len(self.resolutions)):
                m_est, m_ref = self._mag(estimate, i), self._mag(target, i)
                convergence = torch.linalg.vector_norm(m_ref - m_est, dim=(-2, -1)) / torch.linalg.vector_norm(
                    m_ref, dim=(-2, -1)
                )
                log_mag = (m_ref.log() - m_est.log()).abs().mean()
                total = total + convergence.mean() + log_mag
            return total / len(self.resolutions)


class CompressedSpectralLoss(nn.Module):
    """The power-law compressed spectral losses of GTCRN (Rong et al., ICASSP 2024) and
    DeepFilterNet: both signals' STFTs (512 points, hop 256, square-root Hann, as GTCRN
    trains) with each magnitude raised to `power` (0.3), the phase kept.

    `part="complex"`: MSE of the compressed real parts + MSE of the compressed imaginary
    parts (each bin `X / |X|^(1 - power)`); `part="magnitude"`: MSE of `|X|^power`.
    Compression lifts quiet bins, where speech detail and residual noise live, against the
    loud harmonics an uncompressed MSE is dominated by. conf/loss/gtcrn.yaml weighs them
    as GTCRN does (30 x complex, 70 x magnitude, plus SI-SNR)."""

    def __init__(self, part: str = "complex", power: float = 0.3, n_fft: int = 512, hop: int = 256,
                 eps: float = 1e-12):  # fmt: skip
        super().__init__()
        if part not in ("complex", "magnitude"):
            raise ValueError(f"CompressedSpectralLoss: part must be 'complex' or 'magnitude', got {part!r}")
        self.part, self.power, self.n_fft, self.hop, self.eps = part, power, n_fft, hop, eps
        self.register_buffer("window", torch.hann_window(n_fft).sqrt(), persistent=False)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(estimate.device.type, enabled=False):  # power laws of tiny bins: float32
            specs = [
                torch.stft(x.float(), self.n_fft, self.hop, self.n_fft, window=self.window, return_complex=True)
                for x in (estimate, target)
            ]
            mags = [(s.real.square() + s.imag.square() + self.eps).sqrt() for s in specs]
            if self.part == "magnitude":
                return (mags[0].pow(self.power) - mags[1].pow(self.power)).square().mean()
            squeezed = [s / m.pow(1 - self.power) for s, m in zip(specs, mags)]
            difference = squeezed[0] - squeezed[1]
            return difference.real.square().mean() + difference.imag.square().mean()
