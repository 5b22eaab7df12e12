"""Task families: one JAX environment plus a stacked pytree of per-task parameters."""

from pgx_jax.envs.cartpole import CARTPOLE_HALF_LENGTHS, cartpole_family
from pgx_jax.envs.family import TaskFamily
from pgx_jax.envs.highway import HIGHWAY_DENSITIES, Highway, highway_family
from pgx_jax.envs.lunar_lander import (
    LUNAR_LANDER_GRAVITIES,
    LunarLander,
    heuristic_action,
    lunar_lander_family,
)

__all__ = ["CARTPOLE_HALF_LENGTHS", "HIGHWAY_DENSITIES", "Highway", "LUNAR_LANDER_GRAVITIES",
           "LunarLander", "TaskFamily", "cartpole_family", "heuristic_action", "highway_family",
           "lunar_lander_family"]
