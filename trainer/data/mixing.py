"""Mixing speech and noise at an SNR and a level: the one formula every dataset uses."""

from __future__ import annotations

import math

import numpy as np
import torch


def rms(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x, dim=1, keepdim=True) / math.sqrt(x.shape[1])  # no squared temporary


def mix(
    clean: torch.Tensor,
    noise: torch.Tensor | None,
    snr_db: torch.Tensor,
    level_db: torch.Tensor,
    target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(noisy, clean) float32 rows for a batch: noise scaled to `snr_db` by RMS and added,
    then one gain on both (the pair stays aligned in level) so that the clean level is
    `level_db` dBFS, lowered where the mixture would pass 0.99 (never clipped).

    With `target` (reverberant speech in `clean`, its direct-path or early-reverb version in
    `target`), the SNR and level are those of the speech as heard, `clean`, and the second
    row returned is `target` under the same gain.

    Batched tensor ops on the rows' device: the loader or the training device
    (trainer/data/staged.py). Works in place (`noise` becomes the mixture, `clean` or
    `target` the output): a batch is a few MB, and in a loader every fresh buffer of that
    size costs page faults, which is what the step waits for.
    """
    clean_rms = rms(clean) + 1e-8
    if noise is None:
        noisy = clean.clone()
    else:
        noisy = noise
        noisy.mul_(clean_rms / (rms(noisy) + 1e-8) * 10 ** (-snr_db.to(noisy)[:, None] / 20))
        noisy.add_(clean)
    peak = torch.maximum(noisy.amax(1, keepdim=True), -noisy.amin(1, keepdim=True)) + 1e-12  # aminmax: 20x slower
    gain = torch.minimum(10 ** (level_db.to(noisy)[:, None] / 20) / clean_rms, 0.99 / peak)
    noisy.mul_(gain)
    out = clean if target is None else target
    out.mul_(gain)
    return noisy, out


def reverberate(speech: np.ndarray, rir: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """(reverberant, target) of one row: `speech` convolved with the room impulse response,
    and with the response cut `keep` samples after its direct path (its largest peak; 0:
    the direct path alone, i.e. the dry speech, delayed and scaled as it arrives). Both are
    shifted back by the direct path's delay, so input and target stay aligned with `speech`."""
    from scipy.signal import oaconvolve

    peak = int(np.argmax(np.abs(rir)))
    n = len(speech)
    wet = oaconvolve(speech, rir)[peak : peak + n]
    dry = oaconvolve(speech, rir[: peak + keep + 1])[peak : peak + n]
    pad = lambda x: np.pad(x, (0, n - len(x))).astype(np.float32)  # noqa: E731
    return pad(wet), pad(dry)
