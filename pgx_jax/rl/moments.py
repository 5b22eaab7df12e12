"""Running observation statistics, shared by the jitted PPO (`ppo`) and the host PPO (`host`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

OBS_CLIP = 10.0


@struct.dataclass
class RunningMoments:
    """Running mean and variance of a stream of vectors (Chan et al.'s parallel update).

    Attributes: mean f32[...], var f32[...], count f32[] (a tiny prior count avoids 0/0).
    """

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def create(cls, shape=()) -> "RunningMoments":
        return cls(mean=jnp.zeros(shape), var=jnp.ones(shape), count=jnp.float32(1e-4))

    def update(self, batch: jax.Array) -> "RunningMoments":
        """Adds the rows of `batch` f32[..., *shape] (all leading axes are samples)."""
        rows = batch.reshape((-1,) + self.mean.shape)
        count = rows.shape[0]
        mean, var = rows.mean(0), rows.var(0)
        total = self.count + count
        delta = mean - self.mean
        new_mean = self.mean + delta * count / total
        m2 = self.var * self.count + var * count + delta**2 * self.count * count / total
        return RunningMoments(mean=new_mean, var=m2 / total, count=total)

    def normalize(self, x: jax.Array) -> jax.Array:
        """clip((x − μ) / √(σ² + 1e-8), ±OBS_CLIP), broadcasting over leading axes."""
        return jnp.clip((x - self.mean) / jnp.sqrt(self.var + 1e-8), -OBS_CLIP, OBS_CLIP)
