"""Stratified train/validation split: each class keeps its share, reproducibly for a seed."""
from collections import defaultdict
from collections.abc import Hashable, Sequence

import numpy as np


def stratified_split(strata: Sequence[Hashable], test_fraction: float = 0.2,
                     seed: int = 1) -> tuple[list[int], list[int]]:
    """Indices (train, held_out); each stratum contributes round(n * test_fraction) held-out items."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test fraction must be in (0, 1), got {test_fraction}")
    by_stratum: dict[Hashable, list[int]] = defaultdict(list)
    for i, s in enumerate(strata):
        by_stratum[s].append(i)
    rng = np.random.default_rng(seed)
    train, held_out = [], []
    for s in sorted(by_stratum, key=str):  # fixed order so the seed alone decides the split
        idx = rng.permutation(by_stratum[s]).tolist()
        k = round(len(idx) * test_fraction)
        held_out += idx[:k]
        train += idx[k:]
    return sorted(train), sorted(held_out)
