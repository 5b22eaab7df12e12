"""Task-affinity matrices: the paper's eq. (5), and the gradient-similarity baseline."""

from __future__ import annotations

import math
import numbers
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax._validate import (
    as_array,
    check_finite,
    check_int,
    check_leading,
    check_task_ids,
    is_concrete,
)
from pgx_jax.types import Features

_MAX_LISTED_PAIRS = 10


def affinity_matrix(subsets: jax.Array, scores: jax.Array, *, fill=None) -> jax.Array:
    """The task-affinity matrix of eq. (5): U_ij = mean of f̂(S_l) over the subsets holding i and j.

    The diagonal U_ii is the mean score of the subsets that hold i. Computed as sums / counts
    with counts = Sᵀ S and sums = Sᵀ diag(scores) S, so it is differentiable in `scores` and
    jittable with `fill` fixed: `jax.jit(functools.partial(affinity_matrix, fill=...))`.

    An entry is *uncovered* when no subset holds its pair (or, on the diagonal, its task). With
    `fill=None` that is an error: raised with the list of pairs when `subsets` is concrete, and
    always at trace time when `subsets` is a tracer (coverage cannot be checked under `jit`, so an
    explicit `fill` is required there).

    Args:
      subsets: bool[m, n], row l is the indicator of subset S_l (e.g. from `sample_subsets`).
      scores: f32[m], the estimated performance f̂(S_l) of each subset.
      fill: what uncovered entries get: None (raise), "mean" (the mean of the covered
        off-diagonal entries; under `jit`, NaN if there is none) or a finite float.

    Returns:
      U: f32[n, n], symmetric.

    Raises:
      ValueError: on inconsistent shapes, non-finite scores, an empty subset, a bad `fill`, or
        an uncovered entry with `fill=None`.
    """
    subsets = as_array("subsets", subsets, ndim=2, kind="b")
    scores = as_array("scores", scores, ndim=1, kind="fi")
    m, n = subsets.shape
    if m == 0 or n == 0:
        raise ValueError(f"subsets must have at least one row and one column, got shape {(m, n)}")
    if scores.shape[0] != m:
        raise ValueError(f"scores has {scores.shape[0]} entries but subsets has {m} rows")
    check_finite("scores", scores)
    fill_value = _check_fill(fill)
    if is_concrete(subsets):
        empty = np.flatnonzero(~np.asarray(subsets).any(axis=1))
        if empty.size:
            raise ValueError(f"subsets has {empty.size} empty row(s), e.g. row {empty[0]}")
        if fill_value is None:
            _raise_if_uncovered(np.asarray(subsets))
        elif fill_value == "mean":
            _raise_if_mean_undefined(np.asarray(subsets))
    elif fill_value is None:
        raise ValueError(
            "subsets is a tracer: under jit pair coverage cannot be checked, so an explicit "
            "fill is required (fill='mean' or a float)"
        )
    return _affinity(subsets, scores.astype(jnp.float32), fill_value)


def _check_fill(fill) -> str | float | None:
    if fill is None or (isinstance(fill, str) and fill == "mean"):
        return fill
    if isinstance(fill, bool) or not isinstance(fill, numbers.Real) or not math.isfinite(fill):
        raise ValueError(f"fill must be None, 'mean' or a finite float, got {fill!r}")
    return float(fill)


def _raise_if_uncovered(subsets: np.ndarray) -> None:
    inside = subsets.astype(np.int64)
    covered = (inside.T @ inside) > 0
    tasks = np.flatnonzero(~np.diag(covered))
    pairs = np.argwhere(np.triu(~covered, 1))
    if pairs.size == 0 and tasks.size == 0:
        return
    listed = ", ".join(f"({i}, {j})" for i, j in pairs[:_MAX_LISTED_PAIRS])
    more = f" and {len(pairs) - _MAX_LISTED_PAIRS} more" if len(pairs) > _MAX_LISTED_PAIRS else ""
    absent = f"task(s) {tasks.tolist()} are in no subset; " if tasks.size else ""
    raise ValueError(
        f"eq. (5) is undefined for pairs that no subset holds: {absent}{len(pairs)} pair(s) "
        f"are uncovered: {listed}{more}; sample more subsets (sample_subsets covers every "
        f"pair) or pass fill='mean' or fill=<float>"
    )


def _raise_if_mean_undefined(subsets: np.ndarray) -> None:
    inside = subsets.astype(np.int64)
    counts = inside.T @ inside
    if (counts > 0).all():
        return
    if not (counts > 0)[~np.eye(len(counts), dtype=bool)].any():
        raise ValueError(
            "fill='mean' needs at least one covered pair of distinct tasks, but no subset holds "
            "two tasks; pass a float fill"
        )


def _affinity(subsets: jax.Array, scores: jax.Array, fill) -> jax.Array:
    inside = subsets.astype(jnp.float32)
    hi = jax.lax.Precision.HIGHEST  # exact integer counts, full-precision sums on TPU/GPU too
    counts = jnp.matmul(inside.T, inside, precision=hi)
    sums = jnp.matmul(inside.T, scores[:, None] * inside, precision=hi)
    covered = counts > 0
    means = sums / jnp.where(covered, counts, 1.0)
    if fill == "mean":
        off_diagonal = covered & ~jnp.eye(covered.shape[0], dtype=bool)
        fill = jnp.sum(jnp.where(off_diagonal, means, 0.0)) / jnp.sum(off_diagonal)
    if fill is not None:
        means = jnp.where(covered, means, fill)
    # Exact symmetry (matmul need not sum (i, j) and (j, i) in the same order).
    return (means + means.T) / 2


def remove_task_effects(subsets: jax.Array, scores: jax.Array) -> jax.Array:
    """Subset scores without their per-task main effects: the residuals of the least-squares fit
    f(S) ≈ c + mean_{i∈S} b_i.

    A task's own level (its advantage scale, its base return, how much any fine-tune helps it)
    enters every subset that holds it. Through eq. (5) that reaches U as noise (each U_ij
    averages the levels of random co-members) and as a diagonal bias, and it can swamp the
    pairwise signal the grouping needs; an additive U_ij = b_i + b_j leaves the SDP's objective
    unchanged (X·1 = 1), so nothing of value is lost by removing it. For subsets of one size the
    residuals sum to zero over the subsets holding any task (the normal equations), so the
    diagonal of `affinity_matrix(subsets, residuals)` is 0 and its off-diagonal entries hold only
    what pairs of tasks add beyond their separate levels. c and the b_i are not separately
    identifiable (the mean over S of a constant is that constant); the residuals are unique.
    Jittable.

    Args:
      subsets: bool[m, n], row l is the indicator of S_l.
      scores: f32[m], f(S_l) (estimated or true).

    Returns:
      f32[m], f(S_l) minus its fitted main effects.
    """
    subsets = as_array("subsets", subsets, ndim=2, kind="b")
    scores = as_array("scores", scores, ndim=1, kind="fi")
    if scores.shape[0] != subsets.shape[0]:
        raise ValueError(f"scores has {scores.shape[0]} entries but subsets has "
                         f"{subsets.shape[0]} rows")
    check_finite("scores", scores)
    if is_concrete(subsets) and not np.asarray(subsets).any(axis=1).all():
        raise ValueError("subsets has an empty row")
    return _remove_task_effects(subsets, scores.astype(jnp.float32))


@jax.jit
def _remove_task_effects(subsets, scores):
    inside = subsets.astype(jnp.float32)
    design = jnp.concatenate(
        [jnp.ones((inside.shape[0], 1)), inside / inside.sum(1, keepdims=True)], axis=1)
    # Centre the scores first: the fit is then of small numbers, and float32 keeps precision.
    centred = scores - scores.mean()
    coef = jnp.linalg.lstsq(design, centred)[0]
    return centred - jnp.matmul(design, coef, precision=jax.lax.Precision.HIGHEST)


def directed_affinity(subsets: jax.Array, member_scores: jax.Array) -> jax.Array:
    """Task affinity from per-task (directed) scores: how much having j in a subset changes task
    i's own score, symmetrized.

        b_i  = mean over the subsets S ∋ i of g_i(S)              (task i's own level)
        D_ij = mean over the subsets S ∋ i, j of g_i(S) − b_i     (the transfer of j onto i)
        U    = (D + Dᵀ) / 2, zero diagonal

    Unlike eq. (5), which averages a whole subset's score, each task's level cancels by
    construction, so per-task effects neither add noise nor bias the diagonal; what is left is
    the pairwise part the grouping needs. Pairs no subset holds get 0 (no evidence either way).
    Jittable.

    Args:
      subsets: bool[m, n], row l is the indicator of S_l.
      member_scores: f[m, n], g_i(S_l) for the tasks i of S_l (e.g. `member_gains` of a
        `SubsetSolution`, or the return gain of each task after fine-tuning on S_l); entries
        outside S_l are ignored (may be NaN).

    Returns:
      U: f32[n, n], symmetric, zero diagonal.
    """
    subsets = as_array("subsets", subsets, ndim=2, kind="b")
    member_scores = as_array("member_scores", member_scores, ndim=2, kind="fi")
    if member_scores.shape != subsets.shape:
        raise ValueError(f"member_scores has shape {member_scores.shape}, subsets "
                         f"{subsets.shape}; they must match ([m, n])")
    if is_concrete(member_scores) and is_concrete(subsets):
        inside = np.asarray(subsets)
        if not inside.any(axis=1).all():
            raise ValueError("subsets has an empty row")
        if not np.isfinite(np.asarray(member_scores)[inside]).all():
            raise ValueError("member_scores has non-finite entries for tasks inside a subset")
    return _directed_affinity(subsets, member_scores.astype(jnp.float32))


@jax.jit
def _directed_affinity(subsets, member_scores):
    inside = subsets.astype(jnp.float32)
    g = jnp.where(subsets, member_scores, 0.0)
    hi = jax.lax.Precision.HIGHEST
    level = g.sum(0) / jnp.maximum(inside.sum(0), 1.0)  # b_i
    centred = jnp.where(subsets, g - level, 0.0)
    counts = jnp.matmul(inside.T, inside, precision=hi)  # [i, j]: subsets holding both
    sums = jnp.matmul(centred.T, inside, precision=hi)  # [i, j]: Σ_{S ∋ i, j} g_i(S) − b_i
    directed = jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), 0.0)
    U = (directed + directed.T) / 2
    return U * (1.0 - jnp.eye(U.shape[0]))


def gradient_similarity_affinity(features: Features, n_tasks: int) -> jax.Array:
    """The gradient-similarity baseline (Yu et al. 2020a): U_ij = cos(g_i, g_j).

    g_i is task i's mean projected policy gradient of the PPO surrogate, E[Â ∇log π] projected,
    i.e. the mean of y_t w_t z_t over the samples t of task i. Jittable with `n_tasks` static.

    Args:
      features: `Features` with z f32[N, d], y f32[N], w f32[N], task int[N].
      n_tasks: n, the number of tasks (ids lie in [0, n)).

    Returns:
      U: f32[n, n], symmetric, entries in [-1, 1].

    Raises:
      ValueError: on bad shapes or non-finite values, task ids outside [0, n), and, when the
        inputs are concrete, a task with no samples or a zero mean gradient (its cosine is
        undefined; under `jit` these checks are skipped and its row and column are NaN).
    """
    n = check_int("n_tasks", n_tasks, minimum=1)
    z = as_array("features.z", features.z, ndim=2, kind="fi")
    y = as_array("features.y", features.y, ndim=1, kind="fi")
    w = as_array("features.w", features.w, ndim=1, kind="fi")
    task = as_array("features.task", features.task, ndim=1, kind="i")
    check_leading(["features.z", "features.y", "features.w", "features.task"], [z, y, w, task])
    for name, x in (("features.z", z), ("features.y", y), ("features.w", w)):
        check_finite(name, x)
    check_task_ids(task, n)
    U, num_samples, norms = _gradient_similarity(z, y, w, task, n)
    if is_concrete(num_samples):
        empty = np.flatnonzero(np.asarray(num_samples) == 0)
        if empty.size:
            raise ValueError(f"features has no sample of task(s) {empty.tolist()}")
        zero = np.flatnonzero(np.asarray(norms) == 0)
        if zero.size:
            raise ValueError(
                f"the mean gradient of task(s) {zero.tolist()} is zero (e.g. all weights w = 0), "
                f"so their cosine similarity is undefined"
            )
    return U


@partial(jax.jit, static_argnames="n")
def _gradient_similarity(z, y, w, task, n):
    weighted = (y * w).astype(jnp.float32)[:, None] * z.astype(jnp.float32)
    num_samples = jax.ops.segment_sum(jnp.ones_like(y, jnp.float32), task, num_segments=n)
    mean_grads = jax.ops.segment_sum(weighted, task, num_segments=n) / num_samples[:, None]
    norms = jnp.linalg.norm(mean_grads, axis=1)
    unit = mean_grads / norms[:, None]
    U = jnp.clip(jnp.matmul(unit, unit.T, precision=jax.lax.Precision.HIGHEST), -1.0, 1.0)
    return (U + U.T) / 2, num_samples, norms
