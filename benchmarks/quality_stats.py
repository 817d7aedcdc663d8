"""Intervals for the quality study: a two-way bootstrap over evaluation photos and training seeds.

A score table is ``(S, N)``: seeds x evaluation images. Images are grouped by source photo (crops of one photo are
not independent), so a bootstrap replicate draws whole photos with replacement and, independently, seeds with
replacement, and takes the mean over the drawn grid. For a comparison the table is the paired difference
``A - B`` (same seed, same image), so what the seed and the photo share cancels. The 95% interval is the 2.5 / 97.5
percentile of the replicates; a difference whose interval contains 0 is a tie.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

BOOTSTRAP = 4000


@dataclass
class Interval:
    """Mean of a table and its 95% bootstrap interval; ``p``: two-sided bootstrap p-value of ``mean != 0``."""

    mean: float
    low: float
    high: float
    p: float
    seeds: int
    images: int
    photos: int

    @property
    def verdict(self) -> str:
        """``better`` (interval above 0), ``worse`` (below 0) or ``tie``."""
        return "better" if self.low > 0 else "worse" if self.high < 0 else "tie"

    def as_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}


def bootstrap(table: np.ndarray, groups: list[str], replicates: int = BOOTSTRAP, seed: int = 0) -> Interval:
    """Mean of ``table`` ``(S, N)`` with its interval; ``groups[n]``: the source photo of image ``n``."""
    table = np.asarray(table, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != len(groups) or table.size == 0:
        raise ValueError(f"Expected a (seeds, images) table matching {len(groups)} groups, got {table.shape}.")
    names = sorted(set(groups))
    index = np.array([names.index(g) for g in groups])
    seeds, n_groups = table.shape[0], len(names)
    group_sums = np.stack([np.bincount(index, weights=row, minlength=n_groups) for row in table])  # (S, G)
    counts = np.bincount(index, minlength=n_groups).astype(np.float64)  # (G,)
    rng = np.random.default_rng(seed)
    draw_s = rng.integers(0, seeds, size=(replicates, seeds))
    draw_g = rng.integers(0, n_groups, size=(replicates, n_groups))
    count_s = np.stack([np.bincount(d, minlength=seeds) for d in draw_s]).astype(np.float64)  # (B, S)
    count_g = np.stack([np.bincount(d, minlength=n_groups) for d in draw_g]).astype(np.float64)  # (B, G)
    numerator = np.einsum("bs,sg,bg->b", count_s, group_sums, count_g)
    means = numerator / (seeds * (count_g @ counts))
    low, high = np.percentile(means, [2.5, 97.5])
    p = min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0)))
    return Interval(float(table.mean()), float(low), float(high), float(p), seeds, table.shape[1], n_groups)


def table_of(samples: dict[int, dict[str, float]], images: list[str], seeds: list[int] | None = None) -> np.ndarray:
    """``(S, N)`` array of ``samples[seed][image]`` for ``seeds`` (default: all, sorted) and ``images``."""
    seeds = sorted(samples) if seeds is None else seeds
    return np.array([[samples[s][name] for name in images] for s in seeds], dtype=np.float64)


def paired(a: dict[int, dict[str, float]], b: dict[int, dict[str, float]], images: list[str], groups: list[str]):
    """``A - B`` over the seeds both have (None if they share none); samples as in :func:`table_of`."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    return bootstrap(table_of(a, images, seeds) - table_of(b, images, seeds), groups)
