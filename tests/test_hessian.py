"""Hessian-vector products and trace estimators against explicit Hessians; the Theorem 1 bound."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from pgx_jax.diagnostics import generalization_bound, hessian_trace, hessian_vector_product

METHODS = ("hutchinson", "hutch++")


def hutchinson_variance(h) -> float:
    """Variance of one Rademacher sample vᵀHv for symmetric H: 2(‖H‖_F² − Σ_i H_ii²)."""
    h = np.asarray(h, np.float64)
    return float(2.0 * (np.sum(h**2) - np.sum(np.diag(h) ** 2)))


@functools.lru_cache(maxsize=None)
def mlp_problem():
    """A 4→8→2 tanh MLP (p = 58) with a softmax cross-entropy loss on a fixed batch of 16.

    Built once so that `loss` keeps its identity and the jitted estimator compiles once.
    """
    # Data from numpy: eager jax.random calls would each compile, for seconds in all.
    rng = np.random.default_rng(1)
    params = {
        "w1": jnp.asarray(0.8 * rng.standard_normal((4, 8)), jnp.float32),
        "b1": jnp.asarray(0.1 * rng.standard_normal(8), jnp.float32),
        "w2": jnp.asarray(0.8 * rng.standard_normal((8, 2)), jnp.float32),
        "b2": jnp.zeros(2),
    }
    x = jnp.asarray(rng.standard_normal((16, 4)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 2, 16))

    def loss(p):
        logits = jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(16), y])

    theta, unravel = ravel_pytree(params)
    # The independent reference, jitted (eager jax.hessian dispatches op by op and takes seconds).
    hessian = jax.jit(jax.hessian(lambda flat: loss(unravel(flat))))(theta)  # f32[p, p]
    return loss, params, hessian


def quadratic(a):
    """loss(x) = ½ xᵀAx, whose Hessian is exactly A (symmetric)."""
    return lambda x: 0.5 * x @ a @ x


@functools.lru_cache(maxsize=None)
def indefinite_problem():
    a = np.random.default_rng(3).standard_normal((20, 20))
    a = jnp.asarray(0.5 * (a + a.T) + np.diag(np.linspace(-2.0, 3.0, 20)), jnp.float32)
    return quadratic(a), a


@functools.lru_cache(maxsize=None)
def decaying_psd_problem():
    """p = 60, eigenvalues 1/i² in a random orthogonal basis."""
    q, _ = np.linalg.qr(np.random.default_rng(4).standard_normal((60, 60)))
    a = (q / np.arange(1, 61) ** 2) @ q.T
    a = jnp.asarray(0.5 * (a + a.T), jnp.float32)
    return quadratic(a), a


def estimates(loss, params, num_keys, num_products, method, seed):
    keys = jax.random.split(jax.random.key(seed), num_keys)
    one = lambda k: hessian_trace(loss, params, k, num_products, method)  # noqa: E731
    return np.asarray(jax.vmap(one)(keys))


def test_hvp_matches_explicit_hessian():
    loss, params, hessian = mlp_problem()
    hvp = hessian_vector_product(loss, params)
    vectors = jnp.asarray(np.random.default_rng(0).standard_normal((3, 58)), jnp.float32)
    products = jax.jit(jax.vmap(hvp))(vectors)  # rows: H v_i (H is symmetric)
    np.testing.assert_allclose(products, vectors @ hessian, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"shape \(58,\)"):
        hvp(jnp.ones(57))


def test_mlp_hessian_is_indefinite():
    """The estimator tests below exercise the indefinite case a policy-gradient loss produces."""
    eigenvalues = np.linalg.eigvalsh(np.asarray(mlp_problem()[2], np.float64))
    assert eigenvalues.min() < -0.1 and eigenvalues.max() > 0.1


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimators_match_exact_trace(method, seed):
    loss, params, hessian = mlp_problem()
    m = 60
    exact = float(jnp.trace(hessian))
    estimate = float(hessian_trace(loss, params, jax.random.key(seed), m, method=method))
    # Hutchinson's standard error; Hutch++ is measured against the same yardstick (here its spread
    # is ~4× smaller: see test_hutchpp_beats_hutchinson for a controlled comparison).
    assert abs(estimate - exact) <= 4.0 * np.sqrt(hutchinson_variance(hessian) / m)


@pytest.mark.parametrize("method", METHODS)
def test_unbiased_on_indefinite_matrix(method):
    loss, a = indefinite_problem()
    assert np.linalg.eigvalsh(np.asarray(a)).min() < 0 < np.linalg.eigvalsh(np.asarray(a)).max()
    m = 6
    samples = estimates(loss, jnp.zeros(20), 200, m, method, seed=5)
    stderr = samples.std(ddof=1) / np.sqrt(samples.size)
    assert abs(samples.mean() - float(jnp.trace(a))) <= 4.0 * stderr
    if method == "hutchinson":  # the closed-form variance the other tests rely on
        assert 0.7 < samples.var(ddof=1) / (hutchinson_variance(a) / m) < 1.4


def test_hutchpp_beats_hutchinson_on_decaying_spectrum():
    loss, a = decaying_psd_problem()
    m = 15
    hutch = estimates(loss, jnp.zeros(60), 200, m, "hutchinson", seed=6)
    hutchpp = estimates(loss, jnp.zeros(60), 200, m, "hutch++", seed=7)
    exact = float(jnp.trace(a))
    for samples in (hutch, hutchpp):
        assert abs(samples.mean() - exact) <= 4.0 * samples.std(ddof=1) / np.sqrt(samples.size)
    # Measured ratio ≈ 0.01: the sketch of 5 directions takes the top of the 1/i² spectrum.
    assert hutchpp.var(ddof=1) < 0.1 * hutch.var(ddof=1)


def test_hutchpp_exact_when_sketch_spans_the_space():
    """With m/3 ≥ p and H nonsingular, Q spans R^p: tr(QᵀHQ) = tr(H) and the residual is 0."""
    a = jnp.array([[2.0, 1.0, 0.0], [1.0, -3.0, 0.5], [0.0, 0.5, 1.0]])
    estimate = hessian_trace(quadratic(a), jnp.zeros(3), jax.random.key(0), num_products=30)
    np.testing.assert_allclose(estimate, 0.0, atol=1e-5)


def test_works_on_nested_pytrees_and_raw_keys():
    """A trace is invariant to how the parameters are split into leaves and to the key type."""
    a = jnp.diag(jnp.arange(1.0, 7.0))
    split = lambda p: quadratic(a)(jnp.concatenate([p["x"], p["y"][0]]))  # noqa: E731
    params = {"x": jnp.zeros(2), "y": [jnp.zeros(4)]}
    # Hutchinson is exact on a diagonal H with Rademacher vectors (v_i² = 1).
    exact = hessian_trace(split, params, jax.random.PRNGKey(0), 3, method="hutchinson")
    np.testing.assert_allclose(exact, 21.0, rtol=1e-6)


def test_bad_inputs(key):
    loss, params, _ = mlp_problem()
    with pytest.raises(ValueError, match="method must be one of"):
        hessian_trace(loss, params, key, method="lanczos")
    with pytest.raises(ValueError, match="multiple of 3"):
        hessian_trace(loss, params, key, num_products=10, method="hutch++")
    for bad in (0, -3):
        with pytest.raises(ValueError, match="num_products must be >= 1"):
            hessian_trace(loss, params, key, num_products=bad, method="hutchinson")
    with pytest.raises(ValueError, match="num_products must be an int"):
        hessian_trace(loss, params, key, num_products=6.0)
    with pytest.raises(ValueError, match="key must be a jax.random key"):
        hessian_trace(loss, params, 0)
    with pytest.raises(ValueError, match="floating scalar"):
        hessian_trace(lambda p: jnp.stack([loss(p), loss(p)]), params, key)
    with pytest.raises(ValueError, match="floating point"):
        hessian_trace(lambda p: jnp.sum(p * 1.0), jnp.arange(3), key)
    with pytest.raises(ValueError, match="no leaves"):
        hessian_trace(lambda p: jnp.zeros(()), {}, key)


def test_generalization_bound():
    # L̂ + sqrt(C·H/n) = 0.25 + sqrt(2·50/400) = 0.25 + 0.5.
    np.testing.assert_allclose(generalization_bound(0.25, 50.0, 400, 2.0), 0.75, rtol=1e-6)
    # A negative trace (indefinite Hessian) is clipped: the bound is the training loss.
    np.testing.assert_allclose(generalization_bound(0.25, -3.0, 400, 2.0), 0.25, rtol=1e-6)
    np.testing.assert_allclose(
        generalization_bound(np.array([0.1, 0.2]), jnp.array([16.0, -1.0]), 100, np.array([1, 4.0])),
        [0.1 + 0.4, 0.2],
        rtol=1e-6,
    )
    for bad in (0, -10):
        with pytest.raises(ValueError, match="num_samples must be > 0"):
            generalization_bound(0.25, 50.0, bad, 2.0)
    with pytest.raises(ValueError, match="loss_bound must be > 0"):
        generalization_bound(0.25, 50.0, 400, 0.0)
