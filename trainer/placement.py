"""Where and how the network runs: the performance switches, placement, precision, data
parallelism and compilation, applied in one place and in one order.

1. Process-global flags first (determinism, float32 matmul precision, cuDNN TF32 and
   benchmark). Every one is set explicitly on every run: jobs of a multirun share a
   process, and a flag left over from the previous job would silently change this one.
2. Model and loss move to the device: compiled graphs specialise on device.
3. Autocast dtype and the gradient scaler (fp16 only; bf16 has float32's range).
4. DistributedDataParallel under torchrun (trainer/distributed.py).
5. torch.compile last, so it traces the model exactly as it will run (DDP included: Dynamo
   then splits the graph at DDP's gradient buckets, keeping communication overlapped).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass, field

import torch
from torch import nn

from trainer import distributed

log = logging.getLogger(__name__)

_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Precision:
    device_type: str
    dtype: torch.dtype | None  # None: no autocast
    scaler: torch.amp.GradScaler  # disabled (a pass-through) unless fp16
    # ops that run in another dtype than `dtype` on this machine, and why (summary.json)
    paths: dict[str, str] = field(default_factory=dict)

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


@dataclass
class Network:
    """One network in its three forms: `trained` is what the loop calls (compiled and/or
    DDP-wrapped), `raw` the plain module whose parameters checkpoints and validation use,
    `ddp` the DistributedDataParallel wrapper (for no_sync) or None."""

    trained: nn.Module
    raw: nn.Module
    ddp: nn.Module | None = None


def setup(
    model: nn.Module, loss: nn.Module, precision, compile_cfg, device: torch.device, deterministic: bool, dist=None
) -> tuple[Network, nn.Module, Precision]:
    """The network placed, wrapped and compiled; the loss on its device; the Precision."""
    # 1. global flags. use_deterministic_algorithms imports torch._inductor (1.5 s of
    # start-up), so it is only called when the setting has to change.
    if torch.are_deterministic_algorithms_enabled() != deterministic:
        torch.use_deterministic_algorithms(deterministic)
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
    if dtype is not None:
        # Modules that run part of their work in another dtype say so (models/lstm.py), here
        # at start (a CPU probe may run, once per process) rather than at the first step.
        for module in model.modules():
            if hasattr(module, "precision_path"):
                key, path = module.precision_path(device.type, dtype)
                prec.paths[key] = path
                log.info("precision path of %s: %s", key, path)
    # 4. data parallel
    ddp = distributed.wrap(model, dist, device) if dist is not None and dist.enabled else None
    trained = ddp if ddp is not None else model
    # 5. compile
    if compile_cfg.enabled:
        isolate_compile_cache()
        torch._dynamo.reset()  # forget graphs compiled by an earlier job in this process
        trained = torch.compile(
            trained, mode=compile_cfg.mode.value, fullgraph=compile_cfg.fullgraph, dynamic=compile_cfg.dynamic
        )
    return Network(trained, model, ddp), loss, prec


# Environment variables that change which CPU kernels ATen, oneDNN and MKL run but that
# inductor's on-disk cache does not key on (torch 2.14).
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def isolate_compile_cache() -> None:
    """Give a process whose CPU kernels are capped (ISA_CAPS) an inductor cache of its own.

    Inductor's cache key misses these variables: a graph compiled under
    ATEN_CPU_CAPABILITY=avx2 and then loaded by an uncapped process corrupted the heap
    (glibc "free(): invalid pointer", Xeon with AMX), and the reverse trained to NaN (Zen 4).
    An explicit TORCHINDUCTOR_CACHE_DIR is the user's choice and is left alone.
    """
    caps = {k: os.environ[k] for k in ISA_CAPS if os.environ.get(k)}
    if not caps or "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        return
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    tag = hashlib.sha1(repr(sorted(caps.items())).encode()).hexdigest()[:10]
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = f"{default_cache_dir()}-isa-{tag}"
    log.info("CPU kernels capped (%s): inductor cache %s", caps, os.environ["TORCHINDUCTOR_CACHE_DIR"])


class ShapeGuard:
    """Warns once when batch shapes change between steps while CUDA graphs are in use.

    A CUDA graph replays fixed shapes: each new shape is another capture (time, memory)
    and a changing shape every step makes `reduce-overhead` slower than eager. The fixes
    are fixed-length crops and `drop_last`, which the trainer's loaders use.
    """

    def __init__(self, active: bool):
        self.active, self.first, self.warned = active, None, False

    def check(self, batch: dict[str, torch.Tensor]) -> None:
        if not self.active or self.warned:
            return
        shapes = {k: tuple(v.shape) for k, v in batch.items()}
        if self.first is None:
            self.first = shapes
        elif shapes != self.first:
            log.warning(
                "batch shapes vary between steps (%s, then %s): CUDA graphs re-record for every new shape; "
                "use a fixed segment length and drop_last",
                self.first,
                shapes,
            )
            self.warned = True


def uses_cuda_graphs(compile_cfg) -> bool:
    return compile_cfg.enabled and compile_cfg.mode.value in ("reduce-overhead", "max-autotune")
