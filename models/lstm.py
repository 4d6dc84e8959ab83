"""An STFT-domain mask estimator on an LSTM."""

from __future__ import annotations

import torch
from torch import nn

from models.layers import LevelNorm


class LSTMMask(nn.Module):
    """Log-magnitude frames -> LSTM -> a mask on the noisy complex STFT -> iSTFT.

    `mask="magnitude"`: a [0, 1] gain per bin (keeps the noisy phase).
    `mask="complex"`: a bounded complex ratio mask, |M| < 1 via tanh as in DCCRN, which can
    also correct the phase.
    `mask="residual"`: the complex mask plus an additive complex spectrum, so the model can
    create energy where the input has none (bandwidth extension: a mask cannot).

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
        mask: str = "magnitude",
    ):
        super().__init__()
        if mask not in ("magnitude", "complex", "residual"):
            raise ValueError(f"model.mask must be 'magnitude', 'complex' or 'residual', got {mask!r}")
        self.n_fft, self.hop, self.mask_kind = n_fft, hop, mask
        bins = n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.level = LevelNorm()
        self.norm = nn.LayerNorm(bins)  # per-frame feature standardisation: faster, steadier start
        self.lstm = nn.LSTM(bins, hidden, layers, batch_first=True, dropout=dropout, bidirectional=bidirectional)
        self.mask = nn.Linear(hidden * (2 if bidirectional else 1), bins * {"magnitude": 1, "complex": 2, "residual": 4}[mask])

    def _recur(self, feats: torch.Tensor):
        # oneDNN has no float16 LSTM on CPU ("could not create a primitive descriptor"):
        # under CPU fp16 autocast the recurrence runs in float32 instead.
        if feats.device.type == "cpu" and torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.float16:
            with torch.autocast("cpu", enabled=False):
                return self.lstm(feats.float())
        return self.lstm(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        x, scale = self.level(x.float())
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, return_complex=True)  # (B, F, N)
        feats = torch.log1p(spec.abs()).transpose(1, 2)  # (B, N, F)
        h, _ = self._recur(self.norm(feats))
        m = self.mask(h).float().transpose(1, 2)  # (B, F or 2F, N)
        if self.mask_kind == "magnitude":
            spec = spec * torch.sigmoid(m)
        else:
            m, extra = (m, None) if self.mask_kind == "complex" else m.chunk(2, dim=1)
            m = torch.complex(*m.chunk(2, dim=1))
            size = m.abs()
            spec = spec * m * (torch.tanh(size) / (size + 1e-8))
            if extra is not None:
                spec = spec + torch.complex(*extra.chunk(2, dim=1))
        y = torch.istft(spec, self.n_fft, self.hop, window=self.window, length=length)
        return y * scale
