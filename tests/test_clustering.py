import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from pgx_jax.clustering import ClusterInfo, _kmeans, cluster_tasks, random_groups

TRUTH = np.repeat([0, 1, 2], [4, 3, 3])


def planted(seed: int, noise: float = 0.2) -> np.ndarray:
    """Block affinity (1 within the 3 groups of TRUTH, 0 between) plus symmetric Gaussian noise."""
    rng = np.random.default_rng(seed)
    blocks = (TRUTH[:, None] == TRUTH[None, :]).astype(float)
    noise_matrix = rng.normal(0.0, noise, size=blocks.shape)
    return blocks + np.triu(noise_matrix) + np.triu(noise_matrix, 1).T


def first_appearance(labels: np.ndarray) -> np.ndarray:
    """Renumbers labels in order of first appearance (the documented output convention)."""
    seen = {}
    return np.array([seen.setdefault(label, len(seen)) for label in labels])


def check_groups(groups, k: int, n: int) -> np.ndarray:
    groups = np.asarray(groups)
    assert groups.shape == (n,) and groups.dtype == np.int32
    assert sorted(set(groups.tolist())) == list(range(k))
    np.testing.assert_array_equal(groups, first_appearance(groups))
    return groups


@pytest.mark.parametrize("seed", range(3))
def test_trace_form_recovers_planted_groups(seed):
    groups, info = cluster_tasks(planted(seed), 3, return_info=True)
    groups = check_groups(groups, 3, 10)
    assert normalized_mutual_info_score(TRUTH, groups) == 1.0
    assert isinstance(info, ClusterInfo)
    assert info.status == "optimal" and info.lam is None
    assert info.rounding == "integral"
    assert info.X.shape == (10, 10) and info.solve_seconds > 0
    np.testing.assert_allclose(np.trace(info.X), 3.0, atol=1e-3)


@pytest.mark.parametrize("seed", range(3))
def test_regularized_form_recovers_planted_groups(seed):
    groups, info = cluster_tasks(planted(seed), 3, form="regularized", return_info=True)
    groups = check_groups(groups, 3, 10)
    assert normalized_mutual_info_score(TRUTH, groups) == 1.0
    assert info.lam in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert info.status == "optimal"


def test_regularized_form_chooses_the_number_of_groups_without_noise():
    groups = cluster_tasks(planted(0, noise=0.0), None, form="regularized")
    assert adjusted_rand_score(TRUTH, np.asarray(groups)) == 1.0


def test_regularized_form_with_k_none_returns_a_valid_partition():
    groups, info = cluster_tasks(planted(0), None, form="regularized", return_info=True)
    groups = np.asarray(groups)
    count = len(set(groups.tolist()))
    check_groups(groups, count, 10)
    assert count == round(np.trace(info.X))


def test_regularized_form_raises_when_no_lambda_gives_k_groups():
    with pytest.raises(ValueError, match=r"no λ in lambdas gives exactly k=5 groups .*λ=0.5: 3"):
        cluster_tasks(planted(0), 5, form="regularized", lambdas=(0.5,))


def test_equivariant_to_permuting_tasks():
    U = planted(1)
    perm = np.random.default_rng(0).permutation(10)
    for form in ("trace", "regularized"):
        groups = np.asarray(cluster_tasks(U, 3, form=form))
        permuted = np.asarray(cluster_tasks(U[np.ix_(perm, perm)], 3, form=form))
        assert adjusted_rand_score(groups[perm], permuted) == 1.0


def test_invariant_to_adding_a_constant_and_positive_scaling():
    U = planted(2, noise=0.3)
    groups = np.asarray(cluster_tasks(U, 3))
    for transformed in (U + 5.0, 3.0 * U, 0.01 * U - 2.0, jnp.asarray(U, jnp.float32)):
        np.testing.assert_array_equal(cluster_tasks(transformed, 3), groups)


def test_k_one_and_k_n_need_no_solver():
    U = planted(0)
    groups, info = cluster_tasks(U, 1, return_info=True)
    np.testing.assert_array_equal(groups, np.zeros(10))
    assert info.status == "skipped"
    np.testing.assert_allclose(info.X, np.full((10, 10), 0.1))
    groups, info = cluster_tasks(U, 10, form="regularized", return_info=True)
    np.testing.assert_array_equal(groups, np.arange(10))
    np.testing.assert_allclose(info.X, np.eye(10))
    np.testing.assert_array_equal(cluster_tasks(np.ones((1, 1)), 1), [0])


def test_constant_affinity_warns_and_returns_balanced_groups():
    with pytest.warns(UserWarning, match="U is constant"):
        groups = cluster_tasks(np.full((7, 7), 2.5), 3)
    np.testing.assert_array_equal(groups, [0, 0, 0, 1, 1, 2, 2])
    with pytest.warns(UserWarning, match="returning one group"):
        groups = cluster_tasks(np.zeros((4, 4)), None, form="regularized")
    np.testing.assert_array_equal(groups, np.zeros(4))


def test_rounding_always_gives_exactly_k_nonempty_groups_on_random_affinities():
    methods = set()
    for seed in range(25):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(3, 9))
        k = int(rng.integers(2, n))
        groups, info = cluster_tasks(rng.normal(size=(n, n)), k, seed=seed, return_info=True)
        check_groups(groups, k, n)
        methods.add(info.rounding)
    # Random affinities have fractional SDP solutions too, so both roundings are exercised.
    assert methods == {"integral", "spectral"}


def test_kmeans_keeps_every_cluster_nonempty_with_duplicate_points():
    # Only 2 distinct points but 4 clusters: plain Lloyd iterations would empty clusters.
    points = np.array([[0.0], [0.0], [0.0], [1.0], [1.0], [1.0]])
    labels = _kmeans(points, 4, np.random.default_rng(0))
    assert sorted(set(labels.tolist())) == [0, 1, 2, 3]


def test_spectral_rounding_is_deterministic_for_a_seed():
    rng = np.random.default_rng(7)
    U = rng.normal(size=(8, 8))
    first = cluster_tasks(U, 3, seed=5)
    np.testing.assert_array_equal(cluster_tasks(U, 3, seed=5), first)


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")  # cvxpy's own warning
def test_inaccurate_status_warns_and_other_statuses_raise():
    U = np.random.default_rng(0).normal(size=(8, 8))
    # SCS stopped after 5 iterations reports "optimal_inaccurate" on this instance.
    with pytest.warns(UserWarning, match="optimal_inaccurate"):
        groups = cluster_tasks(U, 3, solver_options={"max_iters": 5})
    check_groups(groups, 3, 8)
    with pytest.raises(RuntimeError, match="status 'user_limit'"):
        cluster_tasks(U, 3, solver="CLARABEL", solver_options={"max_iter": 1})


@pytest.mark.parametrize(
    "U, k, kwargs, match",
    [
        (np.ones((3, 4)), 2, {}, "U must be a square 2-D matrix"),
        (np.ones(4), 2, {}, "U must be a square 2-D matrix"),
        (np.ones((0, 0)), 1, {}, "at least one task"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), 1, {}, "U contains 1 NaN"),
        (np.array([["a", "b"], ["c", "d"]]), 1, {}, "U must be a real-valued array"),
        (np.eye(4), 5, {}, "k must be <= 4"),
        (np.eye(4), 0, {}, "k must be >= 1"),
        (np.eye(4), 2.0, {}, "k must be an int"),
        (np.eye(4), None, {}, "form='trace' needs k"),
        (np.eye(4), 2, {"form": "spectral"}, "form must be 'trace' or 'regularized'"),
        (np.eye(4), 2, {"solver": "NOPE"}, "solver must be one of"),
        (np.eye(4), 2, {"seed": -1}, "seed must be >= 0"),
        (np.eye(4), 2, {"solver_options": 3}, "solver_options must be a mapping"),
        (np.eye(4), 2, {"form": "regularized", "lambdas": ()}, "lambdas must be a non-empty"),
        (np.eye(4), 2, {"form": "regularized", "lambdas": (0.1, np.nan)}, "finite floats"),
    ],
)
def test_bad_inputs_raise(U, k, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cluster_tasks(U, k, **kwargs)


def test_under_jit_raises():
    with pytest.raises(ValueError, match="call it outside jit"):
        jax.jit(lambda U: cluster_tasks(U, 2))(np.eye(3))


@pytest.mark.parametrize("n, k", [(1, 1), (5, 1), (5, 5), (10, 3), (20, 7)])
def test_random_groups_has_exactly_k_nonempty_groups(n, k):
    for seed in range(10):
        check_groups(random_groups(jax.random.key(seed), n, k), k, n)


def test_random_groups_is_reproducible_and_varies_with_the_key():
    first = random_groups(jax.random.key(0), 12, 4)
    np.testing.assert_array_equal(random_groups(jax.random.key(0), 12, 4), first)
    draws = {tuple(np.asarray(random_groups(jax.random.key(s), 12, 4))) for s in range(10)}
    assert len(draws) > 1


def test_random_groups_vmaps_over_keys():
    keys = jax.random.split(jax.random.key(0), 6)
    batch = jax.vmap(lambda key: random_groups(key, 9, 3))(keys)
    assert batch.shape == (6, 9)
    for groups in batch:
        check_groups(groups, 3, 9)


@pytest.mark.parametrize(
    "args, match",
    [((4, 0), "k must be >= 1"), ((4, 5), "k must be <= 4"), ((0, 1), "n_tasks must be >= 1")],
)
def test_random_groups_bad_inputs_raise(args, match):
    with pytest.raises(ValueError, match=match):
        random_groups(jax.random.key(0), *args)
