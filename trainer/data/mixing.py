"""Mixing speech and noise at an SNR and a level: the one formula every dataset uses."""

from __future__ import annotations

import numpy as np


def _rms(x: np.ndarray) -> np.ndarray:
    # a row-wise dot product: no squared temporary (each one is a fresh batch-sized buffer)
    return np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64) / x.shape[1])[:, None]


def mix(
    clean: np.ndarray,
    noise: np.ndarray | None,
    snr_db: np.ndarray,
    level_db: np.ndarray,
    target: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) float32 rows for a batch: noise scaled to `snr_db` by RMS and added,
    then one gain on both (the pair stays aligned in level) so that the clean level is
    `level_db` dBFS, lowered where the mixture would pass 0.99 (never clipped).

    With `target` (reverberant speech in `clean`, its direct-path or early-reverb version in
    `target`), the SNR and level are those of the speech as heard, `clean`, and the second
    row returned is `target` under the same gain.

    Works in place on float32 inputs (`noise` becomes the mixture): a batch is a few MB, and
    every fresh buffer of that size costs page faults, which is what a loader waits for.
    """
    clean = np.asarray(clean, dtype=np.float32)
    clean_rms = _rms(clean) + 1e-8
    if noise is None:
        noisy = clean.copy()
    else:
        noisy = np.asarray(noise, dtype=np.float32)
        scale = clean_rms / (_rms(noisy) + 1e-8) * 10 ** (-np.asarray(snr_db, np.float64)[:, None] / 20)
        noisy *= scale.astype(np.float32)
        noisy += clean
    peak = np.maximum(noisy.max(axis=1, keepdims=True), -noisy.min(axis=1, keepdims=True)) + 1e-12
    gain = np.minimum(10 ** (np.asarray(level_db, np.float64)[:, None] / 20) / clean_rms, 0.99 / peak).astype(
        np.float32
    )
    noisy *= gain
    out = clean if target is None else np.asarray(target, dtype=np.float32)
    out *= gain
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
