"""Resumable, seed-determined batching.

The sampler decides which examples make up step `k` of epoch `e` from `(seed, e)` alone, so
a run resumed at any step draws the same batches as an uninterrupted one, with any number
of workers.

Train datasets are indexed by a *draw key*, unique to one draw of one example: the global
example number for an unbounded dataset, `epoch * len(dataset) + i` for a finite one. A
finite dataset reads example `key % len(dataset)` and seeds its randomness (crop offset,
mixing, augmentation) from the key, so each epoch differs yet every draw is reproducible.

Data-parallel (torchrun): every rank computes the same epoch order and keeps its slice of
each global micro-batch, so the ranks' batches together are exactly the batch a single
process would draw. This is DistributedSampler's job (a shuffle per epoch, a disjoint share
per rank), done so that a resume mid-epoch and the draw keys still work.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from trainer.data.staged import collate

log = logging.getLogger("trainer")


class EpochSampler(Sampler[int]):
    """Example indices for one epoch, starting at a given position.

    Unbounded (procedural) datasets get consecutive global indices, so no example repeats;
    finite ones get seeded permutations, chained when an epoch is longer than the dataset,
    as draw keys (see the module docstring). With `world` ranks, rank `rank` yields the
    rank-th `batch // world` of every `batch` (a global micro-batch); positions count
    global examples.
    """

    def __init__(
        self, dataset_len: int, per_epoch: int, seed: int, infinite: bool, batch: int = 1, rank: int = 0, world: int = 1
    ):
        self.dataset_len, self.per_epoch, self.seed, self.infinite = dataset_len, per_epoch, seed, infinite
        self.batch, self.rank, self.world = batch, rank, world
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return (self.per_epoch - self.start) // self.world

    def __iter__(self):
        if self.world == 1:
            yield from self._keys()
            return
        share = self.batch // self.world
        for j, key in enumerate(self._keys(), start=self.start):
            if (j % self.batch) // share == self.rank:
                yield key

    def _keys(self):
        """The draw keys of the whole epoch from `start`, as one process would take them."""
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
    dataset: Dataset,
    infinite: bool,
    batch_size: int,
    per_epoch_batches: int | None,
    seed: int,
    num_workers: int,
    pin: bool,
    rank: int = 0,
    world: int = 1,
) -> tuple[DataLoader, EpochSampler]:
    """A loader whose sampler is moved with `sampler.set_position(epoch, start_example)`.
    `batch_size` is the global batch; each of `world` ranks loads `batch_size // world`.

    Workers persist across epochs (each keeps its in-memory corpus); drop_last keeps every
    batch the same shape, which CUDA graphs and cudnn.benchmark both need.
    """
    if batch_size % world:
        raise ValueError(
            f"trainer.batch_size={batch_size} is the global batch and must divide evenly among the {world} processes"
        )
    if per_epoch_batches is None:
        if infinite:
            raise ValueError("trainer.steps_per_epoch must be set for an unbounded (synthetic) dataset")
        per_epoch_batches = len(dataset) // batch_size
        if per_epoch_batches < 1:
            raise ValueError(f"dataset has {len(dataset)} examples, fewer than one batch of {batch_size}")
    sampler = EpochSampler(len(dataset), per_epoch_batches * batch_size, seed, infinite, batch_size, rank, world)
    loader = DataLoader(
        dataset,
        batch_size=batch_size // world,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin,
        collate_fn=collate,  # a staged set's batch of ingredients comes collated (trainer/data/staged.py)
        # Its own generator: each new iterator draws a worker base seed from it, and from the
        # global RNG without one, which would shift dropout's stream after a mid-epoch
        # resume (found by tests/test_reliability.py). Examples are keyed, not seeded by it.
        generator=torch.Generator().manual_seed(seed),
    )
    return loader, sampler


def valid_loader(dataset: Dataset, batch_size: int, rank: int = 0, world: int = 1) -> DataLoader:
    """In order; with `world` ranks, rank `rank` gets the rank-th contiguous share."""
    if world > 1:
        n = len(dataset)
        if n < world:
            raise ValueError(f"the validation set has {n} examples, fewer than the {world} processes")
        dataset = Subset(dataset, range(rank * n // world, (rank + 1) * n // world))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


def spread_subset(dataset: Dataset, cap: int | None) -> Dataset:
    """At most `cap` examples, evenly spread over the set (a corpus sorted by speaker keeps
    every speaker), the same ones every epoch; `cap` None: all of them."""
    if cap is None or cap >= len(dataset):
        return dataset
    log.info("validating on %d of the %d validation examples (trainer.validation.max_examples)", cap, len(dataset))
    return Subset(dataset, np.linspace(0, len(dataset) - 1, cap).round().astype(int).tolist())
