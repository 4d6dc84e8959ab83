"""What the loop touches, in a few named bundles built by keyword (`trainer.run.assemble`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from trainer.data.loader import EpochSampler
from trainer.data.staged import Batch, unchanged
from trainer.distributed import Dist
from trainer.loop.diagnostics import GradientDiagnostics
from trainer.placement import Network, Precision, ShapeGuard
from trainer.schedules import Schedule
from trainer.tasks import Task


@dataclass(kw_only=True)
class Optimization:
    """What turns a batch's output into an update."""

    loss: nn.Module
    optimizer: Optimizer
    schedule: Schedule
    precision: Precision  # autocast dtype and the fp16 gradient scaler


@dataclass(kw_only=True)
class Feed:
    """The batches: training (resumable mid-epoch through the sampler) and validation."""

    train_loader: DataLoader
    sampler: EpochSampler
    valid_loader: DataLoader
    steps_per_epoch: int
    shape_guard: ShapeGuard  # warns when shapes vary under CUDA graphs
    # what each training batch needs on the device before the step (trainer/data/staged.py):
    # mixing and augmentation with trainer.data_on_device, nothing otherwise
    finish: Callable[[Batch], Batch] = unchanged


@dataclass(kw_only=True)
class Placement:
    """Where the run executes."""

    device: torch.device
    dist: Dist = field(default_factory=Dist)  # torchrun's ranks (a world of one otherwise)
    cuda_graphs: bool = False  # compiled with CUDA graphs (reduce-overhead, max-autotune) on a GPU


@dataclass(kw_only=True)
class Parts:
    network: Network  # trained (compiled / DDP), raw (checkpoints, validation) and ddp forms
    optim: Optimization
    feed: Feed
    place: Placement
    task: Task
    config: dict  # the resolved job config, stored in checkpoints
    diagnostics: GradientDiagnostics | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # what building took (start-up, datasets, model)
