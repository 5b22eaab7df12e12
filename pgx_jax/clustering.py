"""Grouping tasks from an affinity matrix (paper, Algorithm 2, lines 5–6), and random grouping.

`cluster_tasks` solves the semidefinite relaxation of k-means clustering of Peng & Wei (2007),
analysed by Awasthi et al. (2015), with cvxpy:

    maximize ⟨Û, X⟩   s.t.  X ⪰ 0,  X ≥ 0 (elementwise),  X·1 = 1,  and  tr X = k      ("trace")
    maximize ⟨Û, X⟩ − λ·tr X   s.t.  the same constraints but the trace     ("regularized")

A partition into groups c gives the feasible X = Σ_c 1_c 1_cᵀ / |c|, whose objective is
Σ_c sum(Û[c, c]) / |c| and whose trace is the number of groups. The solution X is rounded back to
a partition. Both steps run on the host (cvxpy, numpy); neither is meant to be called under `jit`.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from functools import partial
from typing import Mapping, NamedTuple, Sequence

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
from scipy.sparse.csgraph import connected_components

from pgx_jax._validate import check_int, check_key

DEFAULT_LAMBDAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_KMEANS_RESTARTS = 10
_KMEANS_MAX_ITER = 100


class ClusterInfo(NamedTuple):
    """How `cluster_tasks` reached its answer.

    Attributes:
      X: f64[n, n] the SDP solution that was rounded (for the regularized form, the one of the
        chosen λ). When no solver ran (status "skipped") it is the returned partition's own
        matrix Σ_c 1_c 1_cᵀ / |c|.
      objective: the SDP objective at X: ⟨Û, X⟩, minus λ·tr X for the regularized form.
      status: the cvxpy status ("optimal" or "optimal_inaccurate"), or "skipped" when the answer
        was forced and no solver ran (k == 1, k == n, or a constant U).
      rounding: "integral" (the connected components of X, see `cluster_tasks`) or "spectral"
        (k-means on the top eigenvectors of X).
      lam: the chosen λ (regularized form), else None.
      solve_seconds: wall time spent in cvxpy's `solve` (problem compilation included), summed
        over the λ sweep for the regularized form.
    """

    X: np.ndarray
    objective: float
    status: str
    rounding: str
    lam: float | None
    solve_seconds: float


def cluster_tasks(
    U,
    k: int | None,
    *,
    form: str = "trace",
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    solver: str = "SCS",
    seed: int = 0,
    solver_options: Mapping | None = None,
    return_info: bool = False,
):
    """Partitions n tasks into groups that maximize the within-group affinity.

    Normalization: the SDP is solved for Û, not U. Û = (U + Uᵀ)/2 mapped affinely onto [0, 1]
    (its minimum to 0, its maximum to 1). Adding a constant to U does not change which partition
    is best for a fixed number of groups, but the scale of U sets the meaning of λ (a per-group
    penalty in units of Û), so the result is invariant to U → aU + b with a > 0. A constant U
    carries no information (Û = 0, every partition scores the same): the function then warns and
    returns the contiguous balanced partition, task i in group ⌊i·k/n⌋, or one group if k is None.

    Forms: "trace" fixes tr X = k. "regularized" solves max ⟨Û, X⟩ − λ·tr X for each λ in
    `lambdas`, rounds each solution into round(tr X) groups, and keeps the λ whose partition
    maximizes Σ_c sum(Û[c, c]) / |c| (the first such λ on ties). If k is given, only partitions
    with exactly k groups compete; if k is None, the number of groups is the chosen λ's.

    Rounding always returns exactly the target number of non-empty groups (k, or round(tr X) for
    the regularized form). First "integral": the connected components of the graph with edges
    X_ij > 1/(2n). An optimal X of a well-separated instance is the block matrix with X_ij = 1/|c|
    ≥ 1/n inside groups and 0 between them (Awasthi et al. 2015), so the threshold sits halfway
    between the two, well above the solver's tolerance. If the components are not exactly the
    target number, "spectral": k-means (k-means++ seeded from `seed`, 10 restarts, lowest
    inertia; an empty cluster takes the point farthest from its centre) on the rows of V·Λ^{1/2},
    the top eigenpairs of X. `return_info` tells which one was used.

    Args:
      U: f[n, n] affinity matrix (larger = better trained together), finite, n >= 1. Host array
        or concrete jax array; not a tracer.
      k: the number of groups, 1 <= k <= n. Required for form="trace"; None lets the
        regularized form choose it. k == 1 and k == n have a single answer, returned without
        solving.
      form: "trace" or "regularized".
      lambdas: the λ values of the regularized form (finite floats), swept in order.
      solver: a cvxpy solver name. SCS by default (Clarabel is far slower past n ≈ 50).
      seed: seed of the spectral rounding's k-means.
      solver_options: extra keyword arguments for `cvxpy.Problem.solve` (e.g. {"eps_abs": 1e-6}
        for SCS).
      return_info: also return a `ClusterInfo`.

    Returns:
      groups: int32[n] group ids in [0, number of groups), numbered in order of first appearance
      (task 0 is in group 0); with `return_info`, the pair (groups, ClusterInfo).

    Raises:
      ValueError: on bad arguments, or (regularized form with k given) when no λ yields exactly
        k groups.
      RuntimeError: when the solver fails or ends with a status other than "optimal" (the status
        "optimal_inaccurate" only warns).
    """
    U = _check_affinity(U)
    n = U.shape[0]
    if form not in ("trace", "regularized"):
        raise ValueError(f"form must be 'trace' or 'regularized', got {form!r}")
    if k is None:
        if form == "trace":
            raise ValueError("k is None: form='trace' needs k; pass k or use form='regularized'")
    else:
        k = check_int("k", k, minimum=1, maximum=n)
    if form == "regularized":
        lambdas = _check_lambdas(lambdas)
    if not isinstance(solver, str) or solver.upper() not in cp.installed_solvers():
        raise ValueError(f"solver must be one of {cp.installed_solvers()}, got {solver!r}")
    seed = check_int("seed", seed, minimum=0)
    if solver_options is not None and not isinstance(solver_options, Mapping):
        raise ValueError(f"solver_options must be a mapping or None, got {solver_options!r}")
    options = dict(solver_options or {})

    U_hat = normalize_affinity(U)
    if n == 1 or k == 1 or k == n:
        groups, info = _forced(U_hat, np.zeros(n, np.int64) if k in (1, None) else np.arange(n))
    elif not U_hat.any():
        returned = "one group" if k is None else f"{k} contiguous groups of balanced sizes"
        warnings.warn(
            f"U is constant, so all partitions score the same; returning {returned}", stacklevel=2
        )
        groups, info = _forced(U_hat, np.zeros(n, np.int64) if k is None else np.arange(n) * k // n)
    elif form == "trace":
        X, objective, status, seconds = _solve(_sdp(U_hat, k), solver, options)
        groups, rounding = _round(X, k, seed)
        info = ClusterInfo(X, objective, status, rounding, None, seconds)
    else:
        groups, info = _regularized(U_hat, k, lambdas, solver, options, seed)
    groups = _relabel(jnp.asarray(groups, jnp.int32), int(groups.max()) + 1)
    return (groups, info) if return_info else groups


def random_groups(key: jax.Array, n_tasks: int, k: int) -> jax.Array:
    """A random partition of n tasks into exactly k non-empty groups (the random baseline).

    A random permutation puts one task in each of the k groups; every other task joins a group
    drawn uniformly. (This is not uniform over all partitions into k groups; every such
    partition has positive probability.) Jittable with `n_tasks` and `k` static.

    Args:
      key: PRNG key.
      n_tasks: n >= 1.
      k: 1 <= k <= n.

    Returns:
      int32[n] group ids in [0, k), numbered in order of first appearance, each id used.
    """
    key = check_key("key", key)
    n = check_int("n_tasks", n_tasks, minimum=1)
    k = check_int("k", k, minimum=1, maximum=n)
    return _random_groups(key, n, k)


@partial(jax.jit, static_argnames=("n", "k"))
def _random_groups(key, n, k):
    perm_key, draw_key = jax.random.split(key)
    order = jax.random.permutation(perm_key, n)
    in_order = jnp.concatenate([jnp.arange(k), jax.random.randint(draw_key, (n - k,), 0, k)])
    return _relabel(jnp.zeros(n, jnp.int32).at[order].set(in_order), k)


def _relabel(labels: jax.Array, k: int) -> jax.Array:
    """Renumbers k non-empty groups in order of first appearance: int32[n]."""
    first = jax.ops.segment_min(jnp.arange(labels.shape[0]), labels, num_segments=k)
    rank = jnp.argsort(jnp.argsort(first))
    return rank[labels].astype(jnp.int32)


def _check_affinity(U) -> np.ndarray:
    if isinstance(U, jax.core.Tracer):
        raise ValueError(
            "U is a tracer: cluster_tasks runs on the host (cvxpy); call it outside jit"
        )
    U = np.asarray(U)
    if U.dtype.kind not in "fiu":
        raise ValueError(f"U must be a real-valued array, got dtype {U.dtype}")
    if U.ndim != 2 or U.shape[0] != U.shape[1]:
        raise ValueError(f"U must be a square 2-D matrix, got shape {U.shape}")
    if U.shape[0] == 0:
        raise ValueError("U must hold at least one task, got shape (0, 0)")
    U = U.astype(np.float64)
    if not np.isfinite(U).all():
        raise ValueError(f"U contains {int((~np.isfinite(U)).sum())} NaN/inf value(s)")
    return U


def _check_lambdas(lambdas) -> tuple[float, ...]:
    if isinstance(lambdas, (str, bytes)) or not isinstance(lambdas, Sequence) or not lambdas:
        raise ValueError(f"lambdas must be a non-empty sequence of floats, got {lambdas!r}")
    for lam in lambdas:
        if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not math.isfinite(lam):
            raise ValueError(f"lambdas must hold finite floats, got {lam!r}")
    return tuple(float(lam) for lam in lambdas)


def normalize_affinity(U) -> np.ndarray:
    """(U + Uᵀ)/2 mapped affinely onto [0, 1]; all zeros for a constant U. The normalization
    `cluster_tasks` applies, so two affinity matrices are compared on the same footing."""
    U = np.asarray(U, dtype=np.float64)
    U = (U + U.T) / 2
    low, high = U.min(), U.max()
    return (U - low) / (high - low) if high > low else np.zeros_like(U)


def _partition_matrix(labels: np.ndarray) -> np.ndarray:
    """Σ_c 1_c 1_cᵀ / |c|: f64[n, n]."""
    same = labels[:, None] == labels[None, :]
    return same / same.sum(axis=1, keepdims=True)


def _partition_score(U_hat: np.ndarray, labels: np.ndarray) -> float:
    """Σ_c sum(Û[c, c]) / |c| = ⟨Û, partition matrix⟩."""
    return float(np.sum(U_hat * _partition_matrix(labels)))


def _forced(U_hat: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ClusterInfo]:
    """The answer when there is nothing to solve."""
    return labels, ClusterInfo(
        _partition_matrix(labels), _partition_score(U_hat, labels), "skipped", "integral", None, 0.0
    )


def _sdp(U_hat: np.ndarray, k: int | None) -> tuple[cp.Problem, cp.Variable, cp.Parameter | None]:
    """The SDP with tr X = k, or with the penalty λ·tr X (λ a parameter) when k is None."""
    n = U_hat.shape[0]
    X = cp.Variable((n, n), symmetric=True)
    constraints = [X >> 0, X >= 0, cp.sum(X, axis=1) == 1]
    affinity = cp.sum(cp.multiply(U_hat, X))
    if k is not None:
        return cp.Problem(cp.Maximize(affinity), constraints + [cp.trace(X) == k]), X, None
    lam = cp.Parameter()
    return cp.Problem(cp.Maximize(affinity - lam * cp.trace(X)), constraints), X, lam


def _solve(sdp, solver: str, options: dict) -> tuple[np.ndarray, float, str, float]:
    problem, X, _ = sdp
    start = time.perf_counter()
    try:
        problem.solve(solver=solver, **options)
    except cp.error.SolverError as error:
        raise RuntimeError(
            f"cvxpy solver {solver} failed on the clustering SDP: {error}"
        ) from error
    seconds = time.perf_counter() - start
    if problem.status == cp.OPTIMAL_INACCURATE:
        warnings.warn(
            f"solver {solver} returned status 'optimal_inaccurate' for the clustering SDP; "
            f"the rounding may be off (tighten the tolerance with solver_options)",
            stacklevel=3,
        )
    elif problem.status != cp.OPTIMAL:
        raise RuntimeError(
            f"cvxpy solver {solver} ended with status {problem.status!r} on the clustering SDP"
        )
    solution = np.asarray(X.value, dtype=np.float64)
    return (solution + solution.T) / 2, float(problem.value), problem.status, seconds


def _regularized(U_hat, k, lambdas, solver, options, seed) -> tuple[np.ndarray, ClusterInfo]:
    """The λ sweep of the trace-regularized form."""
    sdp = _sdp(U_hat, None)
    n = U_hat.shape[0]
    total_seconds = 0.0
    candidates = []  # (score, labels, info) for each eligible λ
    counts = {}
    for lam in lambdas:
        sdp[2].value = lam
        X, objective, status, seconds = _solve(sdp, solver, options)
        total_seconds += seconds
        # For a partition matrix tr X is the number of groups.
        target = min(max(round(float(np.trace(X))), 1), n)
        labels, rounding = _round(X, target, seed)
        counts[lam] = target
        if k is None or target == k:
            info = ClusterInfo(X, objective, status, rounding, lam, 0.0)
            candidates.append((_partition_score(U_hat, labels), labels, info))
    if not candidates:
        found = ", ".join(f"λ={lam:g}: {c}" for lam, c in counts.items())
        raise ValueError(
            f"no λ in lambdas gives exactly k={k} groups (groups per λ: {found}); "
            f"try other lambdas, k=None, or form='trace'"
        )
    best = max(candidates, key=lambda candidate: candidate[0])  # the first λ wins ties
    return best[1], best[2]._replace(solve_seconds=total_seconds)


def _round(X: np.ndarray, target: int, seed: int) -> tuple[np.ndarray, str]:
    """Rounds an SDP solution to exactly `target` non-empty groups: (int[n] labels, method)."""
    n = X.shape[0]
    count, labels = connected_components(X > 1 / (2 * n), directed=False)
    if count == target:
        return labels, "integral"
    values, vectors = np.linalg.eigh(X)  # ascending eigenvalues
    embedding = vectors[:, -target:] * np.sqrt(np.clip(values[-target:], 0.0, None))
    return _kmeans(embedding, target, np.random.default_rng(seed)), "spectral"


def _kmeans(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Lloyd's k-means with k-means++ starts; the lowest-inertia labels, all k groups non-empty."""
    best_labels, best_inertia = None, np.inf
    for _ in range(_KMEANS_RESTARTS):
        centers = _kmeans_plus_plus(points, k, rng)
        labels = None
        for _ in range(_KMEANS_MAX_ITER):
            sq_dist = ((points[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
            new_labels = _fill_empty(sq_dist.argmin(axis=1), sq_dist, k)
            if labels is not None and np.array_equal(new_labels, labels):
                break
            labels = new_labels
            centers = np.stack([points[labels == c].mean(axis=0) for c in range(k)])
        inertia = float(((points - centers[labels]) ** 2).sum())
        if inertia < best_inertia:
            best_labels, best_inertia = labels, inertia
    return best_labels


def _kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    n = points.shape[0]
    chosen = [int(rng.integers(n))]
    sq_dist = ((points - points[chosen[0]]) ** 2).sum(-1)
    for _ in range(k - 1):
        if sq_dist.sum() > 0:
            index = int(rng.choice(n, p=sq_dist / sq_dist.sum()))
        else:  # every point sits on a centre: pick an unused one
            index = int(rng.choice(np.setdiff1d(np.arange(n), chosen)))
        chosen.append(index)
        sq_dist = np.minimum(sq_dist, ((points - points[index]) ** 2).sum(-1))
    return points[chosen]


def _fill_empty(labels: np.ndarray, sq_dist: np.ndarray, k: int) -> np.ndarray:
    """Gives each empty cluster the point farthest from its centre among clusters of size > 1."""
    labels = labels.copy()
    own = sq_dist[np.arange(len(labels)), labels]
    for empty in np.flatnonzero(np.bincount(labels, minlength=k) == 0):
        movable = np.bincount(labels, minlength=k)[labels] > 1
        index = int(np.argmax(np.where(movable, own, -np.inf)))
        labels[index] = empty
        own[index] = 0.0
    return labels
