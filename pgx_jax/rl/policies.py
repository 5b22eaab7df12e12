"""MLP policies in Flax linen whose `log_prob(params, obs, action)` plugs into `gradient_features`.

Each module maps ONE observation f32[obs_dim] (or a batch [B, obs_dim]) to the parameters of its
action distribution; `log_prob` is the closed-form log-density of one action. Modules are frozen
dataclasses and hash by value, so `policy.log_prob` is a valid static argument under `jit`.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def categorical_log_prob(logits: jax.Array, action: jax.Array) -> jax.Array:
    """log softmax(logits)[action]; logits: f32[A], action: int[]."""
    return jax.nn.log_softmax(logits)[action]


def diag_gaussian_log_prob(mean: jax.Array, log_std: jax.Array, action: jax.Array) -> jax.Array:
    """log N(action; mean, diag(exp(log_std)²)); all f32[A] → f32[]."""
    z = (action - mean) * jnp.exp(-log_std)
    return -0.5 * jnp.sum(z**2) - jnp.sum(log_std) - 0.5 * mean.shape[-1] * math.log(2 * math.pi)


class MLP(nn.Module):
    """Dense layers with tanh between them: obs → f32[..., features[-1]]."""

    features: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, width in enumerate(self.features):
            x = nn.Dense(width)(x)
            if i < len(self.features) - 1:
                x = jnp.tanh(x)
        return x


class CategoricalMLP(nn.Module):
    """Discrete policy: obs → logits f32[..., num_actions]."""

    num_actions: int
    hidden: tuple[int, ...] = (64, 64)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return MLP(self.hidden + (self.num_actions,))(obs)

    def log_prob(self, params, obs: jax.Array, action: jax.Array) -> jax.Array:
        """log π(action | obs) for one sample: obs f32[obs_dim], action int[] → f32[]."""
        return categorical_log_prob(self.apply(params, obs), action)


class GaussianMLP(nn.Module):
    """Continuous policy: obs → (mean, log_std), each f32[..., action_dim], from one MLP head.

    The paper's MT10 policy is GaussianMLP(action_dim=4, hidden=(400, 400, 400)) on 39-dim
    observations: 39 → 400 → 400 → 400 → 8, 340,008 parameters.
    """

    action_dim: int
    hidden: tuple[int, ...] = (64, 64)

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = MLP(self.hidden + (2 * self.action_dim,))(obs)
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)

    def log_prob(self, params, obs: jax.Array, action: jax.Array) -> jax.Array:
        """log π(action | obs) for one sample: obs f32[obs_dim], action f32[action_dim] → f32[]."""
        mean, log_std = self.apply(params, obs)
        return diag_gaussian_log_prob(mean, log_std, action)
