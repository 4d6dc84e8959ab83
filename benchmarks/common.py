"""What more than one benchmark uses: the config, an untrained checkpoint, the loop on
batches held in memory, a folder corpus on disk, and the machine's name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

from trainer.build import build_model
from trainer.checkpoint import weights
from trainer.data.loader import EpochSampler
from trainer.identity import job_config
from trainer.launch.startup import compose
from trainer.loop.engine import train
from trainer.loop.parts import Feed
from trainer.provenance import cpu

ROOT = Path(__file__).resolve().parents[1]
# the CPU's kernels capped at an instruction set: oneDNN, ATen and MKL as on a CPU without AVX-512
CAPS = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # the CPU flags that decide the kernels


def machine() -> str:
    """'<model name>, <n> cores, flags: avx2 avx512f ...': the CPU and the flags in FLAGS it has."""
    info = cpu()
    have = [f for f in FLAGS if f in info["flags"].split()]
    return f"{info['model']}, {info['count']} cores, flags: {' '.join(have) or 'none of ' + ' '.join(FLAGS)}"


def untrained_checkpoint(folder: Path, overrides: tuple[str, ...] = ()) -> Path:
    """`folder/model.pt`: the default job's model (or `overrides`' model), untrained; the
    tools that use a model run as fast on random weights."""
    cfg = compose(list(overrides))
    path = folder / "model.pt"
    torch.save(weights(build_model(cfg.model), job_config(cfg)), path)
    return path


class InMemory(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i % len(self.items)]  # a draw key (trainer.data.loader)


def in_memory_feed(feed: Feed, dataset, batch_size: int, steps: int, valid_batch) -> Feed:
    """`feed` with the training batches held in memory (one epoch of `steps`) and one
    validation batch: the blocks time the loop, not the data."""
    sampler = EpochSampler(len(dataset), steps * batch_size, 0, infinite=False)
    return dataclasses.replace(
        feed,
        sampler=sampler,
        train_loader=DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True),
        steps_per_epoch=steps,
        valid_loader=[valid_batch],
    )


def engine_block(parts, cfg, state, checkpointer, tmp: Path) -> None:
    """One block of the real loop (`trainer.loop.engine.train`), its history under `tmp`."""
    train(parts, cfg.trainer, state, checkpointer=checkpointer, history=tmp / "history.json")


def write_corpus(root: Path, files: int, resampled_every: int = 5) -> None:
    """`files` speech files of 2-4 s under root/speech (16 kHz; one in `resampled_every` at
    48 kHz), as many noise files under root/noise, and the matching clean/noisy pairs."""
    rng = np.random.default_rng(0)
    for i in range(files):
        rate = 48000 if resampled_every and i % resampled_every == 0 else 16000
        seconds = rng.uniform(2, 4)
        t = np.arange(int(seconds * rate)) / rate
        speech = 0.3 * np.sin(2 * np.pi * (150 + i % 200) * t * (1 + 0.1 * np.sin(3 * t))).astype(np.float32)
        noise = (0.1 * rng.standard_normal(len(t))).astype(np.float32)
        for folder, data in (("speech", speech), ("noise", noise), ("clean", speech), ("noisy", speech + noise)):
            path = root / folder / f"spk{i % 20:02d}" / f"f{i:05d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, data, rate, subtype="PCM_16")
