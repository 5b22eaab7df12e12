"""The CartPole task family against gymnax CartPole stepped alone."""

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax.envs import CARTPOLE_HALF_LENGTHS, TaskFamily, cartpole_family


def test_vmapped_family_equals_each_task_stepped_alone():
    family = cartpole_family()
    env, default = gymnax.make("CartPole-v1")
    keys = jax.random.split(jax.random.key(0), family.num_tasks)
    actions = jax.random.randint(jax.random.key(1), (40,), 0, 2)
    reset = jax.vmap(family.env.reset)
    step = jax.jit(jax.vmap(family.env.step, in_axes=(0, 0, None, 0)))
    obs, state = reset(keys, family.params)
    trajectories = []
    for t in range(40):
        obs, state, reward, terminated, truncated, _ = step(
            jax.random.split(jax.random.key(t + 2), family.num_tasks), state, actions[t], family.params
        )
        trajectories.append(obs)
    batched = np.stack(trajectories, 1)  # [n, T, 4]
    for i, half_length in enumerate(CARTPOLE_HALF_LENGTHS):
        params = default.replace(length=half_length, polemass_length=default.masspole * half_length)
        obs_i, state_i = env.reset(keys[i], params)
        for t in range(40):
            step_keys = jax.random.split(jax.random.key(t + 2), family.num_tasks)
            obs_i, state_i, *_ = env.step(step_keys[i], state_i, actions[t], params)
            np.testing.assert_allclose(batched[i, t], obs_i, rtol=1e-5, atol=1e-6)


def test_pole_length_changes_dynamics_in_the_expected_direction():
    """The angular acceleration scales like 1/length: a shorter pole reacts faster."""
    family = cartpole_family()
    _, state = family.env.reset(jax.random.key(0), family.task_params(0))
    state = state.replace(theta=jnp.float32(0.05), theta_dot=jnp.float32(0.0), x=0.0, x_dot=0.0)
    step = jax.vmap(family.env.step_env, in_axes=(None, None, None, 0))
    _, after, *_ = step(jax.random.key(1), state, 1, family.params)
    angular_speed = np.abs(np.asarray(after.theta_dot))
    assert np.all(np.diff(angular_speed) < 0), angular_speed  # half-lengths increase
    assert angular_speed[0] > 10 * angular_speed[-1]


def test_family_parameters_and_validation():
    family = cartpole_family((0.25, 1.0))
    np.testing.assert_allclose(family.params.polemass_length, [0.025, 0.1])
    np.testing.assert_allclose(family.params.total_mass, [1.1, 1.1])
    assert family.subset([1]).names == ("half_length=1",)
    with pytest.raises(ValueError, match="positive"):
        cartpole_family((0.5, -1.0))
    with pytest.raises(ValueError, match="task_ids"):
        family.subset([2])
    with pytest.raises(ValueError, match="leading task axis"):
        TaskFamily(family.env, family.params, ("a", "b", "c"), True, 2, 4)
