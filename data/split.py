"""Stratified splits and samples: each class keeps its share, reproducibly for a seed."""
from collections import defaultdict
from collections.abc import Hashable, Sequence

import numpy as np


def _shuffled_strata(strata: Sequence[Hashable], seed: int) -> list[list[int]]:
    """Each stratum's indices, shuffled by the seed; strata in a fixed order so the seed alone decides."""
    by_stratum: dict[Hashable, list[int]] = defaultdict(list)
    for i, s in enumerate(strata):
        by_stratum[s].append(i)
    rng = np.random.default_rng(seed)
    return [rng.permutation(by_stratum[s]).tolist() for s in sorted(by_stratum, key=str)]


def stratified_split(strata: Sequence[Hashable], test_fraction: float = 0.2,
                     seed: int = 1) -> tuple[list[int], list[int]]:
    """Indices (train, held_out); each stratum contributes round(n * test_fraction) held-out items."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test fraction must be in (0, 1), got {test_fraction}")
    train, held_out = [], []
    for idx in _shuffled_strata(strata, seed):
        k = round(len(idx) * test_fraction)
        held_out += idx[:k]
        train += idx[k:]
    return sorted(train), sorted(held_out)


def stratified_sample(strata: Sequence[Hashable], n: int | None, seed: int = 1) -> list[int]:
    """Sorted indices of exactly min(n, len) items (all with n None), each stratum keeping its share: quotas by
    largest remainder, so the rounding never moves the total."""
    if n is None or n >= len(strata):
        return list(range(len(strata)))
    groups = _shuffled_strata(strata, seed)
    exact = [len(g) * n / len(strata) for g in groups]
    quota = [int(q) for q in exact]
    for g in sorted(range(len(groups)), key=lambda g: (int(exact[g]) - exact[g], g))[:n - sum(quota)]:
        quota[g] += 1
    return sorted(i for g, q in zip(groups, quota) for i in g[:q])
