"""Task families: one JAX environment plus a stacked pytree of per-task parameters, and
Meta-World's MT10 stepped on the host (`MetaWorldFamily`; needs the `metaworld` extra only when
its envs are made), and brax's HalfCheetah/Ant (`brax_family`; needs the `brax` extra only when
a family is made)."""

from pgx_jax.envs.brax_family import brax_family
from pgx_jax.envs.cartpole import CARTPOLE_HALF_LENGTHS, cartpole_family
from pgx_jax.envs.family import TaskFamily
from pgx_jax.envs.highway import HIGHWAY_DENSITIES, Highway, highway_family
from pgx_jax.envs.lunar_lander import (
    LUNAR_LANDER_GRAVITIES,
    LunarLander,
    heuristic_action,
    lunar_lander_family,
)
from pgx_jax.envs.metaworld import MT10_TASKS, MetaWorldFamily

__all__ = ["CARTPOLE_HALF_LENGTHS", "HIGHWAY_DENSITIES", "Highway", "LUNAR_LANDER_GRAVITIES",
           "LunarLander", "MT10_TASKS", "MetaWorldFamily", "TaskFamily", "brax_family",
           "cartpole_family", "heuristic_action", "highway_family", "lunar_lander_family"]
