"""A small DEMUCS-style waveform U-Net (Défossez et al., 2020) without the recurrent core."""

from __future__ import annotations

import math

import torch
from torch import nn

from models.layers import BatchNorm1dFloat32, BatchNorm2dFloat32, LevelNorm, drop_bias_before_batchnorm

# The layers of each layout: (conv, transposed conv, batch norm, float32 batch norm)
_LAYERS = {
    False: (nn.Conv1d, nn.ConvTranspose1d, nn.BatchNorm1d, BatchNorm1dFloat32),
    True: (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, BatchNorm2dFloat32),
}


class ConvUNet(nn.Module):
    """Strided-conv encoder, transposed-conv decoder, additive skips, GLU 1x1 mixing.

    `batchnorm=True` puts a BatchNorm after each strided conv; the conv's bias is then
    removed automatically unless `bias_before_norm=True` (kept only to measure its cost).

    Two ways of running the same network, for GPU throughput (docs/guide/performance.md):
    `channels_last=True` runs each 1-D conv as a 2-D conv of height 1 on channels-last
    tensors, so cuDNN's NHWC kernels (what it picks for bf16 on Hopper) need no layout
    transposes around every conv; `norm_float32=True` keeps BatchNorm in float32 under
    autocast (models/layers.py says why). Parameters hold the same numbers in either
    layout and a state dict of one loads into the other.
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
        channels_last: bool = False,
        norm_float32: bool = False,
    ):
        super().__init__()
        if kernel < stride:
            raise ValueError(f"model.kernel ({kernel}) must be >= model.stride ({stride})")
        self.depth, self.kernel, self.stride = depth, kernel, stride
        self.channels_last = channels_last
        conv, transposed, norm, norm32 = _LAYERS[channels_last]
        norm = norm32 if norm_float32 else norm
        k, s = ((1, kernel), (1, stride)) if channels_last else (kernel, stride)
        self.level = LevelNorm()
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        ch_in = 1
        for i in range(depth):
            ch = min(int(hidden * growth**i), max_channels)
            self.encoder.append(
                nn.Sequential(
                    conv(ch_in, ch, k, s),
                    *([norm(ch)] if batchnorm else []),
                    nn.ReLU(),
                    conv(ch, 2 * ch, 1),
                    nn.GLU(dim=1),
                )
            )
            last = i == 0
            # built in reverse: decoder[0] undoes the deepest encoder layer
            self.decoder.insert(
                0,
                nn.Sequential(
                    conv(ch, 2 * ch, 1),
                    nn.GLU(dim=1),
                    transposed(ch, ch_in, k, s),
                    *([] if last else ([norm(ch_in)] if batchnorm else []) + [nn.ReLU()]),
                ),
            )
            ch_in = ch
        if not bias_before_norm:
            drop_bias_before_batchnorm(self)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        self._register_load_state_dict_pre_hook(self._either_layout)

    def _either_layout(self, state_dict: dict, prefix: str, *args) -> None:
        """Conv kernels saved by the other layout: (out, in, k) <-> (out, in, 1, k)."""
        for name, own in self.state_dict().items():
            theirs = state_dict.get(prefix + name)
            if theirs is not None and theirs.dim() != own.dim() and theirs.numel() == own.numel():
                state_dict[prefix + name] = theirs.reshape(own.shape)

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
        h = nn.functional.pad(x, (0, self.valid_length(length) - length)).unsqueeze(1)  # (batch, 1, time)
        if self.channels_last:  # (batch, 1, 1, time), stored time-major with channels innermost
            h = h.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        skips = []
        for layer in self.encoder:
            h = layer(h)
            skips.append(h)
        for layer in self.decoder:
            h = layer(h + skips.pop()[..., : h.shape[-1]])
        return h.reshape(len(h), -1)[:, :length] * scale  # one channel (and height 1) left
