"""Scores that compare groupings and affinity matrices (host-side numpy; not for use under `jit`).

`nmi` and `ari` match scikit-learn's `normalized_mutual_info_score` (arithmetic normalization) and
`adjusted_rand_score`, edge cases included, without depending on scikit-learn.
"""

from __future__ import annotations

import numpy as np
import scipy.stats


def _labelings(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Checks two labelings and returns them as dense codes (int[N], int[N])."""
    a, b = np.asarray(a), np.asarray(b)
    for name, x in (("a", a), ("b", b)):
        if x.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {x.shape}")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same length, got {a.shape[0]} and {b.shape[0]}")
    return np.unique(a, return_inverse=True)[1], np.unique(b, return_inverse=True)[1]


def _contingency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C[i, j] = number of items with code i in a and code j in b: int[ka, kb]."""
    ka, kb = a.max() + 1, b.max() + 1
    return np.bincount(a * kb + b, minlength=ka * kb).reshape(ka, kb)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log(p)))


def nmi(a, b) -> float:
    """Normalized mutual information, I(a; b) / ((H(a) + H(b)) / 2).

    Two labelings that each put everything in one group (or are both empty) score 1; otherwise
    zero mutual information scores 0.

    Args:
      a: [N] group labels (any hashable values).
      b: [N] group labels.

    Returns:
      A float in [0, 1]; 1 when the two partitions are the same up to renaming.
    """
    a, b = _labelings(a, b)
    if a.size == 0 or (a.max() == 0 and b.max() == 0):
        return 1.0
    table = _contingency(a, b)
    total = a.size
    rows, cols = np.nonzero(table)
    joint = table[rows, cols].astype(np.float64)
    row_sums, col_sums = table.sum(axis=1).astype(np.float64), table.sum(axis=0).astype(np.float64)
    terms = joint / total * (np.log(joint * total) - np.log(row_sums[rows] * col_sums[cols]))
    mi = max(float(terms.sum()), 0.0)  # rounding can push an independent pair below 0
    if mi == 0.0:
        return 0.0
    return mi / ((_entropy(row_sums) + _entropy(col_sums)) / 2)


def ari(a, b) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985).

    (index − expected) / (max − expected) over pairs of items, where index = Σ_ij C(n_ij, 2),
    expected = Σ_i C(a_i, 2) Σ_j C(b_j, 2) / C(N, 2) and max = (Σ_i C(a_i, 2) + Σ_j C(b_j, 2)) / 2.
    When max == expected (both labelings all one group or all singletons, or N < 2) the two
    partitions agree on every pair and the score is 1.

    Args:
      a: [N] group labels (any hashable values).
      b: [N] group labels.

    Returns:
      A float <= 1; 1 for identical partitions, about 0 for independent ones.
    """
    a, b = _labelings(a, b)
    if a.size < 2:
        return 1.0
    table = _contingency(a, b)
    # Exact integer arithmetic (Python ints) until the final division.
    index = int((table * (table - 1) // 2).sum())
    rows = int(sum(int(s) * (int(s) - 1) // 2 for s in table.sum(axis=1)))
    cols = int(sum(int(s) * (int(s) - 1) // 2 for s in table.sum(axis=0)))
    pairs = a.size * (a.size - 1) // 2
    numerator = 2 * (index * pairs - rows * cols)
    denominator = (rows + cols) * pairs - 2 * rows * cols
    return 1.0 if denominator == 0 else numerator / denominator


def relative_error(U_hat, U) -> float:
    """‖Û − U‖_F / ‖U‖_F.

    Args:
      U_hat: [n, n] (any shape equal to U's) estimate.
      U: [n, n] reference, finite and not all zero.

    Returns:
      A float >= 0.
    """
    U_hat, U = np.asarray(U_hat, dtype=np.float64), np.asarray(U, dtype=np.float64)
    if U_hat.shape != U.shape:
        raise ValueError(f"U_hat and U must have the same shape, got {U_hat.shape} and {U.shape}")
    for name, x in (("U_hat", U_hat), ("U", U)):
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains {int((~np.isfinite(x)).sum())} NaN/inf value(s)")
    reference = np.linalg.norm(U)
    if reference == 0:
        raise ValueError("U is all zeros, so the relative error is undefined")
    return float(np.linalg.norm(U_hat - U) / reference)


def spearman(a, b) -> float:
    """Spearman rank correlation (ties get average ranks), as `scipy.stats.spearmanr`.

    Args:
      a: f[N] values, N >= 2, finite, not constant.
      b: f[N] values, same conditions.

    Returns:
      A float in [-1, 1].
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    for name, x in (("a", a), ("b", b)):
        if x.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {x.shape}")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same length, got {a.shape[0]} and {b.shape[0]}")
    if a.size < 2:
        raise ValueError(f"spearman needs at least 2 values, got {a.size}")
    for name, x in (("a", a), ("b", b)):
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains {int((~np.isfinite(x)).sum())} NaN/inf value(s)")
        if (x == x[0]).all():
            raise ValueError(f"{name} is constant, so its rank correlation is undefined")
    return float(scipy.stats.spearmanr(a, b).statistic)
