"""An STFT-domain mask estimator on an LSTM."""

from __future__ import annotations

import torch
from torch import nn

from models.layers import LevelNorm


class LSTMMask(nn.Module):
    """Log-magnitude frames -> LSTM -> a [0, 1] mask on the noisy complex STFT -> iSTFT.

    The STFT runs in float32 even under autocast: half-precision FFTs lose the low-level
    bins that a mask model has to attenuate.
    """

    def __init__(
        self,
        n_fft: int = 512,
        hop: int = 128,
        hidden: int = 256,
        layers: int = 2,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        bins = n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.level = LevelNorm()
        self.lstm = nn.LSTM(bins, hidden, layers, batch_first=True, dropout=dropout, bidirectional=bidirectional)
        self.mask = nn.Linear(hidden * (2 if bidirectional else 1), bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        x, scale = self.level(x.float())
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, return_complex=True)  # (B, F, N)
        feats = torch.log1p(spec.abs()).transpose(1, 2)  # (B, N, F)
        h, _ = self.lstm(feats)
        mask = torch.sigmoid(self.mask(h)).transpose(1, 2).float()
        y = torch.istft(spec * mask, self.n_fft, self.hop, window=self.window, length=length)
        return y * scale
