"""Mixing speech and noise at an SNR and a level: the one formula every dataset uses."""

from __future__ import annotations

import numpy as np


def _rms(x: np.ndarray) -> np.ndarray:
    # a row-wise dot product: no squared temporary (each one is a fresh batch-sized buffer)
    return np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64) / x.shape[1])[:, None]


def mix(
    clean: np.ndarray, noise: np.ndarray | None, snr_db: np.ndarray, level_db: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) float32 rows for a batch: noise scaled to `snr_db` by RMS and added,
    then one gain on both (the pair stays aligned in level) so that the clean level is
    `level_db` dBFS, lowered where the mixture would pass 0.99 (never clipped).

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
    clean *= gain
    return noisy, clean
