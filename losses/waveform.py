"""Time-domain losses."""

from __future__ import annotations

import torch
from torch import nn

from losses.functional import si_sdr


class L1Loss(nn.Module):
    """Mean absolute error between waveforms."""

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (estimate.float() - target.float()).abs().mean()


class SISDRLoss(nn.Module):
    """Negative mean SI-SDR in dB (lower is better, like every other term)."""

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -si_sdr(estimate, target).mean()
