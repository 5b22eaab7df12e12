from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax.affinity import affinity_matrix, gradient_similarity_affinity
from pgx_jax.types import Features


def brute_force_affinity(subsets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Eq. (5) by a double loop; NaN where no subset holds the pair."""
    m, n = subsets.shape
    U = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(n):
            held = [scores[l] for l in range(m) if subsets[l, i] and subsets[l, j]]
            if held:
                U[i, j] = np.mean(held)
    return U


def random_subsets(seed: int, m: int, n: int, p: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    subsets = rng.random((m, n)) < p
    subsets[np.arange(m), rng.integers(n, size=m)] = True  # no empty row
    return subsets


@pytest.mark.parametrize("seed", range(5))
def test_matches_a_brute_force_double_loop(seed):
    subsets = random_subsets(seed, m=40, n=7)
    scores = np.random.default_rng(seed).normal(size=40).astype(np.float32)
    expected = brute_force_affinity(subsets, scores)
    assert not np.isnan(expected).any()
    U = affinity_matrix(jnp.asarray(subsets), jnp.asarray(scores))
    assert U.shape == (7, 7) and U.dtype == jnp.float32
    np.testing.assert_allclose(U, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(U, np.asarray(U).T)


def test_numpy_inputs_and_integer_scores_are_accepted():
    subsets = random_subsets(0, m=30, n=5)
    scores = np.arange(30)
    np.testing.assert_allclose(
        affinity_matrix(subsets, scores), brute_force_affinity(subsets, scores), rtol=1e-6
    )


def test_uncovered_pair_raises_listing_the_pairs():
    subsets = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0]], dtype=bool)
    # Covered: {0, 1}, {2, 3}, {0, 2}.
    expected = r"3 pair\(s\) are uncovered: \(0, 3\), \(1, 2\), \(1, 3\);"
    with pytest.raises(ValueError, match=expected):
        affinity_matrix(subsets, np.ones(3))


def test_many_uncovered_pairs_are_truncated():
    subsets = np.zeros((6, 12), dtype=bool)
    for l in range(6):
        subsets[l, 2 * l : 2 * l + 2] = True  # only the pairs {0, 1}, {2, 3}, ... are covered
    with pytest.raises(ValueError, match=r"60 pair\(s\) are uncovered: .* and 50 more"):
        affinity_matrix(subsets, np.ones(6))


def test_task_in_no_subset_is_reported():
    subsets = np.array([[1, 1, 0], [1, 1, 0]], dtype=bool)
    with pytest.raises(ValueError, match=r"task\(s\) \[2\] are in no subset"):
        affinity_matrix(subsets, np.ones(2))


def test_under_jit_without_fill_raises_at_trace_time():
    subsets = jnp.asarray(random_subsets(0, m=40, n=5))  # fully covered, but unknowable under jit
    with pytest.raises(ValueError, match="under jit .* explicit fill is required"):
        jax.jit(affinity_matrix)(subsets, jnp.ones(40))


def test_fill_mean_uses_the_mean_of_covered_off_diagonal_entries():
    subsets = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 1, 0, 1]], dtype=bool)
    scores = np.array([1.0, 2.0, 4.0, 8.0])
    expected = brute_force_affinity(subsets, scores)
    covered_off_diagonal = expected[~np.isnan(expected) & ~np.eye(4, dtype=bool)]
    expected[np.isnan(expected)] = covered_off_diagonal.mean()
    np.testing.assert_allclose(affinity_matrix(subsets, scores, fill="mean"), expected, rtol=1e-6)


def test_fill_float_and_jit_with_fill():
    subsets = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 1, 0, 1]], dtype=bool)
    scores = np.array([1.0, 2.0, 4.0, 8.0], dtype=np.float32)
    expected = brute_force_affinity(subsets, scores)
    expected[np.isnan(expected)] = -3.5
    np.testing.assert_allclose(affinity_matrix(subsets, scores, fill=-3.5), expected, rtol=1e-6)
    jitted = jax.jit(partial(affinity_matrix, fill=-3.5))
    np.testing.assert_allclose(jitted(jnp.asarray(subsets), scores), expected, rtol=1e-6)
    jitted_mean = jax.jit(partial(affinity_matrix, fill="mean"))
    np.testing.assert_allclose(
        jitted_mean(jnp.asarray(subsets), scores),
        affinity_matrix(subsets, scores, fill="mean"),
        rtol=1e-6,
    )


def test_fill_is_ignored_when_every_pair_is_covered():
    subsets = random_subsets(1, m=40, n=6)
    scores = np.random.default_rng(1).normal(size=40)
    np.testing.assert_allclose(
        affinity_matrix(subsets, scores, fill=123.0), brute_force_affinity(subsets, scores),
        rtol=1e-5, atol=1e-6,
    )


def test_differentiable_in_scores():
    subsets = random_subsets(2, m=20, n=4)
    grad = jax.grad(lambda s: affinity_matrix(subsets, s)[0, 1])(jnp.ones(20))
    both = subsets[:, 0] & subsets[:, 1]
    np.testing.assert_allclose(grad, both / both.sum(), rtol=1e-6)


@pytest.mark.parametrize(
    "subsets, scores, kwargs, match",
    [
        (np.ones((3, 4), bool), np.ones(2), {}, "scores has 2 entries but subsets has 3 rows"),
        (np.ones((3, 4)), np.ones(3), {}, "subsets must have a dtype of kind 'b'"),
        (np.ones(4, bool), np.ones(1), {}, "subsets must have 2 dimension"),
        (np.ones((3, 4), bool), np.ones((3, 1)), {}, "scores must have 1 dimension"),
        (np.ones((3, 4), bool), np.array([1.0, np.nan, 2.0]), {}, "scores contains 1 NaN"),
        (np.array([[1, 1], [0, 0]], bool), np.ones(2), {}, r"subsets has 1 empty row"),
        (np.ones((0, 4), bool), np.ones(0), {}, "at least one row"),
        (np.ones((3, 4), bool), np.ones(3), {"fill": "median"}, "fill must be None, 'mean'"),
        (np.ones((3, 4), bool), np.ones(3), {"fill": np.inf}, "fill must be None, 'mean'"),
        (np.eye(3, dtype=bool), np.ones(3), {"fill": "mean"}, "no subset holds two tasks"),
    ],
)
def test_bad_inputs_raise(subsets, scores, kwargs, match):
    with pytest.raises(ValueError, match=match):
        affinity_matrix(subsets, scores, **kwargs)


def make_features(seed: int, n_tasks: int, per_task: int = 30, d: int = 6) -> Features:
    rng = np.random.default_rng(seed)
    num = n_tasks * per_task
    advantage = rng.normal(size=num)
    return Features(
        z=jnp.asarray(rng.normal(size=(num, d)) + rng.normal(size=d), jnp.float32),
        y=jnp.asarray(np.where(advantage >= 0, 1.0, -1.0), jnp.float32),
        w=jnp.asarray(np.abs(advantage), jnp.float32),
        task=jnp.asarray(rng.permutation(np.repeat(np.arange(n_tasks), per_task)), jnp.int32),
    )


def reference_gradient_similarity(features: Features, n_tasks: int) -> np.ndarray:
    z, y, w = (np.asarray(x, np.float64) for x in (features.z, features.y, features.w))
    task = np.asarray(features.task)
    grads = []
    for i in range(n_tasks):
        rows = task == i
        grads.append(np.mean((y[rows] * w[rows])[:, None] * z[rows], axis=0))
    U = np.empty((n_tasks, n_tasks))
    for i in range(n_tasks):
        for j in range(n_tasks):
            U[i, j] = grads[i] @ grads[j] / (np.linalg.norm(grads[i]) * np.linalg.norm(grads[j]))
    return U


@pytest.mark.parametrize("seed", range(3))
def test_gradient_similarity_matches_a_numpy_loop(seed):
    features = make_features(seed, n_tasks=5)
    U = gradient_similarity_affinity(features, 5)
    assert U.shape == (5, 5) and U.dtype == jnp.float32
    np.testing.assert_allclose(U, reference_gradient_similarity(features, 5), atol=1e-5)
    np.testing.assert_array_equal(U, np.asarray(U).T)


def test_gradient_similarity_under_jit():
    features = make_features(0, n_tasks=4)
    jitted = jax.jit(gradient_similarity_affinity, static_argnums=1)
    np.testing.assert_allclose(
        jitted(features, 4), reference_gradient_similarity(features, 4), atol=1e-5
    )


def test_gradient_similarity_task_without_samples_raises():
    features = make_features(0, n_tasks=3)
    with pytest.raises(ValueError, match=r"no sample of task\(s\) \[3\]"):
        gradient_similarity_affinity(features, 4)


def test_gradient_similarity_zero_gradient_raises():
    features = make_features(0, n_tasks=3)
    features = features.replace(w=jnp.where(features.task == 1, 0.0, features.w))
    with pytest.raises(ValueError, match=r"mean gradient of task\(s\) \[1\] is zero"):
        gradient_similarity_affinity(features, 3)


def test_gradient_similarity_bad_inputs_raise():
    features = make_features(0, n_tasks=3)
    with pytest.raises(ValueError, match="task ids must be < n_tasks=2"):
        gradient_similarity_affinity(features, 2)
    with pytest.raises(ValueError, match="inconsistent number of samples"):
        gradient_similarity_affinity(features.replace(y=features.y[:-1]), 3)
    with pytest.raises(ValueError, match="features.z contains 1 NaN"):
        gradient_similarity_affinity(features.replace(z=features.z.at[0, 0].set(jnp.nan)), 3)
    with pytest.raises(ValueError, match="n_tasks must be an int"):
        gradient_similarity_affinity(features, 3.0)


# Per-task main effects -------------------------------------------------------------------------

def test_remove_task_effects_equals_numpy_least_squares():
    import pgx_jax as pgx

    subsets = np.asarray(pgx.sample_subsets(jax.random.key(3), 8, 40, 3))
    scores = np.random.default_rng(0).normal(size=40) * 5 + 100
    design = np.concatenate([np.ones((40, 1)), subsets / subsets.sum(1, keepdims=True)], 1)
    coef = np.linalg.lstsq(design, scores, rcond=None)[0]
    expected = scores - design @ coef
    got = pgx.remove_task_effects(subsets, scores)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_allclose(jax.jit(pgx.remove_task_effects)(subsets, scores), got, atol=1e-5)
    # Equal-size subsets: residuals sum to zero over each task's subsets, so U's diagonal is 0.
    np.testing.assert_allclose(np.diag(affinity_matrix(subsets, got)), 0, atol=1e-4)


def test_removing_task_effects_recovers_a_planted_grouping_that_per_task_terms_hide():
    import pgx_jax as pgx

    n, m = 10, 200
    planted = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    rng = np.random.default_rng(1)
    subsets = np.asarray(pgx.sample_subsets(jax.random.key(0), n, m, 3))
    members = [np.flatnonzero(row) for row in subsets]
    same = np.array([np.mean([planted[i] == planted[j] for a, i in enumerate(s) for j in s[a + 1:]])
                     for s in members])  # pairwise signal: share of same-group pairs
    levels = rng.normal(size=n) * 10  # per-task terms, 10× the pairwise signal
    scores = same + np.array([levels[s].mean() for s in members]) + 0.05 * rng.normal(size=m)
    fixed = pgx.cluster_tasks(affinity_matrix(subsets, pgx.remove_task_effects(subsets, scores)), 3)
    assert pgx.nmi(fixed, planted) == pytest.approx(1.0)
    # The residuals equal those of the pairwise signal alone (the levels are an exact main effect).
    np.testing.assert_allclose(pgx.remove_task_effects(subsets, scores),
                               pgx.remove_task_effects(subsets, scores - [levels[s].mean() for s in members]),
                               atol=1e-3)


def test_remove_task_effects_bad_inputs():
    import pgx_jax as pgx

    with pytest.raises(ValueError, match="3 entries but subsets has 2 rows"):
        pgx.remove_task_effects(np.eye(2, 3, dtype=bool), np.ones(3))
    with pytest.raises(ValueError, match="empty row"):
        pgx.remove_task_effects(np.array([[True, False], [False, False]]), np.ones(2))
    with pytest.raises(ValueError, match="NaN"):
        pgx.remove_task_effects(np.eye(2, dtype=bool), np.array([1.0, np.nan]))


# Per-task (directed) scores --------------------------------------------------------------------

def test_directed_affinity_matches_a_brute_force_loop():
    import pgx_jax as pgx

    n, m = 7, 30
    subsets = np.asarray(pgx.sample_subsets(jax.random.key(5), n, m, 3))
    scores = np.where(subsets, np.random.default_rng(2).normal(size=(m, n)) * 3 + 10, np.nan)
    level = [np.mean([scores[l, i] for l in range(m) if subsets[l, i]]) for i in range(n)]
    directed = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            held = [scores[l, i] - level[i] for l in range(m) if subsets[l, i] and subsets[l, j]]
            directed[i, j] = np.mean(held) if i != j and held else 0.0
    expected = (directed + directed.T) / 2
    np.testing.assert_allclose(pgx.directed_affinity(subsets, scores), expected, atol=1e-5)
    np.testing.assert_allclose(jax.jit(pgx.directed_affinity)(subsets, scores), expected, atol=1e-5)


def test_directed_affinity_ignores_per_task_levels_and_finds_planted_transfer():
    import pgx_jax as pgx

    n, m = 10, 200
    planted = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    subsets = np.asarray(pgx.sample_subsets(jax.random.key(0), n, m, 3))
    rng = np.random.default_rng(4)
    # g_i(S): task i's level (10× the signal) + 1 for each co-member of its group, + noise.
    mates = subsets.astype(int) @ (planted[:, None] == planted[None, :]).astype(int) - 1
    levels = rng.normal(size=n) * 10
    scores = np.where(subsets, levels + mates + 0.05 * rng.normal(size=(m, n)), np.nan)
    U = pgx.directed_affinity(subsets, scores)
    assert pgx.nmi(pgx.cluster_tasks(U, 3), planted) == pytest.approx(1.0)
    np.testing.assert_allclose(U, pgx.directed_affinity(subsets, scores - levels), atol=1e-4)


def test_directed_affinity_bad_inputs():
    import pgx_jax as pgx

    with pytest.raises(ValueError, match="must match"):
        pgx.directed_affinity(np.eye(3, dtype=bool), np.ones((3, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        pgx.directed_affinity(np.eye(2, dtype=bool), np.array([[np.nan, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="empty row"):
        pgx.directed_affinity(np.array([[True, False], [False, False]]), np.ones((2, 2)))
