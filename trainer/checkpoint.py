"""Checkpoints: what goes into them, safe loading, and restoring a run from one.

Written atomically (trainer/files.py: a kill at any moment leaves the previous checkpoint
or the new one); which files and when is the loop's checkpointer
(trainer/loop/checkpointer.py). Loading uses `weights_only=True`: tensors and plain
containers only, never code.
"""

from __future__ import annotations

import logging
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.config import RESULT_NEUTRAL

log = logging.getLogger(__name__)

FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or must not be used; the message names the file."""


def load(path: Path) -> dict[str, Any]:
    """Load a trainer checkpoint or raise CheckpointError saying what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only refuses any global it does not know: this is where a pickle with a
        # code payload ends up. There is deliberately no fallback to weights_only=False.
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain tensor checkpoint (weights_only load failed: "
            f"{str(err).splitlines()[0]})"
        ) from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CheckpointError(f"cannot read {path}: truncated or corrupt ({str(err).splitlines()[0]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt:
        raise CheckpointError(f"{path} is not a checkpoint written by this trainer (format {FORMAT})")
    return ckpt


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        # numpy's key array is stored as a tensor: weights_only loading accepts no ndarray
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, key, *rest = state["numpy"]
    np.random.set_state((name, key.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:600]
        raise CheckpointError(f"{path} does not match this model ({type(model).__name__}): {detail}") from None


def weights(model, config: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of the model alone, with the config that rebuilds it: what the tools
    that use a trained model read (trainer/inference/loading.py)."""
    return {
        "format": FORMAT,
        "config": config,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model": model.state_dict(),
    }


def snapshot(model, optimizer, schedule, scaler, state, config: dict[str, Any]) -> dict[str, Any]:
    """Everything a resumed run needs to continue exactly (`best` passes only the model)."""
    return {
        **weights(model, config),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "schedule": schedule.state_dict() if schedule is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "state": state.to_dict(),
        "rng": rng_state(),
    }


# Keys that may differ between a checkpoint and the run resuming it: the result-neutral
# ones, what only logs or measures, and `trainer.epochs`, to train a run longer (the LR
# schedule is then laid out over the new total).
RESUMABLE_DIFFERENCES = (
    *RESULT_NEUTRAL, "trainer.log_every", "trainer.checkpoint_every", "trainer.epochs",
    "trainer.warmup_steps", "trainer.target", "profile", "profiler", "optuna",
)  # fmt: skip


def config_differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    keys = sorted(set(saved) | set(current))
    out = []
    for key in keys:
        name = f"{prefix}{key}"
        if name in RESUMABLE_DIFFERENCES:  # a whole node (`profiler`) is skipped before its keys
            continue
        a, b = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{name}.")
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def restore(
    ckpt: dict[str, Any], path: Path, model, optimizer, schedule, scaler, config: dict[str, Any]
) -> dict[str, Any]:
    """Load a `snapshot` into live objects; returns the saved RunState dict.

    Refuses a checkpoint written under another config: continuing it would silently mix
    two experiments in one run directory.
    """
    diff = config_differences(ckpt.get("config") or {}, config)
    if diff:
        raise CheckpointError(
            f"{path} was written by a run with a different config ({'; '.join(diff[:5])}"
            f"{'; ...' if len(diff) > 5 else ''}). Use another run directory, or move this one away."
        )
    load_model_state(model, ckpt["model"], path)
    if ckpt["optimizer"] is None:
        raise CheckpointError(f"{path} holds weights only (a `best` checkpoint?): resume from `last`")
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        if ckpt["scaler"]:
            scaler.load_state_dict(ckpt["scaler"])
    except (ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"{path}: optimizer/schedule state does not fit this config: {err}") from None
    set_rng_state(ckpt["rng"])
    return ckpt["state"]
