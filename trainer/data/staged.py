"""Training draws in two stages, so that the arithmetic can run on the training device.

*draw* runs in the loader (a worker or the main process). For a batch of draw keys it
makes every random choice and reads what the batch needs: which clips and where to crop
them, SNRs, levels, augmentation plans. Each example's share is a pure function of
`(seed, key)`. *finish* turns such a batch of ingredients into training pairs with
batched tensor ops (cropping, mixing, augmentation) on whatever device the batch is on.

With `trainer.data_on_device=false` (the default) the loader runs both stages and ships
finished pairs, as any PyTorch loader does. With `true` it ships the ingredients and the
engine finishes each batch on the device, right after the copy: on a fast GPU the
per-sample work would otherwise starve the step (docs/guide/performance.md). Both ways run the
same code on the same draws, so their batches agree within float rounding, whatever the
device and the number of workers (tests/test_data_on_device.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, default_collate

from trainer.data.keyed import Example

Batch = dict[str, torch.Tensor]


def batched_path(device: torch.device) -> bool:
    """How per-row work (a crop, a transform of some rows) runs on `device`: as whole-batch
    ops on an accelerator, where a loop would launch a kernel per row and a data-dependent
    subset would make the host wait; row by row on a CPU, where each row costs loader time.
    The two give the same values (tests force the batched path on a CPU)."""
    return device.type != "cpu"


def unchanged(batch: Batch) -> Batch:
    return batch


@dataclass(frozen=True)
class Stages:
    """A training set as `draw(keys) -> ingredients` and `finish(ingredients) -> batch`;
    `size` is an epoch's length (keyed.UNBOUNDED for a procedural source)."""

    draw: Callable[[list[int]], Batch]
    finish: Callable[[Batch], Batch]
    size: int

    @classmethod
    def of(cls, dataset: Dataset) -> Stages:
        """A dataset of finished examples as stages: draw fetches and stacks, finish keeps."""
        return cls(_Stacked(dataset), unchanged, len(dataset))  # type: ignore[arg-type]


class _Stacked:
    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __call__(self, keys: list[int]) -> Batch:
        fetch = getattr(self.dataset, "__getitems__", None)
        return default_collate(fetch(keys) if fetch is not None else [self.dataset[k] for k in keys])


def unbatch(batch: Batch) -> list[Example]:
    n = len(next(iter(batch.values())))
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def concat(batches: list[Batch]) -> Batch:
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


class Staged(Dataset):
    """The training set the loader reads: finished examples (`on_device=False`), or one
    batch of ingredients per fetch (`on_device=True`; `collate` passes it through)."""

    def __init__(self, stages: Stages, on_device: bool = False):
        self.stages, self.on_device = stages, on_device

    def __len__(self) -> int:
        return self.stages.size

    def __getitems__(self, keys: list[int]) -> list[Example] | Batch:
        batch = self.stages.draw([int(k) for k in keys])
        return batch if self.on_device else unbatch(self.stages.finish(batch))

    def __getitem__(self, key: int) -> Example:
        batch = self.stages.draw([int(key)])
        return unbatch(batch if self.on_device else self.stages.finish(batch))[0]


def collate(items: list[Example] | Batch) -> Batch:
    """The train loader's collate: a batch of ingredients is already one."""
    return items if isinstance(items, dict) else default_collate(items)


def training_set(source, augment, on_device: bool) -> tuple[Dataset, Callable[[Batch], Batch]]:
    """The loader's training set and what the engine does to each batch on the device:
    the source's stages (`train_stages()` where the source has them; its finished examples
    otherwise), with `augment` after them when it is active."""
    stages = source.train_stages() if hasattr(source, "train_stages") else None
    if augment is not None and augment.active:
        stages = augment.around(stages or Stages.of(source.train()))
    if stages is None:
        return source.train(), unchanged  # nothing to finish: examples come ready
    return Staged(stages, on_device), stages.finish if on_device else unchanged
