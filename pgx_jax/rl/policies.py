"""MLP policies in Flax linen whose `log_prob(params, obs, action)` plugs into `gradient_features`.

Each module maps observations f32[..., obs_dim] to the parameters of its action distribution;
`log_prob`, `sample` and `entropy` are closed forms that broadcast over leading batch axes (one
sample is the special case `gradient_features` needs). Modules are frozen dataclasses and hash by
value, so `policy.log_prob` is a valid static argument under `jit`.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def categorical_log_prob(logits: jax.Array, action: jax.Array) -> jax.Array:
    """log softmax(logits)[action]; logits: f32[..., A], action: int[...] → f32[...]."""
    log_p = jax.nn.log_softmax(logits)
    return jnp.take_along_axis(log_p, action[..., None].astype(jnp.int32), -1)[..., 0]


def diag_gaussian_log_prob(mean: jax.Array, log_std: jax.Array, action: jax.Array) -> jax.Array:
    """log N(action; mean, diag(exp(log_std)²)); f32[..., A] each → f32[...]."""
    z = (action - mean) * jnp.exp(-log_std)
    return -0.5 * jnp.sum(z**2, -1) - jnp.sum(log_std, -1) - 0.5 * mean.shape[-1] * math.log(
        2 * math.pi
    )


class MLP(nn.Module):
    """Dense layers with tanh between them: obs → f32[..., features[-1]]."""

    features: tuple[int, ...]

    last_layer_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        # Orthogonal init (√2 hidden; a small last layer keeps the initial policy near uniform),
        # the usual PPO choice.
        for i, width in enumerate(self.features):
            last = i == len(self.features) - 1
            scale = self.last_layer_scale if last else math.sqrt(2)
            x = nn.Dense(width, kernel_init=nn.initializers.orthogonal(scale))(x)
            if not last:
                x = jnp.tanh(x)
        return x


class CategoricalMLP(nn.Module):
    """Discrete policy: obs → logits f32[..., num_actions]."""

    num_actions: int
    hidden: tuple[int, ...] = (64, 64)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return MLP(self.hidden + (self.num_actions,), last_layer_scale=0.01)(obs)

    def log_prob(self, params, obs: jax.Array, action: jax.Array) -> jax.Array:
        """log π(action | obs): obs f32[..., obs_dim], action int[...] → f32[...]."""
        return categorical_log_prob(self.apply(params, obs), action)

    def sample(self, params, obs: jax.Array, key: jax.Array) -> jax.Array:
        """Actions int32[...] drawn from π(· | obs)."""
        return jax.random.categorical(key, self.apply(params, obs)).astype(jnp.int32)

    def mode(self, params, obs: jax.Array) -> jax.Array:
        """The most likely action int32[...]."""
        return jnp.argmax(self.apply(params, obs), -1).astype(jnp.int32)

    def entropy(self, params, obs: jax.Array) -> jax.Array:
        """Entropy of π(· | obs): f32[...]."""
        log_p = jax.nn.log_softmax(self.apply(params, obs))
        return -jnp.sum(jnp.exp(log_p) * log_p, -1)


class GaussianMLP(nn.Module):
    """Continuous policy: obs → (mean, log_std), each f32[..., action_dim], from one MLP head.

    The paper's MT10 policy is GaussianMLP(action_dim=4, hidden=(400, 400, 400)) on 39-dim
    observations: 39 → 400 → 400 → 400 → 8, 340,008 parameters.
    """

    action_dim: int
    hidden: tuple[int, ...] = (64, 64)

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = MLP(self.hidden + (2 * self.action_dim,), last_layer_scale=0.01)(obs)
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)

    def log_prob(self, params, obs: jax.Array, action: jax.Array) -> jax.Array:
        """log π(action | obs): obs f32[..., obs_dim], action f32[..., action_dim] → f32[...]."""
        mean, log_std = self.apply(params, obs)
        return diag_gaussian_log_prob(mean, log_std, action)

    def sample(self, params, obs: jax.Array, key: jax.Array) -> jax.Array:
        """Actions f32[..., action_dim] drawn from π(· | obs)."""
        mean, log_std = self.apply(params, obs)
        return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)

    def mode(self, params, obs: jax.Array) -> jax.Array:
        """The mean action f32[..., action_dim]."""
        return self.apply(params, obs)[0]

    def entropy(self, params, obs: jax.Array) -> jax.Array:
        """Entropy of π(· | obs): f32[...]."""
        _, log_std = self.apply(params, obs)
        return jnp.sum(log_std + 0.5 * math.log(2 * math.pi * math.e), -1)


class ValueMLP(nn.Module):
    """Critic: obs f32[..., obs_dim] → value f32[...]."""

    hidden: tuple[int, ...] = (64, 64)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return MLP(self.hidden + (1,))(obs)[..., 0]
