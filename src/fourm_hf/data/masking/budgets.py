"""Token budgets: integer counts per modality from shares, by largest remainder under capacities."""

from __future__ import annotations

import numpy as np


def distribute_budget(total: int, weights: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Split ``total`` tokens into integer counts proportional to ``weights``, capped by ``capacity``.

    Rounding is by largest remainder: every modality first gets ``floor(share * total)``, then the
    leftover tokens go one each to the largest fractional parts (ties: lower index first). A
    modality whose count exceeds its capacity is set to its capacity and the excess is split the
    same way among the modalities that still have room, in proportion to their weights (equally if
    all their weights are 0). Modalities with capacity 0 never get tokens.

    Args:
        total: tokens to hand out (>= 0).
        weights: (M,) float, >= 0 (e.g. a Dirichlet draw).
        capacity: (M,) int, >= 0.
    Returns:
        (M,) int64 counts with ``counts <= capacity`` and ``counts.sum() == min(total, capacity.sum())``.
    """
    weights = np.asarray(weights, dtype=np.float64)
    capacity = np.asarray(capacity, dtype=np.int64)
    counts = np.zeros(len(capacity), dtype=np.int64)
    remaining = int(min(total, capacity.sum()))
    while remaining > 0:
        open_slots = counts < capacity
        share = np.where(open_slots, weights, 0.0)
        if share.sum() <= 0:
            share = open_slots.astype(np.float64)
        exact = share / share.sum() * remaining
        add = np.floor(exact).astype(np.int64)
        leftover = remaining - int(add.sum())
        if leftover > 0:
            # Stable sort on the negated fractional part: largest first, lower index on ties.
            order = np.argsort(-(exact - add), kind="stable")
            add[order[:leftover]] += 1
        counts = np.minimum(counts + add, capacity)
        remaining = int(min(total, capacity.sum())) - int(counts.sum())
    return counts
