"""The one check of a `[low, high]` range from a config, with an error that names the key."""

from __future__ import annotations

import math
from collections.abc import Sequence


def span(key: str, value: Sequence[float]) -> tuple[float, float]:
    """`value` as (low, high); ValueError naming `key` (e.g. "data.snr_db") unless it is
    two finite numbers with low <= high."""
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or not all(math.isfinite(v) for v in pair) or pair[0] > pair[1]:
        raise ValueError(f"{key} must be [low, high] with low <= high, got {list(value)}")
    return pair  # type: ignore[return-value]
