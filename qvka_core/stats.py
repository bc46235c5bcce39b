"""Paired comparisons across seeds: t intervals and equivalence tests, no SciPy needed.

Two cells of a grid trained with the same seeds (same data order and, where shapes allow,
the same initialisation) are compared by their per-seed differences d_s, not by their two
means: the seed-to-seed noise that both share cancels. For n seeds the mean difference has
a Student t interval with n − 1 degrees of freedom (Student 1908; e.g. Wasserman, *All of
Statistics*, §10). "Close to" is an equivalence test against a stated margin δ (Schuirmann
1987, two one-sided tests): equivalent at level α when the 1 − 2α interval lies in (−δ, δ).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any

# Two-sided Student t quantiles t_{1-a/2, df} for the confidence levels used here.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_T95 = (6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812, 1.796, 1.782,
        1.771, 1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725, 1.721, 1.717, 1.714, 1.711,
        1.708, 1.706, 1.703, 1.701, 1.699, 1.697)


def t_quantile(df: int, level: float = 0.95) -> float:
    """t_{(1+level)/2, df} for level 0.95 or 0.90; the normal quantile beyond df 30."""
    table = {0.95: (_T975, 1.960), 0.90: (_T95, 1.645)}.get(level)
    if table is None:
        raise ValueError(f"level must be 0.95 or 0.90, got {level!r}")
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df!r}")
    values, normal = table
    return values[df - 1] if df <= len(values) else normal


@dataclass(frozen=True)
class Paired:
    """Mean of paired differences with its standard error and a t interval."""

    mean: float
    se: float
    n: int
    df: int
    lo: float  # 95 % interval
    hi: float
    lo90: float  # 90 % interval (the TOST interval at α = 0.05)
    hi90: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired(differences: list[float]) -> Paired | None:
    """The mean of per-seed differences with its t intervals; None below two pairs."""
    n = len(differences)
    if n < 2:
        return None
    mean = statistics.fmean(differences)
    se = statistics.stdev(differences) / math.sqrt(n)
    t95, t90 = t_quantile(n - 1, 0.95), t_quantile(n - 1, 0.90)
    return Paired(mean=mean, se=se, n=n, df=n - 1, lo=mean - t95 * se, hi=mean + t95 * se,
                  lo90=mean - t90 * se, hi90=mean + t90 * se)


def direction(p: Paired) -> int:
    """+1 if the 95 % interval lies above 0, −1 if below, 0 if it contains 0."""
    return 1 if p.lo > 0 else (-1 if p.hi < 0 else 0)


def equivalence(p: Paired, margin: float) -> str:
    """TOST at α = 0.05: "equivalent" (90 % interval inside ±margin), "different" (95 %
    interval entirely outside ±margin) or "unresolved"."""
    if -margin < p.lo90 and p.hi90 < margin:
        return "equivalent"
    if p.lo > margin or p.hi < -margin:
        return "different"
    return "unresolved"
