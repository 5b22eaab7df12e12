"""Synthetic surrogate features with planted task groups, for demos, tests and benchmarks.

Tasks in the same group share a "true" adaptation direction θ_g, so fitting them together is
easy and mixing groups hurts: the estimated affinity should recover the groups.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax.features import labels_and_weights
from pgx_jax.types import Features


def planted_groups(num_tasks: int, num_groups: int) -> np.ndarray:
    """int32[n]: task i is in group i mod k (groups as even as possible)."""
    if not 1 <= num_groups <= num_tasks:
        raise ValueError(f"need 1 <= num_groups <= num_tasks, got {num_groups}, {num_tasks}")
    return (np.arange(num_tasks) % num_groups).astype(np.int32)


def planted_features(
    key: jax.Array,
    groups,
    samples_per_task: int = 2048,
    dim: int = 400,
    noise: float = 1.0,
    decay: float = 0.5,
) -> Features:
    """Features whose advantages follow a per-group linear model of the gradient features.

    z_t ~ N(0, diag(k^-decay)) (gradient features have a decaying spectrum), and
    Â_t = z_tᵀ θ_{g(t)} + noise·ε with θ_g ~ N(0, I/d) drawn per group, y = sign(Â), w = |Â|.

    Args:
      key: PRNG key.
      groups: int[n] planted group of every task.
      samples_per_task: samples of each task (tasks are interleaved in the batch).
      dim: feature dimension d.
      noise: advantage noise scale.
      decay: spectrum decay exponent of the feature covariance.

    Returns:
      Features with N = n · samples_per_task samples.
    """
    groups = np.asarray(groups)
    num_tasks, num_groups = groups.shape[0], int(groups.max()) + 1
    key_z, key_theta, key_noise = jax.random.split(key, 3)
    num = num_tasks * samples_per_task
    scale = jnp.arange(1, dim + 1, dtype=jnp.float32) ** (-decay / 2)
    z = jax.random.normal(key_z, (num, dim)) * scale
    theta = jax.random.normal(key_theta, (num_groups, dim)) / jnp.sqrt(dim) / scale
    task = jnp.tile(jnp.arange(num_tasks, dtype=jnp.int32), samples_per_task)
    advantage = jnp.sum(z * theta[groups[task]], -1) + noise * jax.random.normal(key_noise, (num,))
    y, w = labels_and_weights(advantage)
    return Features(z=z, y=y, w=w, task=task)


def policy_gradient_batch(
    key: jax.Array,
    groups,
    samples_per_task: int = 2048,
    obs_dim: int = 8,
    num_actions: int = 4,
    hidden: tuple[int, ...] = (64, 64),
    noise: float = 0.5,
):
    """A categorical MLP policy and transitions whose advantages follow planted task groups.

    Task i draws observations around its own mean μ_i; actions are sampled from the policy;
    the advantage is tanh(obsᵀ u_{g(i), a}) + noise·ε with one direction per (group, action), so
    tasks of one group reward the same behaviour. Feeding this to `gradient_features` gives real
    per-sample log-π gradients (their spectrum decays like a trained policy's does), unlike
    `planted_features`.

    Returns:
      (policy: CategoricalMLP, params, batch: Transitions with N = n · samples_per_task).
    """
    from pgx_jax.rl.policies import CategoricalMLP
    from pgx_jax.types import Transitions

    groups = jnp.asarray(groups)
    num_tasks, num_groups = groups.shape[0], int(groups.max()) + 1
    keys = jax.random.split(key, 6)
    policy = CategoricalMLP(num_actions=num_actions, hidden=hidden)
    params = policy.init(keys[0], jnp.zeros(obs_dim))
    task = jnp.tile(jnp.arange(num_tasks, dtype=jnp.int32), samples_per_task)
    centers = jax.random.normal(keys[1], (num_tasks, obs_dim))
    obs = centers[task] + jax.random.normal(keys[2], (task.shape[0], obs_dim))
    action = jax.random.categorical(keys[3], policy.apply(params, obs))
    directions = jax.random.normal(keys[4], (num_groups, num_actions, obs_dim))
    advantage = jnp.tanh(jnp.sum(obs * directions[groups[task], action], -1))
    advantage = advantage + noise * jax.random.normal(keys[5], advantage.shape)
    return policy, params, Transitions(obs=obs, action=action, advantage=advantage, task=task)
