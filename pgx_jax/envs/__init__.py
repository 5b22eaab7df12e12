"""Task families: one JAX environment plus a stacked pytree of per-task parameters."""

from pgx_jax.envs.cartpole import CARTPOLE_HALF_LENGTHS, cartpole_family
from pgx_jax.envs.family import TaskFamily
from pgx_jax.envs.highway import HIGHWAY_DENSITIES, Highway, highway_family

__all__ = ["CARTPOLE_HALF_LENGTHS", "HIGHWAY_DENSITIES", "Highway", "TaskFamily", "cartpole_family",
           "highway_family"]
