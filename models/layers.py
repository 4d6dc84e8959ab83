"""Small pieces shared by the models."""

from __future__ import annotations

import torch
from torch import nn

_CONVS = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def drop_bias_before_batchnorm(module: nn.Module) -> int:
    """Remove the bias of every conv that a BatchNorm directly follows in an `nn.Sequential`.

    BatchNorm subtracts the per-channel mean, so such a bias is cancelled exactly: it costs
    memory, an extra kernel and optimizer state for nothing. Returns how many were removed.
    """
    removed = 0
    for seq in module.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        layers = list(seq)
        for conv, nxt in zip(layers, layers[1:]):
            if isinstance(conv, _CONVS) and isinstance(nxt, _NORMS) and conv.bias is not None:
                conv.register_parameter("bias", None)
                removed += 1
    return removed


class _Float32:
    """BatchNorm in float32 under autocast. With bf16 inputs PyTorch's CUDA batch norm leaves
    cuDNN for ATen's generic kernels, which took 40% of the H200's bf16 step against 25%
    for cuDNN's in fp32 (docs/measurements/gpu-h200-2026-11-26/profile-top-ops.txt). Statistics in
    float32 are also what apex's `keep_batchnorm_fp32` kept. The output returns to the
    input's dtype, so the layers after it stay in bf16."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float()).to(x.dtype)  # type: ignore[misc]


class BatchNorm1dFloat32(_Float32, nn.BatchNorm1d):
    pass


class BatchNorm2dFloat32(_Float32, nn.BatchNorm2d):
    pass


class LevelNorm(nn.Module):
    """Divide each example by its RMS and hand back the scale to undo it at the output.

    Real recordings differ in level by tens of dB; normalising makes a model trained on one
    level range work on another (the same trick as DEMUCS's input standardisation).
    """

    def __init__(self, floor: float = 1e-5):
        super().__init__()
        self.floor = floor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = x.pow(2).mean(dim=-1, keepdim=True).sqrt() + self.floor
        return x / scale, scale
