"""Performance switches, applied in one place and in one order.

1. Process-global flags first (determinism, float32 matmul precision, cuDNN TF32 and
   benchmark). Every one is set explicitly on every run: jobs of a multirun share a
   process, and a flag left over from the previous job would silently change this one.
2. Model and loss move to the device: compiled graphs specialise on device.
3. Autocast dtype and the gradient scaler (fp16 only; bf16 has float32's range).
4. torch.compile last, so it traces the model exactly as it will run.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Precision:
    device_type: str
    dtype: torch.dtype | None  # None: no autocast
    scaler: torch.amp.GradScaler  # disabled (a pass-through) unless fp16

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={name}: CUDA is not available on this machine")
    return device


def setup(model: nn.Module, loss: nn.Module, precision, compile_cfg, device: torch.device, deterministic: bool):
    """Returns (model to train, raw model for checkpoints, loss, Precision)."""
    # 1. global flags
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.deterministic = deterministic
    torch.set_float32_matmul_precision(precision.matmul.value)
    torch.backends.cudnn.allow_tf32 = precision.cudnn_tf32
    torch.backends.cudnn.benchmark = precision.cudnn_benchmark and not deterministic
    # 2. placement
    model = model.to(device)
    loss = loss.to(device)
    # 3. precision
    dtype = _DTYPES[precision.dtype.value]
    if dtype is torch.float16 and device.type == "cpu":
        log.warning("float16 autocast on CPU is slow and rarely useful; bfloat16 is the CPU choice")
    prec = Precision(device.type, dtype, torch.amp.GradScaler(device.type, enabled=precision.grad_scaler))
    # 4. compile
    trained = model
    if compile_cfg.enabled:
        torch._dynamo.reset()  # forget graphs compiled by an earlier job in this process
        trained = torch.compile(
            model, mode=compile_cfg.mode.value, fullgraph=compile_cfg.fullgraph, dynamic=compile_cfg.dynamic
        )
    return trained, model, loss, prec
