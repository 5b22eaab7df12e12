"""The paper's CartPole family: gymnax CartPole-v1 with 10 pole lengths."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from pgx_jax.envs.family import TaskFamily

# Half pole lengths in metres (gymnax/Gymnasium `length` is HALF the pole; default 0.5). The
# paper varies the pole length without listing values; these span 0.15 m to 2.4 m geometrically,
# all balanceable by one policy, with short poles (fast dynamics) the hardest.
CARTPOLE_HALF_LENGTHS = tuple(float(x) for x in np.round(np.geomspace(0.15, 2.4, 10), 3))


def cartpole_family(half_lengths=CARTPOLE_HALF_LENGTHS) -> TaskFamily:
    """CartPole-v1 tasks that differ in pole half-length.

    gymnax stores `polemass_length` and `total_mass` instead of deriving them, so both are set
    here from `masspole`, `masscart` and the length.
    """
    import gymnax  # needs `six`, a dependency gymnax does not declare

    half_lengths = np.asarray(half_lengths, dtype=np.float32).reshape(-1)
    if half_lengths.size == 0 or not np.all(np.isfinite(half_lengths)) or np.any(half_lengths <= 0):
        raise ValueError(f"half_lengths must be positive and finite, got {half_lengths.tolist()}")
    env, default = gymnax.make("CartPole-v1")
    n = half_lengths.size

    def stack(value):
        return jnp.full((n,), value, dtype=jnp.asarray(value).dtype)

    params = type(default)(**{
        name: stack(getattr(default, name)) for name in default.__dataclass_fields__
    }).replace(
        length=jnp.asarray(half_lengths),
        polemass_length=jnp.asarray(default.masspole * half_lengths, jnp.float32),
        total_mass=stack(default.masspole + default.masscart),
    )
    return TaskFamily(
        env=env,
        params=params,
        names=tuple(f"half_length={x:g}" for x in half_lengths),
        discrete=True,
        action_dim=2,
        obs_dim=4,
    )
