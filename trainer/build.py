"""Builds the run's components from their config groups: the only `instantiate` site.

Each builder takes its own group (`cfg.optim`, not `cfg`); runtime objects such as the
model's parameters or the number of steps are passed here, at the call site.
"""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torch.optim import Optimizer

from trainer.config import ConfigError
from trainer.data.source import DataSource
from trainer.schedules import Schedule
from trainer.tasks import Task


def build_task(cfg: DictConfig) -> Task:
    return instantiate(cfg)


def build_data(cfg: DictConfig) -> DataSource:
    """A `DataSource` (trainer/data/source.py): `train()`, `valid()`, `sample_rate`, `infinite`."""
    source = instantiate(cfg)
    if not isinstance(source, DataSource):
        raise ConfigError(
            f"data._target_={cfg.get('_target_')}: a {type(source).__name__} is not a data source "
            "(it needs train(), valid(), sample_rate and infinite; trainer/data/source.py)"
        )
    return source


def build_augment(cfg: DictConfig):
    """An `Augment` (trainer/data/augment.py), applied to training draws only."""
    return instantiate(cfg)


def build_model(cfg: DictConfig) -> nn.Module:
    return instantiate(cfg)


def build_loss(cfg: DictConfig) -> nn.Module:
    return instantiate(cfg)


def build_optimizer(cfg: DictConfig, model: nn.Module) -> Optimizer:
    """Weight decay on weight matrices and kernels only: decaying biases and norm gains
    pulls them towards zero for no regularisation benefit (the nanoGPT/timm convention)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay}] + ([{"params": no_decay, "weight_decay": 0.0}] if no_decay else [])
    return instantiate(cfg)(groups)


def build_schedule(cfg: DictConfig, optimizer: Optimizer, total_steps: int, mode: str) -> Schedule:
    return instantiate(cfg)(optimizer, total_steps=total_steps, mode=mode)
