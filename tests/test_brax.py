"""brax task families: the default task is brax's own env; rewards, physics, ends, bad input."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("brax")

from brax import envs as brax_envs  # noqa: E402

from pgx_jax.envs.brax_family import BraxEnvState, brax_family  # noqa: E402

BACKEND = "positional"  # the default backend (benchmarks/brax_envs.py); all share the adapter
STEPS = 8


def _actions(dim: int) -> jax.Array:
    return jax.random.uniform(jax.random.key(7), (STEPS, dim), minval=-1.0, maxval=1.0)


def _rollout(family, key):
    """(obs, reward, terminated, truncated, info) of all tasks in one vmap, each task's
    envs stepping the same random actions from reset(key): leaves [T, n, ...]."""
    env, params = family.env, family.params
    step = jax.vmap(env.step, in_axes=(None, 0, None, 0))
    _, state = jax.vmap(env.reset, in_axes=(None, 0))(key, params)

    def one(state, action):
        obs, state, reward, terminated, truncated, info = step(key, state, action, params)
        return state, (obs, reward, terminated, truncated, info)

    return jax.jit(lambda state: jax.lax.scan(one, state, _actions(family.action_dim)))(state)[1]


def _brax_rollout(env_name, key):
    """brax's own env from reset(key) under the same actions: (obs [T, d], State.metrics and
    reward stacked over T)."""
    env = brax_envs.get_environment(env_name, backend=BACKEND)

    def one(state, action):
        state = env.step(state, action)
        return state, (state.obs, state.reward, state.metrics)

    return jax.jit(lambda: jax.lax.scan(one, env.reset(key), _actions(env.action_size))[1])()


@pytest.fixture(scope="module")
def cheetah():
    """One 5-task family (one compile): task 0 is brax's default HalfCheetah; 1 runs backwards;
    2 has 2× gravity; 3 weighs run and control cost 0.3/0.7 and truncates after 3 steps; 4
    tracks 0.5 m/s with 0.5× gravity (per-task fields set on the params, as a family of target
    speeds sets them for all its tasks)."""
    family = brax_family("halfcheetah", backend=BACKEND,
                         directions=[[1, 0], [-1, 0], [1, 0], [1, 0], [1, 0]],
                         weights=[[1, 1], [1, 1], [1, 1], [0.3, 0.7], [1, 1]],
                         gravity_scales=[1, 1, 2, 1, 0.5])
    params = family.params.replace(
        target_speed=family.params.target_speed.at[4].set(0.5),
        tracks_speed=family.params.tracks_speed.at[4].set(True),
        max_steps_in_episode=family.params.max_steps_in_episode.at[3].set(3))
    family = dataclasses.replace(family, params=params)
    key = jax.random.key(3)
    return family, _rollout(family, key), _brax_rollout("halfcheetah", key)


def test_default_task_is_brax_own_env_and_every_task_steps_in_one_vmap(cheetah):
    family, (obs, reward, terminated, truncated, info), (brax_obs, brax_reward, metrics) = cheetah
    assert obs.shape == (STEPS, 5, family.obs_dim) and reward.shape == (STEPS, 5)
    np.testing.assert_allclose(obs[:, 0], brax_obs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reward[:, 0], brax_reward, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(info["reward_vector"][:, 0],
                               np.stack([metrics["reward_run"], metrics["reward_ctrl"]], 1),
                               rtol=1e-5, atol=1e-5)
    # The velocity the run term reads is brax's.
    np.testing.assert_allclose(info["velocity"][:, 0, 0], metrics["x_velocity"], rtol=1e-4,
                               atol=1e-5)
    assert not np.any(truncated[:, 0])


def test_direction_target_speed_and_weights_per_task(cheetah):
    family, (obs, reward, _, _, info), (_, _, metrics) = cheetah
    vector, x_velocity = np.asarray(info["reward_vector"]), np.asarray(metrics["x_velocity"])
    # Task 1 runs backwards: its run term is −x velocity, in the same dynamics as task 0.
    np.testing.assert_allclose(obs[:, 1], obs[:, 0], rtol=1e-6)
    np.testing.assert_allclose(vector[:, 1, 0], -x_velocity, rtol=1e-4, atol=1e-5)
    # Every task's reward is wᵀr.
    weights = np.asarray(family.params.weights)
    np.testing.assert_allclose(reward, np.einsum("tnc,nc->tn", vector, weights), rtol=1e-5,
                               atol=1e-6)
    # Task 4 tracks 0.5 m/s: run = −|v − 0.5| of its own velocity (under its own gravity).
    np.testing.assert_allclose(vector[:, 4, 0], -np.abs(np.asarray(info["velocity"])[:, 4, 0] - 0.5),
                               rtol=1e-5, atol=1e-6)


def test_gravity_scale_reaches_every_backend_field_and_the_trajectory(cheetah):
    family, (obs, *_), _ = cheetah
    gravity = np.array(family.env.brax_env.sys.gravity)  # copies, before any task env is made
    opt_gravity = np.array(family.env.brax_env.sys.opt.gravity)
    for task, scale in ((2, 2.0), (4, 0.5)):
        system = family.env.task_env(family.task_params(task)).sys
        np.testing.assert_allclose(system.gravity, scale * gravity)  # generalized/positional/spring
        np.testing.assert_allclose(system.opt.gravity, scale * opt_gravity)  # mjx
        assert np.abs(obs[-1, task] - obs[-1, 0]).max() > 1e-3  # other physics, other trajectory
    # The env's own System is untouched by the tasks' copies.
    np.testing.assert_array_equal(family.env.brax_env.sys.gravity, gravity)


def test_truncation_at_the_episode_limit_is_not_termination(cheetah):
    _, (obs, _, terminated, truncated, info), _ = cheetah
    assert truncated[:, 3].tolist() == [False, False, True, False, False, True, False, False]
    assert not np.any(terminated)
    # At the limit the env resets: the returned obs is a fresh start, the final one is kept.
    assert np.abs(info["final_observation"][2, 3] - obs[2, 3]).max() > 1e-3
    np.testing.assert_array_equal(info["final_observation"][1, 3], obs[1, 3])


def test_task_names_say_what_varies():
    family = brax_family("halfcheetah", backend=BACKEND, target_speeds=[0.5, 2.0],
                         gravity_scales=[1.0, 1.5], weights=[[1, 0.5], [1, 0.5]])
    assert family.names == ("v*=0.5,g×1", "v*=2,g×1.5")  # the weights are the same for both
    # Directions are compared after normalization: (1, 0) and (2, 0) are one direction.
    assert brax_family("halfcheetah", backend=BACKEND, directions=[[1, 0], [2, 0]],
                       target_speeds=[1, 2]).names == ("v*=1", "v*=2")
    assert brax_family("ant", backend=BACKEND, directions=[[np.cos(2.8212), np.sin(2.8212)]]
                       ).names == ("dir=161.6°",)


def test_ant_terminates_when_unhealthy_and_matches_brax():
    family = brax_family("ant", backend=BACKEND, directions=[[1, 0], [0, 1]], episode_length=50)
    key = jax.random.key(1)
    obs, reward, terminated, _, info = _rollout(family, key)
    brax_obs, brax_reward, metrics = _brax_rollout("ant", key)
    # Contacts amplify float rounding (vmapped vs not): 1e-3, not HalfCheetah's 1e-5.
    np.testing.assert_allclose(obs[:, 0], brax_obs, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(reward[:, 0], brax_reward, rtol=1e-3, atol=1e-3)
    # Direction +y: the run term is the y velocity.
    np.testing.assert_allclose(info["reward_vector"][:, 1, 0], metrics["y_velocity"], rtol=1e-3,
                               atol=1e-4)
    # Lifted above the healthy range (z ≤ 1): the next step terminates (not a truncation).
    env, params = family.env, family.task_params(0)
    task_env = env.task_env(params)
    q = task_env.sys.init_q.at[2].set(2.0)
    lifted = env.reset(key, params)[1]
    lifted = BraxEnvState(time=0, brax=lifted.brax.replace(
        pipeline_state=task_env.pipeline_init(q, jnp.zeros(task_env.sys.qd_size()))))
    _, _, _, terminated, truncated, _ = jax.jit(env.step)(key, lifted, jnp.zeros(8), params)
    assert bool(terminated) and not bool(truncated)


@pytest.mark.parametrize("kwargs, message", [
    ({"env_name": "walker"}, "task families exist for ['ant', 'halfcheetah']"),
    ({"backend": "warp"}, "choose one of ('generalized', 'positional', 'spring', 'mjx')"),
    ({"weights": [[1, 1, 1]]}, "['reward_run', 'reward_ctrl']"),
    ({"directions": [[0, 1]]}, "moves along x only"),
    ({"directions": [[1, 0]], "target_speeds": [1.0, 2.0]}, "has 2 tasks, the other settings 1"),
    ({"target_speeds": [[1.0]]}, "must have shape [n]"),
    ({"target_speeds": [-1.0]}, "must be >= 0"),
    ({"gravity_scales": [0.0]}, "must be > 0"),
    ({"weights": [[1, -1]]}, "weights must be >= 0"),
    ({"directions": [[1, 0]], "names": ("a", "b")}, "names has 2 entries for 1 tasks"),
    ({"directions": [[1, 0]], "mass_scales": [2.0]}, "no setting ['mass_scales']; per-task "
     "settings: ['directions', 'target_speeds', 'weights', 'gravity_scales']"),
    ({"directions": [[1, 0]], "episode_length": True}, "positive int"),
    ({"directions": [[0, 0]]}, "zero vector"),
    ({"directions": [[1, 0]], "episode_length": 0}, "positive int"),
    ({}, "at least one per-task setting"),
])
def test_bad_input(kwargs, message):
    kwargs = {"env_name": "halfcheetah", **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        brax_family(kwargs.pop("env_name"), **kwargs)


def test_brax_family_is_exported_from_pgx_jax_envs():
    import pgx_jax.envs

    assert pgx_jax.envs.brax_family is brax_family
