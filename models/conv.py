"""A small DEMUCS-style waveform U-Net (Défossez et al., 2020) without the recurrent core."""

from __future__ import annotations

import math

import torch
from torch import nn

from models.layers import LevelNorm, drop_bias_before_batchnorm


class ConvUNet(nn.Module):
    """Strided-conv encoder, transposed-conv decoder, additive skips, GLU 1x1 mixing.

    `batchnorm=True` puts a BatchNorm after each strided conv; the conv's bias is then
    removed automatically unless `bias_before_norm=True` (kept only to measure its cost).
    """

    def __init__(
        self,
        hidden: int = 32,
        depth: int = 4,
        kernel: int = 8,
        stride: int = 4,
        growth: float = 2.0,
        max_channels: int = 512,
        batchnorm: bool = True,
        bias_before_norm: bool = False,
    ):
        super().__init__()
        if kernel < stride:
            raise ValueError(f"model.kernel ({kernel}) must be >= model.stride ({stride})")
        self.depth, self.kernel, self.stride = depth, kernel, stride
        self.level = LevelNorm()
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        ch_in = 1
        for i in range(depth):
            ch = min(int(hidden * growth**i), max_channels)
            self.encoder.append(
                nn.Sequential(
                    nn.Conv1d(ch_in, ch, kernel, stride),
                    *([nn.BatchNorm1d(ch)] if batchnorm else []),
                    nn.ReLU(),
                    nn.Conv1d(ch, 2 * ch, 1),
                    nn.GLU(dim=1),
                )
            )
            last = i == 0
            # built in reverse: decoder[0] undoes the deepest encoder layer
            self.decoder.insert(
                0,
                nn.Sequential(
                    nn.Conv1d(ch, 2 * ch, 1),
                    nn.GLU(dim=1),
                    nn.ConvTranspose1d(ch, ch_in, kernel, stride),
                    *([] if last else ([nn.BatchNorm1d(ch_in)] if batchnorm else []) + [nn.ReLU()]),
                ),
            )
            ch_in = ch
        if not bias_before_norm:
            drop_bias_before_batchnorm(self)

    def valid_length(self, length: int) -> int:
        """Smallest length >= `length` that the strided stack maps back exactly."""
        for _ in range(self.depth):
            length = max(1, math.ceil((length - self.kernel) / self.stride) + 1)
        for _ in range(self.depth):
            length = (length - 1) * self.stride + self.kernel
        return length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        x, scale = self.level(x)
        h = nn.functional.pad(x, (0, self.valid_length(length) - length)).unsqueeze(1)
        skips = []
        for layer in self.encoder:
            h = layer(h)
            skips.append(h)
        for layer in self.decoder:
            h = layer(h + skips.pop()[..., : h.shape[-1]])
        return h[:, 0, :length] * scale
