"""The one checkpoint loader of the tools that use a trained model."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from trainer.build import build_model, build_task
from trainer.checkpoint import CheckpointError, load, load_model_state
from trainer.tasks import AudioTask


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


def load_audio_model(path: Path, device: torch.device, tool: str) -> tuple[nn.Module, DictConfig, AudioTask]:
    """`load_model` for the tools that take audio to audio (denoise, superres), with the
    run's task; a transducer checkpoint (audio to tokens) is refused, naming `tool`."""
    model, cfg = load_model(path, device)
    task = build_task(cfg.task)
    if not isinstance(task, AudioTask):
        raise CheckpointError(
            f"{path}: a transducer ({type(task).__name__}) checkpoint maps audio to tokens, not to audio; "
            f"{tool} takes denoise and superres models"
        )
    return model, cfg, task
