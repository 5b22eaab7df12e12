import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

import pgx_jax as pgx
from pgx_jax.metrics import ari, nmi, relative_error, spearman


@st.composite
def labelings(draw):
    size = draw(st.integers(0, 40))
    values = st.integers(0, draw(st.integers(0, 6)))
    return (
        draw(st.lists(values, min_size=size, max_size=size)),
        draw(st.lists(values, min_size=size, max_size=size)),
    )


@settings(max_examples=300, deadline=None, derandomize=True)
@given(labelings())
def test_nmi_matches_sklearn(pair):
    a, b = pair
    assert nmi(a, b) == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-12)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(labelings())
def test_ari_matches_sklearn(pair):
    a, b = pair
    assert ari(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)


EDGE_CASES = [
    ([], []),
    ([3], [7]),
    ([0, 0, 0, 0], [0, 0, 0, 0]),
    ([0, 0, 0, 0], [0, 1, 2, 3]),
    ([0, 1, 2, 3], [0, 1, 2, 3]),
    ([0, 1, 2, 3], [5, 5, 5, 5]),
    ([0, 0, 1, 1], [1, 1, 0, 0]),
    ([0, 0, 1, 1], [0, 1, 0, 1]),
    (["a", "a", "b"], ["x", "y", "y"]),
]


@pytest.mark.parametrize("a, b", EDGE_CASES)
def test_edge_cases_match_sklearn(a, b):
    assert nmi(a, b) == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-12)
    assert ari(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)


def test_large_random_labelings_match_sklearn():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 20, size=5000), rng.integers(0, 30, size=5000)
    b[:2500] = a[:2500]
    assert nmi(a, b) == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-12)
    assert ari(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)


@pytest.mark.parametrize("metric", [nmi, ari])
def test_labeling_checks(metric):
    with pytest.raises(ValueError, match="same length"):
        metric([0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="a must be 1-D"):
        metric([[0, 1]], [0, 1])
    with pytest.raises(ValueError, match="b must be 1-D"):
        metric([0, 1], [[0], [1]])


def test_relative_error():
    rng = np.random.default_rng(0)
    U, U_hat = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    expected = np.sqrt(((U_hat - U) ** 2).sum()) / np.sqrt((U**2).sum())
    assert relative_error(U_hat, U) == pytest.approx(expected, rel=1e-12)
    assert relative_error(U, U) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        relative_error(U[:4], U)
    with pytest.raises(ValueError, match="U is all zeros"):
        relative_error(U, np.zeros((5, 5)))
    bad = U.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="U_hat contains 1 NaN"):
        relative_error(bad, U)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    st.integers(2, 30).flatmap(
        lambda size: st.tuples(
            st.lists(st.integers(-5, 5), min_size=size, max_size=size),
            st.lists(st.floats(-10, 10), min_size=size, max_size=size),
        )
    )
)
def test_spearman_matches_scipy(pair):
    a, b = pair
    if len(set(a)) < 2 or len(set(b)) < 2:
        with pytest.raises(ValueError, match="is constant"):
            spearman(a, b)
        return
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)


def test_spearman_checks():
    with pytest.raises(ValueError, match="same length"):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2 values"):
        spearman([1], [2])
    with pytest.raises(ValueError, match="a must be 1-D"):
        spearman([[1, 2]], [1, 2])
    with pytest.raises(ValueError, match="b contains 1 NaN"):
        spearman([1, 2, 3], [1, np.nan, 3])


@pytest.mark.parametrize("seed", range(5))
def test_ami_matches_sklearn(seed):
    from sklearn.metrics import adjusted_mutual_info_score

    rng = np.random.default_rng(seed)
    for _ in range(40):
        n = int(rng.integers(2, 16))
        a = rng.integers(0, rng.integers(1, 5), n)
        b = rng.integers(0, rng.integers(1, 5), n)
        assert pgx.ami(a, b) == pytest.approx(adjusted_mutual_info_score(a, b), abs=1e-9)


def test_chance_agreement_is_the_permutation_null():
    truth = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    null = pgx.chance_agreement(truth, truth, draws=2000, seed=1)
    # NOTES: random 3-partitions of 10 tasks score NMI 0.27 ± 0.13 against a fixed partition.
    assert null["mean"] == pytest.approx(0.27, abs=0.03) and 0.1 < null["std"] < 0.2
    assert null["observed"] == pytest.approx(1.0) and null["p_value"] < 0.01
    # The same draws by hand: NMI of permutations of the estimate against the truth.
    rng = np.random.default_rng(1)
    by_hand = [pgx.nmi(rng.permutation(truth), truth) for _ in range(2000)]
    assert null["mean"] == pytest.approx(np.mean(by_hand)) and null["q95"] == pytest.approx(
        np.quantile(by_hand, 0.95))
    assert pgx.chance_agreement(truth, truth, draws=200, metric=pgx.ami)["mean"] == pytest.approx(
        0.0, abs=0.05)
    with pytest.raises(ValueError, match="same shape"):
        pgx.chance_agreement([0, 1], [0, 1, 1])
