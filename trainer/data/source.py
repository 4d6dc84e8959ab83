"""What every data source provides (the synthetic, folder and token sources implement it):
the two datasets of a run, their sample rate, and whether the training set is unbounded
(indexed by a global draw number) or a finite list walked epoch by epoch."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch.utils.data import Dataset


@runtime_checkable
class DataSource(Protocol):
    sample_rate: int
    infinite: bool

    def train(self) -> Dataset: ...

    def valid(self) -> Dataset: ...
