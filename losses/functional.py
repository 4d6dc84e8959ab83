"""Stateless signal measures shared by losses and metrics."""

from __future__ import annotations

import torch


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB per example (Le Roux et al., 2019), over the last axis.

    Both signals are made zero-mean; the reference is scaled by the optimal projection
    coefficient, so the value ignores the estimate's gain. Computed in float32.
    """
    estimate = estimate.float()
    reference = reference.float()
    estimate = estimate - estimate.mean(dim=-1, keepdim=True)
    reference = reference - reference.mean(dim=-1, keepdim=True)
    alpha = (estimate * reference).sum(-1, keepdim=True) / (reference.pow(2).sum(-1, keepdim=True) + eps)
    target = alpha * reference
    residual = estimate - target
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (residual.pow(2).sum(-1) + eps))


def below(x: torch.Tensor, cutoff_hz: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Each row (B, T) with its spectrum above its own cut-off (B,) set to zero: a brick
    wall by FFT, differentiable, in float32. What a loss compares where the input lost the
    band above the cut-off (trainer/data/augment.py's `bandlimit_target: masked`)."""
    with torch.autocast(x.device.type, enabled=False):
        spec = torch.fft.rfft(x.float(), dim=-1)
        freqs = torch.fft.rfftfreq(x.shape[-1], 1.0 / sample_rate).to(x.device)
        keep = freqs[None, :] <= cutoff_hz.to(x.device, torch.float32)[:, None]
        return torch.fft.irfft(spec * keep, n=x.shape[-1], dim=-1)
