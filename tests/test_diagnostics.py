"""The first-order diagnostics against explicit gradients and the second-order scaling law."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax.diagnostics import linearization_error, ratio_approximation_error
from pgx_jax.rl.policies import CategoricalMLP


def setup():
    policy = CategoricalMLP(num_actions=3, hidden=(8,))
    keys = jax.random.split(jax.random.key(0), 4)
    star = policy.init(keys[0], jnp.zeros(4))
    direction = jax.tree_util.tree_map(lambda x: jax.random.normal(keys[1], x.shape), star)
    obs = jax.random.normal(keys[2], (25, 4))
    action = jax.random.randint(keys[3], (25,), 0, 3)
    return policy, star, direction, obs, action


def moved(star, direction, scale):
    return jax.tree_util.tree_map(lambda s, d: s + scale * d, star, direction)


def test_matches_explicit_per_sample_gradients():
    policy, star, direction, obs, action = setup()
    theta = moved(star, direction, 0.05)
    lp = lambda p, i: policy.log_prob(p, obs[i], action[i])  # noqa: E731
    residual, total = 0.0, 0.0
    for i in range(obs.shape[0]):
        grad = jax.grad(lp)(star, i)
        linear = sum(float(jnp.sum(g * 0.05 * d)) for g, d in
                     zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(direction)))
        residual += (float(lp(theta, i)) - float(lp(star, i)) - linear) ** 2
        total += float(lp(theta, i)) ** 2
    np.testing.assert_allclose(
        linearization_error(policy.log_prob, star, theta, obs, action), residual / total, rtol=1e-4
    )


def test_error_vanishes_at_second_order():
    """The remainder is O(‖Δθ‖²), so its square shrinks ~16× when the step halves."""
    policy, star, direction, obs, action = setup()
    big = float(linearization_error(policy.log_prob, star, moved(star, direction, 0.02), obs, action))
    small = float(linearization_error(policy.log_prob, star, moved(star, direction, 0.01), obs, action))
    assert 10 < big / small < 22
    assert float(linearization_error(policy.log_prob, star, star, obs, action)) == 0.0
    ratio_big = float(ratio_approximation_error(policy.log_prob, star, moved(star, direction, 0.02), obs, action))
    ratio_small = float(ratio_approximation_error(policy.log_prob, star, moved(star, direction, 0.01), obs, action))
    assert 10 < ratio_big / ratio_small < 22  # (r − 1 − log r) = O(log r²)


def test_bad_inputs():
    policy, star, direction, obs, action = setup()
    with pytest.raises(ValueError, match="structure"):
        linearization_error(policy.log_prob, star, {"x": 1.0}, obs, action)
    with pytest.raises(ValueError, match="NaN"):
        linearization_error(policy.log_prob, star, star, obs.at[0, 0].set(jnp.nan), action)
    with pytest.raises(ValueError, match="inconsistent"):
        linearization_error(policy.log_prob, star, star, obs, action[:-1])
