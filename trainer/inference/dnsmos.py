"""Reference-free quality: DNSMOS P.835 (Reddy et al., ICASSP 2022) through `speechmos`.

Real recordings have no clean reference, so PESQ and SI-SDR cannot score them. DNSMOS
predicts the ITU-T P.835 ratings a listening panel would give: SIG (speech distortion),
BAK (background noise intrusiveness), OVRL (overall), each on 1-5. The model files ship
inside the `speechmos` package (Microsoft, MIT licence: the DNS-Challenge's own models,
run with onnxruntime); nothing is downloaded. Install with `pip install -e '.[dnsmos]'`.

`speechmos` scores 16 kHz mono audio in [-1, 1], in 9.01 s windows with a 1 s hop (a
shorter clip is repeated to one window). Here any rate is resampled to 16 kHz and samples
outside [-1, 1] are clipped first (an enhancer's output can overshoot slightly). The first
call of a process compiles librosa's numba kernels (about 20 s on 2 cores); later calls
take about 0.1 s per second of audio.
"""

from __future__ import annotations

import numpy as np
import torch
import torchaudio.functional as AF

RATE = 16000
KEYS = ("sig", "bak", "ovrl")
INSTALL = "DNSMOS needs the speechmos package and its runtime: pip install -e '.[dnsmos]'"


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import speechmos  # noqa: F401
    except ImportError:
        return False
    return True


def score(audio: torch.Tensor | np.ndarray, sample_rate: int) -> dict[str, float]:
    """{"sig", "bak", "ovrl"} of a mono signal."""
    try:
        from speechmos import dnsmos
    except ImportError as err:
        raise RuntimeError(f"{INSTALL} ({err})") from None
    x = torch.as_tensor(audio, dtype=torch.float32).flatten()
    if sample_rate != RATE:
        x = AF.resample(x, sample_rate, RATE)
    result = dnsmos.run(np.clip(x.numpy(), -1.0, 1.0).astype(np.float32), RATE)
    return {key: float(result[f"{key}_mos"]) for key in KEYS}
