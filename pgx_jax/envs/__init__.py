"""Task families: one JAX environment plus a stacked pytree of per-task parameters."""

from pgx_jax.envs.cartpole import CARTPOLE_HALF_LENGTHS, cartpole_family
from pgx_jax.envs.family import TaskFamily

__all__ = ["CARTPOLE_HALF_LENGTHS", "TaskFamily", "cartpole_family"]
