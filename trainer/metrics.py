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

__all__ = ["si_sdr", "pesq", "stoi"]


def _at(x: torch.Tensor | np.ndarray, sr: int, target: int) -> np.ndarray:
    x = torch.as_tensor(x, dtype=torch.float32)
    if sr != target:
        x = AF.resample(x, sr, target)
    return x.numpy().astype(np.float64)


def pesq(reference, degraded, sample_rate: int, mode: str = "wb") -> float:
    """PESQ MOS-LQO; NaN when the reference holds no speech PESQ can find."""
    from pesq import NoUtterancesError, pesq as _pesq

    rate = 16000 if mode == "wb" else 8000
    try:
        return float(_pesq(rate, _at(reference, sample_rate, rate), _at(degraded, sample_rate, rate), mode))
    except NoUtterancesError:
        return math.nan


def stoi(reference, degraded, sample_rate: int, extended: bool = False) -> float:
    from pystoi import stoi as _stoi

    return float(_stoi(_at(reference, sample_rate, sample_rate), _at(degraded, sample_rate, sample_rate), sample_rate, extended=extended))
