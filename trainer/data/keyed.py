"""The one dataset adapter: examples fetched by integer key, a batch at a time.

Every source (synthetic speech, tokens, folders) is a batched function
`fetch(keys) -> examples` where an example is a pure function of its key. Training sets
are `draws`: any key is valid (the sampler hands out `epoch * size + i`), `size` is an
epoch's length, or unbounded for a procedural source. Validation sets are `fixed`: keys
0..size-1, each always the same example, kept in memory after the first fetch where
`memo` says rendering it again would cost more than holding it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset

Example = dict[str, torch.Tensor]
UNBOUNDED = 2**62  # the length of a procedural training set: every key a fresh draw


class Keyed(Dataset):
    def __init__(self, fetch: Callable[[list[int]], list[Example]], size: int, fixed: bool, memo: bool = False):
        self.fetch, self.size, self.fixed, self.memo = fetch, size, fixed, memo
        self._memo: dict[int, Example] = {}

    @classmethod
    def draws(cls, fetch: Callable[[list[int]], list[Example]], size: int = UNBOUNDED) -> Keyed:
        return cls(fetch, size, fixed=False)

    @classmethod
    def fixed_set(cls, fetch: Callable[[list[int]], list[Example]], size: int, memo: bool = False) -> Keyed:
        return cls(fetch, size, fixed=True, memo=memo)

    def __len__(self) -> int:
        return self.size

    def __getitems__(self, keys: list[int]) -> list[Example]:
        """Batched fetch (the DataLoader calls this with a whole batch of keys)."""
        keys = [int(k) for k in keys]
        if self.fixed:
            for k in keys:
                if not 0 <= k < self.size:
                    raise IndexError(k)
        if not self.memo:
            return self.fetch(keys)
        for k in keys:  # one at a time: each example exactly as a lone fetch renders it
            if k not in self._memo:
                self._memo[k] = self.fetch([k])[0]
        return [self._memo[k] for k in keys]

    def __getitem__(self, key: int) -> Example:
        return self.__getitems__([key])[0]
