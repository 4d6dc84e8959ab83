"""Resumable, seed-determined batching.

The sampler decides which examples make up step `k` of epoch `e` from `(seed, e)` alone, so
a run resumed at any step draws the same batches as an uninterrupted one, with any number
of workers.

Train datasets are indexed by a *draw key*, unique to one draw of one example: the global
example number for an unbounded dataset, `epoch * len(dataset) + i` for a finite one. A
finite dataset reads example `key % len(dataset)` and seeds its randomness (crop offset,
mixing, augmentation) from the key, so each epoch differs yet every draw is reproducible.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochSampler(Sampler[int]):
    """Example indices for one epoch, starting at a given position.

    Unbounded (procedural) datasets get consecutive global indices, so no example repeats;
    finite ones get seeded permutations, chained when an epoch is longer than the dataset,
    as draw keys (see the module docstring).
    """

    def __init__(self, dataset_len: int, per_epoch: int, seed: int, infinite: bool):
        self.dataset_len, self.per_epoch, self.seed, self.infinite = dataset_len, per_epoch, seed, infinite
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.per_epoch - self.start

    def __iter__(self):
        if self.infinite:
            base = self.epoch * self.per_epoch
            yield from range(base + self.start, base + self.per_epoch)
            return
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        chains = -(-self.per_epoch // self.dataset_len)
        order = torch.cat([torch.randperm(self.dataset_len, generator=gen) for _ in range(chains)])
        n = self.dataset_len
        # (epoch, chain) numbers each pass over the dataset, so no draw key ever repeats
        for j in range(self.start, self.per_epoch):
            yield ((self.epoch * chains + j // n) * n) + int(order[j])


def train_loader(
    dataset: Dataset, infinite: bool, batch_size: int, per_epoch_batches: int | None, seed: int, num_workers: int, pin: bool
) -> tuple[DataLoader, EpochSampler]:
    """A loader whose sampler is moved with `sampler.set_position(epoch, start_example)`.

    Workers persist across epochs (each keeps its in-memory corpus); drop_last keeps every
    batch the same shape, which CUDA graphs and cudnn.benchmark both need.
    """
    if per_epoch_batches is None:
        if infinite:
            raise ValueError("trainer.steps_per_epoch must be set for an unbounded (synthetic) dataset")
        per_epoch_batches = len(dataset) // batch_size
        if per_epoch_batches < 1:
            raise ValueError(f"dataset has {len(dataset)} examples, fewer than one batch of {batch_size}")
    sampler = EpochSampler(len(dataset), per_epoch_batches * batch_size, seed, infinite)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin,
        # Its own generator: each new iterator draws a worker base seed from it, and from the
        # global RNG without one, which would shift dropout's stream after a mid-epoch
        # resume (found by tests/test_reliability.py). Examples are keyed, not seeded by it.
        generator=torch.Generator().manual_seed(seed),
    )
    return loader, sampler


def valid_loader(dataset: Dataset, batch_size: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
