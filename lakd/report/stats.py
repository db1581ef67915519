"""Paired differences between two sets of runs over seeds, with a Student t 95% interval.

Two runs are paired when they share a seed (same data order and initialisation noise), so the seed-to-seed
spread that both share cancels in the difference. The interval is mean ± t(0.975, n − 1) · sd / √n over the
n paired differences; one pair gives a difference but no interval.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from scipy import stats as _scipy_stats

LEVEL = 0.95


@dataclass(frozen=True)
class SeedValues:
    """One value per seed (fractions, like the metrics): what table cells and paired differences share."""

    values: tuple[float, ...]
    seeds: tuple[int | None, ...] = ()

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan


@dataclass(frozen=True)
class PairedDiff(SeedValues):
    """Per-seed differences a − b and their summary."""

    unpaired: tuple[str, ...] = field(default=())  # runs left out ("seed 3 unpaired")

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% confidence interval of the mean difference; None with fewer than 2 pairs."""
        if self.n < 2:
            return None
        sd = statistics.stdev(self.values)
        half = float(_scipy_stats.t.ppf(0.5 + LEVEL / 2, self.n - 1)) * sd / math.sqrt(self.n)
        return self.mean - half, self.mean + half

    def as_dict(self, scale: float = 100.0) -> dict:
        """Values times `scale` (percent points by default)."""
        iv = self.interval
        return {"mean": None if not self.n else scale * self.mean, "n": self.n,
                "ci95_low": None if iv is None else scale * iv[0], "ci95_high": None if iv is None else scale * iv[1],
                "values": [scale * v for v in self.values], "seeds": list(self.seeds)}


def paired(a: dict[int | None, float], b: dict[int | None, float]) -> PairedDiff:
    """a − b over the seeds both have (seed -> score). Runs without a seed cannot be paired and are left out."""
    seeds = sorted(s for s in a if s is not None and s in b)
    left = [f"{'no seed' if s is None else f'seed {s}'} unpaired"
            for s in sorted((set(a) ^ set(b)) | ({None} & set(a) & set(b)), key=lambda s: (s is None, s or 0))]
    return PairedDiff(tuple(a[s] - b[s] for s in seeds), tuple(seeds), tuple(left))
