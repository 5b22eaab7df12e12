"""jaxpr_flops against XLA's count on loop-free programs, an analytic count, and loop trip counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax.diagnostics.flops import jaxpr_flops, xla_flops
from pgx_jax.rl.policies import GaussianMLP


def test_matmul_matches_the_analytic_count():
    a, b = jnp.ones((32, 48)), jnp.ones((48, 16))
    assert jaxpr_flops(jnp.dot, a, b) == 2 * 32 * 48 * 16


def test_loop_free_mlp_and_its_gradient_agree_with_xla():
    policy = GaussianMLP(action_dim=4, hidden=(128, 128))
    params = policy.init(jax.random.key(0), jnp.zeros(39))
    obs = jnp.ones((256, 39))
    loss = lambda p, o: policy.apply(p, o)[0].sum()  # noqa: E731
    for fn in (loss, jax.grad(loss)):
        ours, xla = jaxpr_flops(fn, params, obs), xla_flops(fn, params, obs)
        np.testing.assert_allclose(ours, xla, rtol=0.05)


def test_loops_are_multiplied_by_their_trip_counts():
    x = jnp.ones((64, 64))

    def scanned(x):
        return jax.lax.scan(lambda c, _: (c @ x, None), x, None, length=7)[0]

    assert jaxpr_flops(scanned, x) == 7 * 2 * 64**3
    # XLA counts the body once: the reason this module exists.
    assert xla_flops(scanned, x) < 2 * 2 * 64**3

    def looped(x):
        return jax.lax.while_loop(lambda c: c[1] < 5, lambda c: (c[0] @ x, c[1] + 1), (x, 0))[0]

    with pytest.raises(ValueError, match="while_trips"):
        jaxpr_flops(looped, x)
    assert 5 * 2 * 64**3 <= jaxpr_flops(looped, x, while_trips=5) < 5.1 * 2 * 64**3
