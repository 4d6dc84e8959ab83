"""Losses about level: loudness-normalised comparison and a clipping penalty."""

from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import nn

# BS.1770 measures loudness over 400 ms gating blocks; shorter clips fall back to the
# ungated, unweighted formula.
_BLOCK_SECONDS = 0.4
_ABSOLUTE_GATE_LUFS = -70.0


def loudness(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Loudness in LUFS per example of (batch, time), differentiable.

    ITU-R BS.1770-4 (K-weighting, gating) through `torchaudio.functional.loudness` where it
    is defined. It is NaN when every block falls under the absolute gate (a silent clip)
    and needs 400 ms: there, and only there, -0.691 + 10 log10(mean square) stands in.
    """
    x = x.float()
    plain = -0.691 + 10 * torch.log10(x.pow(2).mean(dim=-1) + 1e-10)
    if x.shape[-1] < _BLOCK_SECONDS * sample_rate:
        return plain
    gated = AF.loudness(x.unsqueeze(-2), sample_rate)
    ok = torch.isfinite(gated)
    if ok.all():  # the usual case: one pass
        return gated
    if not ok.any():
        return plain
    # Some silent clips: only the finite examples go through the gated measure again, as a
    # NaN branch would poison the backward pass even where torch.where discards it.
    return plain.masked_scatter(ok, AF.loudness(x[ok].unsqueeze(-2), sample_rate))


class LoudnessNormalized(nn.Module):
    """`inner` applied after bringing estimate and target to the same loudness.

    A level-sensitive loss (L1, spectral) otherwise rewards getting the level right as much
    as getting the signal right; normalising both to `target_lufs` leaves only the signal.
    The estimate's gain is differentiable (gradients see that a level change is undone).
    Loudness is floored at the absolute gate (-70 LUFS), so a near-silent estimate is
    amplified by at most that much rather than without bound.
    """

    def __init__(self, inner: nn.Module, sample_rate: int, target_lufs: float = -23.0):
        super().__init__()
        self.inner, self.sample_rate, self.target_lufs = inner, sample_rate, target_lufs

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        level = loudness(x, self.sample_rate).clamp_min(_ABSOLUTE_GATE_LUFS)
        return x.float() * torch.pow(10.0, (self.target_lufs - level) / 20).unsqueeze(-1)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(estimate.device.type, enabled=False):  # IIR filters in float32
            return self.inner(self._normalise(estimate), self._normalise(target))


class ClippingPenalty(nn.Module):
    """Mean excess magnitude beyond `threshold` (0 when nothing clips). The target is not
    used: this is a constraint on the output, to weight beside a reconstruction term."""

    def __init__(self, threshold: float = 0.99):
        super().__init__()
        self.threshold = threshold

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.relu(estimate.float().abs() - self.threshold).mean()
