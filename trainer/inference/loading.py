"""The one checkpoint loader of the tools that use a trained model."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from trainer.build import build_model
from trainer.checkpoint import load, load_model_state


def load_model(path: Path, device: torch.device) -> tuple[nn.Module, DictConfig]:
    """Rebuild the model a checkpoint was trained with, load its weights, and return it in
    eval mode on `device` with the run's config. `path`: a checkpoint, or a run folder
    (its `checkpoints/best.pt`)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "best.pt"
    ckpt = load(path)
    cfg = OmegaConf.create(ckpt["config"])
    model = build_model(cfg.model)
    load_model_state(model, ckpt["model"], path)
    return model.to(device).eval(), cfg
