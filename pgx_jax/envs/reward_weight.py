"""Multi-objective task families: a task is a weight vector w, its reward wᵀr (MO-Gymnasium's
convention), over an environment that reports a reward vector r in `info["reward_vector"]`."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment

from pgx_jax.envs.family import TaskFamily


@struct.dataclass
class WeightedParams:
    """The inner environment's params and this task's objective weights f32[objectives]."""

    env: Any
    weights: jax.Array

    @property
    def max_steps_in_episode(self):
        return self.env.max_steps_in_episode


class RewardWeighted(environment.Environment):
    """`env` with the scalar reward wᵀr, r = the inner step's `info["reward_vector"]`.

    Observations, dynamics and ends are the inner env's; the info keeps the reward vector and
    adds the inner scalar reward as `info["original_reward"]` (as MO-Gymnasium does).
    """

    def __init__(self, env):
        super().__init__()
        if not hasattr(env, "reward_dim"):
            raise ValueError(f"{type(env).__name__} reports no reward vector (no `reward_dim`)")
        self.env = env
        self.reward_dim = env.reward_dim

    def __hash__(self):  # jit's static `self`: one wrapper per inner env
        return hash((type(self), self.env))

    def __eq__(self, other):
        return type(other) is type(self) and other.env == self.env

    @property
    def default_params(self) -> WeightedParams:
        return WeightedParams(self.env.default_params, jnp.ones(self.reward_dim, jnp.float32))

    def step_env(self, key, state, action, params: WeightedParams):
        obs, state, original, terminated, info = self.env.step_env(key, state, action, params.env)
        reward = jnp.dot(params.weights, info["reward_vector"])
        return obs, state, reward.astype(jnp.float32), terminated, {**info, "original_reward": original}

    def reset_env(self, key, params: WeightedParams):
        return self.env.reset_env(key, params.env)

    def get_obs(self, state, params=None, key=None):
        return self.env.get_obs(state, None if params is None else params.env, key)

    def is_terminated(self, state, params: WeightedParams):
        return self.env.is_terminated(state, params.env)

    def is_truncated(self, state, params: WeightedParams):
        return self.env.is_truncated(state, params.env)

    @property
    def name(self) -> str:
        return f"RewardWeighted({self.env.name})"

    @property
    def num_actions(self) -> int:
        return self.env.num_actions

    def action_space(self, params=None):
        return self.env.action_space(None if params is None else params.env)

    def observation_space(self, params):
        return self.env.observation_space(params.env)


def reward_weight_family(family: TaskFamily, weights, names=None) -> TaskFamily:
    """n tasks from an [n, objectives] array of weights over `family`'s reward vector.

    Task i steps `family`'s task i (or its only task, when it has one) with reward wᵢᵀr.

    Args:
      family: a TaskFamily whose env reports `info["reward_vector"]` (LunarLander, highway).
      weights: f[n, objectives], finite, ≥ 0, no all-zero row.
      names: n task names (default "w=(w₀,w₁,…)").

    Raises:
      ValueError: on weights of the wrong shape, negative, all zero or non-finite; a family of
        neither 1 nor n tasks; an env without a reward vector.
    """
    env = RewardWeighted(family.env)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] != env.reward_dim or weights.shape[0] == 0:
        raise ValueError(f"weights must be [n, {env.reward_dim}] (one weight per objective of "
                         f"{family.env.name}), got shape {weights.shape}")
    if not np.all(np.isfinite(weights)):
        raise ValueError("weights contain NaN or inf")
    if np.any(weights < 0):
        raise ValueError(f"weights must be >= 0, got a minimum of {weights.min():g}")
    zero = np.flatnonzero(~weights.any(axis=1))
    if zero.size:
        raise ValueError(f"weight rows {zero.tolist()} are all zero (no objective)")
    n = weights.shape[0]
    if family.num_tasks not in (1, n):
        raise ValueError(f"family has {family.num_tasks} tasks; it needs 1 (shared by all "
                         f"weights) or {n} (one per weight row)")
    inner = family.params if family.num_tasks == n else jax.tree_util.tree_map(
        lambda leaf: jnp.repeat(leaf, n, axis=0), family.params)
    if names is None:
        names = tuple("w=(" + ",".join(f"{x:.3g}" for x in row) + ")" for row in weights)
    return dataclasses.replace(
        family, env=env, params=WeightedParams(inner, jnp.asarray(weights, jnp.float32)),
        names=tuple(names))


def planted_weights(seed: int, centres, sizes, spread: float = 0.05) -> np.ndarray:
    """Weight vectors in groups around `centres`: f64[sum(sizes), objectives], each row on the
    simplex. Row i of group c is centre c plus Gaussian noise of std `spread`, clipped at 0
    and renormalized; rows are in group order (the planted groups are [0]·size₀ + [1]·size₁ …).
    """
    centres = np.asarray(centres, dtype=np.float64)
    rng = np.random.default_rng(seed)
    rows = []
    for centre, size in zip(centres, sizes):
        draw = np.clip(centre / centre.sum() + spread * rng.normal(size=(size, centre.size)),
                       1e-3, None)
        rows.append(draw / draw.sum(1, keepdims=True))
    return np.concatenate(rows)
