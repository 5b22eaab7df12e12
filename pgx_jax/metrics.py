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
    row_sums, col_sums = table.sum(axis=1).astype(np.float64), table.sum(axis=0).astype(np.float64)
    mi = _mutual_information(table)  # clipped at 0: rounding can push an independent pair below
    if mi == 0.0:
        return 0.0
    return mi / ((_entropy(row_sums) + _entropy(col_sums)) / 2)


def _mutual_information(table: np.ndarray) -> float:
    total = table.sum()
    rows, cols = np.nonzero(table)
    joint = table[rows, cols].astype(np.float64)
    row_sums, col_sums = table.sum(axis=1).astype(np.float64), table.sum(axis=0).astype(np.float64)
    terms = joint / total * (np.log(joint * total) - np.log(row_sums[rows] * col_sums[cols]))
    return max(float(terms.sum()), 0.0)


def _expected_mutual_information(row_sums: np.ndarray, col_sums: np.ndarray) -> float:
    """E[I(a; b)] over random labelings with these group sizes (the hypergeometric model of
    Vinh, Epps & Bailey 2010), by direct summation (fine for the n ≤ a few hundred of tasks)."""
    from scipy.special import gammaln

    total = int(row_sums.sum())
    expected = 0.0
    for a in row_sums.astype(int):
        for b in col_sums.astype(int):
            for n_ij in range(max(1, a + b - total), min(a, b) + 1):
                log_p = (gammaln(a + 1) + gammaln(b + 1) + gammaln(total - a + 1)
                         + gammaln(total - b + 1) - gammaln(total + 1) - gammaln(n_ij + 1)
                         - gammaln(a - n_ij + 1) - gammaln(b - n_ij + 1)
                         - gammaln(total - a - b + n_ij + 1))
                expected += n_ij / total * np.log(total * n_ij / (a * b)) * np.exp(log_p)
    return expected


def ami(a, b) -> float:
    """Adjusted mutual information (Vinh, Epps & Bailey 2010), arithmetic-mean normalization:
    (I − E[I]) / ((H(a) + H(b)) / 2 − E[I]), E[I] under random labelings of the same group sizes.

    0 is what chance agreement scores on average (NMI's chance level is well above 0 for few
    tasks: 0.27 ± 0.13 for random 3-partitions of 10); 1 means the same partition. Two labelings
    that each put everything in one group score 1, as in `nmi`.

    Args:
      a: [N] group labels (any hashable values).
      b: [N] group labels.

    Returns:
      A float ≤ 1 (negative when the agreement is below chance).
    """
    a, b = _labelings(a, b)
    if a.size == 0 or (a.max() == 0 and b.max() == 0):
        return 1.0
    table = _contingency(a, b)
    row_sums, col_sums = table.sum(axis=1), table.sum(axis=0)
    mi = _mutual_information(table)
    expected = _expected_mutual_information(row_sums, col_sums)
    mean_entropy = (_entropy(row_sums.astype(np.float64)) + _entropy(col_sums.astype(np.float64))) / 2
    denominator = mean_entropy - expected
    if abs(denominator) < 1e-12:  # e.g. one labeling is all singletons: no room above chance
        return 1.0 if abs(mi - expected) < 1e-12 else 0.0
    return float((mi - expected) / denominator)


def chance_agreement(estimate, truth, *, draws: int = 1000, seed: int = 0, metric=None) -> dict:
    """The null of an agreement score: `metric(estimate permuted, truth)` over `draws` random
    permutations of the estimate's labels (random partitions with the estimate's group sizes).

    Args:
      estimate, truth: [N] group labels.
      draws: permutations (≥ 1).
      seed: NumPy seed of the permutations.
      metric: f(a, b) → float; default `nmi`.

    Returns:
      {"mean", "std", "q95" (95th percentile), "p_value": share of draws scoring at least the
      observed `metric(estimate, truth)` (with the observed one counted), "observed"}.
    """
    metric = nmi if metric is None else metric
    if not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive int, got {draws!r}")
    estimate, truth = np.asarray(estimate), np.asarray(truth)
    if estimate.shape != truth.shape:
        raise ValueError(f"estimate and truth must have the same shape, got {estimate.shape} and "
                         f"{truth.shape}")
    rng = np.random.default_rng(seed)
    scores = np.array([metric(rng.permutation(estimate), truth) for _ in range(draws)])
    observed = metric(estimate, truth)
    return {"mean": float(scores.mean()), "std": float(scores.std()),
            "q95": float(np.quantile(scores, 0.95)), "observed": float(observed),
            "p_value": float((1 + np.sum(scores >= observed - 1e-12)) / (draws + 1))}


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
