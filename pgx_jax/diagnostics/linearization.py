"""How accurate is the first-order expansion behind the surrogate? (paper eq. 1, Table 1)

For θ near θ*, log π_θ(a|s) − log π_θ*(a|s) ≈ g_tᵀ(θ − θ*) with g_t = ∇θ log π_θ*(a_t|s_t). The
paper reports the relative residual sum of squares

    Σ_t (log π_θ − log π_θ* − g_tᵀΔθ)² / Σ_t (log π_θ)²

over the transitions of a batch, and the error of r ≈ 1 + log r (eq. 2). g_tᵀΔθ is computed as a
Jacobian-vector product, one per sample, so no per-sample gradient is ever formed.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from pgx_jax._validate import as_array, check_finite, check_leading


def _check(params_star, params, obs, action):
    if jax.tree_util.tree_structure(params_star) != jax.tree_util.tree_structure(params):
        raise ValueError("params and params_star must have the same pytree structure")
    obs, action = as_array("obs", obs), as_array("action", action)
    if check_leading(("obs", "action"), (obs, action)) == 0:
        raise ValueError("obs is empty (N = 0)")
    check_finite("obs", obs)
    for leaf in jax.tree_util.tree_leaves((params_star, params)):
        check_finite("params", leaf)
    return obs, action


@partial(jax.jit, static_argnames=("log_prob_fn",))
def _log_probs(log_prob_fn, params_star, params, obs, action):
    delta = jax.tree_util.tree_map(jnp.subtract, params, params_star)

    def one(o, a):
        at_star, linear = jax.jvp(lambda p: log_prob_fn(p, o, a), (params_star,), (delta,))
        return at_star, linear, log_prob_fn(params, o, a)

    return jax.vmap(one)(obs, action)


def linearization_error(log_prob_fn, params_star, params, obs, action) -> jax.Array:
    """Relative RSS of the first-order expansion of log π around θ* (paper, Table 1): f32[].

    Args:
      log_prob_fn: `log_prob_fn(params, obs, action) -> f32[]` for one sample (hashable).
      params_star: θ*, any pytree.
      params: θ, the same structure.
      obs, action: [N, ...] transitions to measure on.
    """
    obs, action = _check(params_star, params, obs, action)
    at_star, linear, at_theta = _log_probs(log_prob_fn, params_star, params, obs, action)
    return jnp.sum((at_theta - at_star - linear) ** 2) / jnp.sum(at_theta**2)


def ratio_approximation_error(log_prob_fn, params_star, params, obs, action) -> jax.Array:
    """Relative RSS of r ≈ 1 + log r with r = π_θ / π_θ* (paper eq. 2): f32[]."""
    obs, action = _check(params_star, params, obs, action)
    at_star, _, at_theta = _log_probs(log_prob_fn, params_star, params, obs, action)
    log_ratio = at_theta - at_star
    ratio = jnp.exp(log_ratio)
    return jnp.sum((ratio - 1.0 - log_ratio) ** 2) / jnp.sum(ratio**2)
