"""Mean, spread and 95% confidence intervals over the repeats (seeds) of a configuration.

Intervals are Student t intervals of the mean, `mean ± t(0.975, n-1) · sd / √n`: with the
3 to 5 seeds a sweep can afford, the normal approximation would be far too narrow. A
speedup is a ratio of two configurations' speeds: when both ran the same seeds it is
taken per seed (paired) and summarised like any other figure; otherwise it is the ratio
of the means, its interval from the delta method (standard errors of the two means
combined in relative terms) with Welch-Satterthwaite degrees of freedom.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Estimate:
    n: int
    mean: float
    sd: float | None  # None for n = 1 (and for an unpaired ratio)
    lo: float | None  # the 95% interval; None when n = 1
    hi: float | None

    def overlaps(self, other: Estimate) -> bool | None:
        """Whether the two intervals overlap (the difference is within the noise); None
        when either has no interval."""
        if None in (self.lo, self.hi, other.lo, other.hi):
            return None
        return self.lo <= other.hi and other.lo <= self.hi  # type: ignore[operator]

    def format(self, spec: str, unit: str = "") -> str:
        """`12.3` for one run; `12.3 ± 0.4 [11.3, 13.3]` (mean ± sd [95% CI]) for repeats."""
        if self.n == 1 or self.lo is None:
            return format(self.mean, spec) + unit
        sd = f" ± {self.sd:{spec}}" if self.sd is not None else ""
        return f"{self.mean:{spec}}{unit}{sd} [{self.lo:{spec}}, {self.hi:{spec}}]"


def t95(df: float) -> float:
    return float(stats.t.ppf(0.975, df))


def estimate(values: list[float]) -> Estimate | None:
    values = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) == 1:
        return Estimate(1, mean, None, None, None)
    sd = statistics.stdev(values)
    half = t95(len(values) - 1) * sd / math.sqrt(len(values))
    return Estimate(len(values), mean, sd, mean - half, mean + half)


def ratio(num: dict[int, float], den: dict[int, float]) -> Estimate | None:
    """num / den from values keyed by seed (see the module docstring)."""
    num = {s: v for s, v in num.items() if v}
    den = {s: v for s, v in den.items() if v}
    if not num or not den:
        return None
    if num.keys() == den.keys():
        return estimate([num[s] / den[s] for s in num])
    a, b = estimate(list(num.values())), estimate(list(den.values()))
    r = a.mean / b.mean
    if a.sd is None or b.sd is None:
        return Estimate(min(a.n, b.n), r, None, None, None)
    va, vb = (a.sd / a.mean) ** 2 / a.n, (b.sd / b.mean) ** 2 / b.n  # relative variances of the means
    se = r * math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1)) if va + vb > 0 else a.n + b.n - 2
    half = t95(df) * se
    return Estimate(min(a.n, b.n), r, None, r - half, r + half)
