import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax.subsets import _repair, min_num_subsets, sample_subsets


def uncovered_pairs(subsets: np.ndarray) -> list[tuple[int, int]]:
    n = subsets.shape[1]
    return [
        (i, j)
        for i, j in itertools.combinations(range(n), 2)
        if not any(row[i] and row[j] for row in subsets)
    ]


@pytest.mark.parametrize(
    "n, alpha, m",
    [
        (10, 3, 40),
        (7, 3, 7),  # the minimum: a Steiner triple system (Fano plane)
        (6, 3, 6),  # the minimum: the covering number C(6, 3, 2) = 6
        (9, 3, 12),  # the minimum: the affine plane of order 3
        (13, 4, 13),  # the minimum: the projective plane of order 3
        (12, 4, 12),
        (20, 5, 60),
        (5, 5, 1),
        (6, 2, 15),
    ],
)
def test_rows_have_alpha_tasks_and_every_pair_is_covered(n, alpha, m):
    subsets = sample_subsets(jax.random.key(3), n, m, alpha)
    assert subsets.shape == (m, n)
    assert subsets.dtype == jnp.bool_
    subsets = np.asarray(subsets)
    assert (subsets.sum(axis=1) == alpha).all()
    assert uncovered_pairs(subsets) == []


@pytest.mark.parametrize("seed", range(8))
def test_fano_plane_is_found_for_many_keys(seed):
    subsets = np.asarray(sample_subsets(jax.random.key(seed), 7, 7, 3))
    assert uncovered_pairs(subsets) == []
    # 7 triples cover the 21 pairs exactly once each.
    counts = subsets.T.astype(int) @ subsets.astype(int)
    assert (counts[np.triu_indices(7, 1)] == 1).all()


def test_repair_starts_from_any_subsets_even_with_absent_tasks():
    # All 7 subsets equal {0, 1, 2}: tasks 3..6 are in no subset at the start.
    members = np.tile([0, 1, 2], (7, 1))
    assert _repair(members, 7, np.random.default_rng(0)) == 0
    subsets = np.zeros((7, 7), dtype=bool)
    np.put_along_axis(subsets, members, True, axis=1)
    assert (subsets.sum(axis=1) == 3).all()
    assert uncovered_pairs(subsets) == []


def test_reproducible_from_the_key_and_different_across_keys():
    first = sample_subsets(jax.random.key(0), 12, 50, 4)
    again = sample_subsets(jax.random.key(0), 12, 50, 4)
    other = sample_subsets(jax.random.key(1), 12, 50, 4)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_raw_prng_key_is_accepted():
    subsets = sample_subsets(jax.random.PRNGKey(0), 8, 20, 3)
    assert uncovered_pairs(np.asarray(subsets)) == []


def test_draws_are_roughly_uniform_over_tasks():
    # With plenty of subsets there is little to repair, so each task is in about m·α/n of them.
    subsets = np.asarray(sample_subsets(jax.random.key(0), 10, 2000, 3))
    per_task = subsets.sum(axis=0)
    assert np.all(np.abs(per_task - 600) < 5 * math.sqrt(600))


def test_min_num_subsets_is_a_valid_lower_bound():
    for n in range(2, 13):
        for alpha in range(2, n + 1):
            pair_bound = math.ceil(math.comb(n, 2) / math.comb(alpha, 2))
            assert min_num_subsets(n, alpha) >= pair_bound
    assert min_num_subsets(7, 3) == 7
    assert min_num_subsets(6, 3) == 6
    assert min_num_subsets(10, 2) == 45


def test_below_the_minimum_raises_with_the_minimum():
    with pytest.raises(ValueError, match="at least 7 subsets"):
        sample_subsets(jax.random.key(0), 7, 6, 3)
    # The pair-counting bound alone would allow 5 here; a task still needs 3 subsets.
    with pytest.raises(ValueError, match="at least 6 subsets"):
        sample_subsets(jax.random.key(0), 6, 5, 3)


def test_unreachable_covering_raises_naming_uncovered_pairs():
    # Schönheim's bound says 7 subsets of size 4 might cover 9 tasks, but no such covering
    # exists (the covering number C(9, 4, 2) is 8).
    with pytest.raises(ValueError, match=r"pair\(s\) of tasks remain uncovered"):
        sample_subsets(jax.random.key(0), 9, 7, 4)


@pytest.mark.parametrize(
    "args, match",
    [
        ((1, 5, 2), "n_tasks must be >= 2"),
        ((5, 0, 2), "num_subsets must be >= 1"),
        ((5, 5, 1), "subset_size must be >= 2"),
        ((5, 5, 6), "subset_size must be <= 5"),
        ((5.0, 5, 2), "n_tasks must be an int"),
        ((5, 5.5, 2), "num_subsets must be an int"),
        ((5, 5, True), "subset_size must be an int"),
    ],
)
def test_bad_arguments_raise(args, match):
    with pytest.raises(ValueError, match=match):
        sample_subsets(jax.random.key(0), *args)


def test_bad_key_raises():
    with pytest.raises(ValueError, match="key must be a jax.random key"):
        sample_subsets(0, 5, 10, 2)
    with pytest.raises(ValueError, match="key must be a jax.random key"):
        sample_subsets(jnp.zeros(2, jnp.float32), 5, 10, 2)


def test_under_jit_raises():
    with pytest.raises(ValueError, match="cannot be called under jit"):
        jax.jit(lambda key: sample_subsets(key, 5, 10, 2))(jax.random.key(0))
