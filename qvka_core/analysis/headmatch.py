"""Match the heads of two models by the similarity of their attention maps.

Head i of one model has no reason to play the role of head i of another model trained
independently: the heads of a layer can be permuted without changing the function. Before
comparing two such models head by head, this module finds, per layer, the permutation of B's
heads that makes them most similar to A's: a minimum-cost assignment (Hungarian algorithm,
Kuhn 1955 / Munkres 1957) on the mean Jensen-Shannon divergence between attention maps on
the same text. Notation: L layers, H heads, T queries, S keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qvka_core.analysis import stats
from qvka_core.errors import LabError


def head_cost(a_layer: np.ndarray, b_layer: np.ndarray) -> np.ndarray:
    """(H, T, S) and (H', T, S) maps of one layer -> (H, H') mean JS divergence (nats) over
    query rows between A's head i and B's head j, as JS(p, q) = H((p + q) / 2) - (H(p) +
    H(q)) / 2 with H the row entropy (float32, one A head at a time: memory H'·T·S)."""
    a = np.asarray(a_layer, dtype=np.float32)
    b = np.asarray(b_layer, dtype=np.float32)
    if a.shape[1:] != b.shape[1:]:
        raise LabError(f"cannot match heads of maps {a.shape[1:]} and {b.shape[1:]}: the two "
                       "models must read the same tokens")
    ha, hb = stats.row_entropy(a), stats.row_entropy(b)  # (H, T), (H', T)
    cost = np.empty((a.shape[0], b.shape[0]))
    for i in range(a.shape[0]):
        m = 0.5 * (a[i][None] + b)  # (H', T, S)
        hm = -(m * np.log(np.where(m > 0, m, 1.0))).sum(-1)  # (H', T)
        cost[i] = (hm - 0.5 * (ha[i][None] + hb)).mean(-1)  # (H',)
    return np.clip(cost, 0.0, None)


def assign(cost: np.ndarray) -> np.ndarray:
    """Minimum-cost perfect matching of a square (n, n) cost matrix: `perm[i]` is the column
    given to row i. Uses scipy's linear_sum_assignment when scipy is installed, else an exact
    O(n³) Hungarian algorithm (shortest augmenting paths with potentials)."""
    c = np.asarray(cost, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise LabError(f"head matching needs a square cost matrix, got shape {c.shape}")
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        return _hungarian(c)
    rows, cols = linear_sum_assignment(c)
    perm = np.empty(len(rows), dtype=int)
    perm[rows] = cols
    return perm


def _hungarian(c: np.ndarray) -> np.ndarray:
    """Exact assignment for a square matrix; index 0 of u, v, p, way is a virtual row/column."""
    n = c.shape[0]
    u, v = np.zeros(n + 1), np.zeros(n + 1)  # row and column potentials
    p = np.zeros(n + 1, dtype=int)  # p[j]: row matched to column j (1-based; 0 = none)
    way = np.zeros(n + 1, dtype=int)  # previous column on the augmenting path
    for i in range(1, n + 1):
        p[0], j0 = i, 0
        minv = np.full(n + 1, np.inf)
        used = np.zeros(n + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used[1:]
            cur = c[i0 - 1] - u[i0] - v[1:]  # reduced costs from row i0, (n,)
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            reach = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(reach)) + 1
            delta = reach[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[~used] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:  # flip the augmenting path
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    perm = np.empty(n, dtype=int)
    perm[p[1:] - 1] = np.arange(n)
    return perm


def match_heads(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    """Per layer, the permutation of B's heads closest to A's: (L, H) with `perms[l, i]` = the
    head of B matched to head i of A in layer l."""
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=False)):
        raise LabError("head matching needs two models with the same layers, heads and tokens")
    return np.stack([assign(head_cost(x, y)) for x, y in zip(a, b, strict=True)])


def permute(b: Sequence[np.ndarray], perms: np.ndarray) -> list[np.ndarray]:
    """B's per-layer (H, T, S) maps with heads reordered so that head i is B's head
    perms[l, i], i.e. lined up with A's head i."""
    return [np.asarray(layer)[perms[li]] for li, layer in enumerate(b)]
