"""The JAX lunar lander: API, reward formula, episode rules, gravity, a heuristic landing, and
(when Box2D is installed) a cross-check against Gymnasium's LunarLander-v3."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax.envs import TaskFamily
from pgx_jax.envs.lunar_lander import (
    DT,
    HELIPAD_Y,
    LUNAR_LANDER_GRAVITIES,
    MAX_STEPS,
    REST_HEIGHT,
    SLEEP_STEPS,
    EnvParams,
    LunarLander,
    heuristic_action,
    lunar_lander_family,
)

ENV = LunarLander()
PARAMS = ENV.default_params
PAD = 0.99 * HELIPAD_Y  # Gymnasium's pad surface: 0.33·(3 · H/4)
FLAT = np.full(11, PAD, np.float32)
FUEL = {0: 0.0, 1: 0.03, 2: 0.3, 3: 0.03}
step_env = jax.jit(ENV.step_env)


def numpy_shaping(obs):
    """Gymnasium's potential, written out independently of the module."""
    obs = np.asarray(obs, np.float64)
    return (
        -100 * np.hypot(obs[0], obs[1]) - 100 * np.hypot(obs[2], obs[3]) - 100 * abs(obs[4])
        + 10 * obs[6] + 10 * obs[7]
    )


def make_state(**fields):
    """A reset state with `fields` replaced (same dtypes, so jitted steps are not recompiled);
    unless given, `prev_shaping` is the potential of the new state's own observation."""
    _, base = ENV.reset(jax.random.key(0), PARAMS)
    state = base.replace(**{k: jnp.asarray(v, getattr(base, k).dtype) for k, v in fields.items()})
    if "prev_shaping" not in fields:
        state = state.replace(prev_shaping=jnp.float32(numpy_shaping(ENV.get_obs(state))))
    return state


def resting(**fields):
    """The lander standing still on extended legs in the middle of a flat ground."""
    defaults = dict(
        x=10.0, y=PAD + REST_HEIGHT, vx=0.0, vy=0.0, angle=0.0, ang_vel=0.0,
        fold0=0.0, fold1=0.0, contact0=1.0, contact1=1.0, terrain=FLAT,
    )
    return make_state(**{**defaults, **fields})


def flying(**fields):
    """The lander high above the ground, legs extended, no contact."""
    defaults = dict(x=10.0, y=10.0, vx=0.3, vy=-1.0, angle=0.1, ang_vel=0.2, fold0=0.0, fold1=0.0)
    return make_state(**{**defaults, **fields})


def test_reset_and_step_shapes_and_dtypes():
    obs, state = ENV.reset(jax.random.key(1), PARAMS)
    assert obs.shape == (8,) and obs.dtype == jnp.float32
    assert state.terrain.shape == (11,) and state.time.dtype == jnp.int32
    np.testing.assert_allclose(obs[6:], 0.0)
    assert 1.35 < float(obs[1]) < 1.45  # starts at the top of the screen
    obs, state, reward, terminated, truncated, info = ENV.step(jax.random.key(2), state, 2, PARAMS)
    assert obs.shape == (8,) and obs.dtype == jnp.float32
    assert reward.shape == () and reward.dtype == jnp.float32
    assert terminated.dtype == jnp.bool_ and truncated.dtype == jnp.bool_
    assert set(info) >= {"discount", "terminated", "truncated", "final_observation"}
    assert info["final_observation"].shape == (8,)
    assert int(state.time) == 1
    assert ENV.num_actions == 4 and ENV.observation_space(PARAMS).shape == (8,)


def test_family_jit_and_vmap_over_gravities():
    family = lunar_lander_family()
    assert isinstance(family, TaskFamily)
    assert family.num_tasks == 10 and family.discrete and family.action_dim == 4 and family.obs_dim == 8
    assert family.names[0] == "gravity=-11.5" and family.names[-1] == "gravity=-2"
    np.testing.assert_allclose(family.params.gravity, LUNAR_LANDER_GRAVITIES)
    n, envs = family.num_tasks, 3
    keys = jax.random.split(jax.random.key(3), (n, envs))
    # [task, env]: tasks map over params, envs share them (as PPO's rollout does).
    reset = jax.jit(jax.vmap(jax.vmap(family.env.reset, in_axes=(0, None))))
    step = jax.jit(jax.vmap(jax.vmap(family.env.step, in_axes=(0, 0, 0, None))))
    obs, state = reset(keys, family.params)
    assert obs.shape == (n, envs, 8)
    for t in range(5):
        actions = jax.random.randint(jax.random.key(10 + t), (n, envs), 0, 4)
        obs, state, reward, terminated, truncated, info = step(
            jax.random.split(jax.random.key(20 + t), (n, envs)), state, actions, family.params
        )
    assert obs.shape == (n, envs, 8) and reward.shape == (n, envs)
    assert info["final_observation"].shape == (n, envs, 8)
    assert np.all(np.isfinite(np.asarray(obs)))
    assert family.subset([1, 9]).names == (family.names[1], "gravity=-2")


def test_family_rejects_bad_gravities():
    with pytest.raises(ValueError, match="between -12.0 and 0.0"):
        lunar_lander_family((-10.0, 0.0))
    with pytest.raises(ValueError, match="between"):
        lunar_lander_family((-12.0,))
    with pytest.raises(ValueError, match="between"):
        lunar_lander_family((-5.0, float("nan")))
    with pytest.raises(ValueError, match="between"):
        lunar_lander_family((3.0,))
    with pytest.raises(ValueError, match="empty"):
        lunar_lander_family(())


def test_reward_is_shaping_difference_minus_fuel_for_each_action():
    prev = 12.5  # an arbitrary previous potential: the reward must be exactly the difference
    for action, fuel in FUEL.items():
        state = flying(prev_shaping=prev)
        obs, after, reward, terminated, _ = step_env(jax.random.key(action), state, action, PARAMS)
        assert not bool(terminated)
        expected = numpy_shaping(obs) - prev - fuel
        np.testing.assert_allclose(float(reward), expected, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(float(after.prev_shaping), numpy_shaping(obs), rtol=1e-6, atol=1e-4)


def test_reward_between_two_hand_made_states():
    """Two steps from hand-set states A → B: the reward is S(B) − S(A)."""
    a = flying(x=12.0, y=6.0, vx=-0.5, vy=-0.8, angle=-0.2, ang_vel=0.0)
    obs_a = np.asarray(ENV.get_obs(a))
    expected = [0.2, (6.0 - HELIPAD_Y - 0.6) / (20 / 3), -0.1, -0.8 * 2 / 15, -0.2]
    np.testing.assert_allclose(obs_a[:5], expected, rtol=1e-5)
    a = a.replace(prev_shaping=jnp.float32(numpy_shaping(obs_a)))
    obs_b, _, reward, _, _ = step_env(jax.random.key(5), a, 0, PARAMS)
    np.testing.assert_allclose(float(reward), numpy_shaping(obs_b) - numpy_shaping(obs_a), atol=1e-4)


def test_leg_contacts_add_ten_points_each():
    state = resting(prev_shaping=0.0)
    obs, _, reward, terminated, _ = step_env(jax.random.key(6), state, 0, PARAMS)
    assert not bool(terminated)
    np.testing.assert_array_equal(np.asarray(obs[6:]), [1.0, 1.0])
    # At rest on the pad centre the potential is the two contacts (+20) minus a hair of offset.
    np.testing.assert_allclose(float(reward), numpy_shaping(obs), atol=1e-4)
    assert 19.0 < float(reward) <= 20.0


def test_landing_at_rest_gives_plus_100_after_sleep_time():
    state = resting()
    step = None
    for t in range(SLEEP_STEPS + 5):
        obs, state, reward, terminated, _ = step_env(jax.random.key(t), state, 0, PARAMS)
        if bool(terminated):
            step = t + 1
            break
        assert abs(float(reward)) < 0.1  # standing still: the potential barely changes
    assert step == SLEEP_STEPS  # Box2D puts a body to sleep after 0.5 s = 25 steps at rest
    assert float(reward) == 100.0
    np.testing.assert_allclose(np.asarray(obs[2:4]), 0.0)  # velocities zeroed, as Box2D does
    np.testing.assert_allclose(np.asarray(obs[5]), 0.0)
    # One step before, only the counter differs: the same state is not yet terminal.
    assert not bool(ENV.is_terminated(state.replace(rest_steps=jnp.int32(SLEEP_STEPS - 1)), PARAMS))
    assert bool(ENV.is_terminated(state, PARAMS))


def test_firing_keeps_the_lander_awake():
    state = resting(rest_steps=SLEEP_STEPS - 1)
    _, after, reward, terminated, _ = step_env(jax.random.key(7), state, 2, PARAMS)
    assert not bool(terminated) and int(after.rest_steps) == 0


@pytest.mark.parametrize("angle,height", [(0.0, 0.2), (np.pi, 0.5), (np.pi / 2, 0.45)])
def test_hull_touching_the_ground_is_a_crash(angle, height):
    state = resting(y=PAD + height, angle=angle)
    _, _, reward, terminated, _ = step_env(jax.random.key(8), state, 0, PARAMS)
    assert bool(terminated) and float(reward) == -100.0


def test_hard_landing_folds_the_legs_until_the_hull_crashes():
    state = resting(y=PAD + REST_HEIGHT + 0.05, vy=-5.0, contact0=0.0, contact1=0.0)
    folds = []
    for t in range(20):
        _, state, reward, terminated, _ = step_env(jax.random.key(t), state, 0, PARAMS)
        if bool(terminated):
            break
        folds.append(float(state.fold0))
    assert bool(terminated) and float(reward) == -100.0
    assert max(folds) > 0.2  # the legs gave way first


def test_soft_landing_does_not_fold_much_and_lands():
    state = resting(y=PAD + REST_HEIGHT + 0.05, vy=-0.5, contact0=0.0, contact1=0.0)
    for t in range(60):
        _, state, reward, terminated, _ = step_env(jax.random.key(t), state, 0, PARAMS)
        assert float(state.fold0) < 0.05
        if bool(terminated):
            break
    assert bool(terminated) and float(reward) == 100.0


@pytest.mark.parametrize("x,vx", [(19.98, 3.0), (0.02, -3.0)])
def test_leaving_the_screen_sideways_is_a_crash(x, vx):
    state = flying(x=x, vx=vx, vy=0.0, angle=0.0, ang_vel=0.0)
    obs, _, reward, terminated, _ = step_env(jax.random.key(9), state, 0, PARAMS)
    assert abs(float(obs[0])) >= 1.0
    assert bool(terminated) and float(reward) == -100.0


def test_truncation_at_the_time_limit_and_automatic_reset():
    key = jax.random.key(11)
    state = flying(time=MAX_STEPS - 2)
    _, state, _, terminated, truncated, _ = ENV.step(key, state, 0, PARAMS)
    assert not bool(truncated) and not bool(terminated) and int(state.time) == MAX_STEPS - 1
    obs, state, _, terminated, truncated, info = ENV.step(key, state, 0, PARAMS)
    assert bool(truncated) and not bool(terminated)
    assert int(state.time) == 0 and 1.35 < float(obs[1]) < 1.45  # a fresh episode
    assert 0.85 < float(info["final_observation"][1]) < 0.95  # the last frame of the old one


def test_automatic_reset_reports_the_final_observation():
    key = jax.random.key(12)
    crash = resting(y=PAD + 0.2)
    obs, state, reward, terminated, truncated, info = ENV.step(key, crash, 0, PARAMS)
    assert bool(terminated) and not bool(truncated) and float(reward) == -100.0
    key_step, key_reset = jax.random.split(key)  # gymnax's base `step`
    final_obs, *_ = step_env(key_step, crash, 0, PARAMS)
    reset_obs, reset_state = ENV.reset(key_reset, PARAMS)
    np.testing.assert_allclose(info["final_observation"], final_obs)
    np.testing.assert_allclose(obs, reset_obs)
    np.testing.assert_allclose(state.terrain, reset_state.terrain)
    assert int(state.time) == 0 and float(info["discount"]) == 0.0


def test_stronger_gravity_falls_faster():
    gravities = jnp.asarray([-11.5, -10.0, -6.0, -2.0], jnp.float32)
    params = EnvParams(gravity=gravities, swap_side_engines=jnp.zeros(4, bool),
                       max_steps_in_episode=jnp.full(4, MAX_STEPS, jnp.int32))
    step = jax.jit(jax.vmap(ENV.step_env, in_axes=(None, 0, None, 0)))
    state = jax.tree.map(lambda leaf: jnp.stack([leaf] * 4), flying(vx=0.0, vy=0.0, angle=0.0, ang_vel=0.0))
    k = 20
    for t in range(k):
        obs, state, *_ = step(jax.random.key(t), state, 0, params)
    vy = np.asarray(state.vy)
    assert np.all(np.diff(vy) > 0)  # |g| decreases along the batch
    np.testing.assert_allclose(vy, np.asarray(gravities) * k * DT, rtol=1e-4)  # free fall


def test_heuristic_controller_lands_at_default_gravity():
    n = 16

    def episode(key):
        key_reset, key_steps = jax.random.split(key)
        obs, state = ENV.reset(key_reset, PARAMS)

        def body(carry, step_key):
            obs, state, total, done, landed = carry
            obs, state, reward, terminated, truncated, _ = ENV.step(
                step_key, state, heuristic_action(obs), PARAMS
            )
            total = total + jnp.where(done, 0.0, reward)
            landed = landed | (~done & terminated & (reward == 100.0))
            return (obs, state, total, done | terminated | truncated, landed), None

        init = (obs, state, jnp.float32(0.0), jnp.bool_(False), jnp.bool_(False))
        (_, _, total, done, landed), _ = jax.lax.scan(body, init, jax.random.split(key_steps, MAX_STEPS))
        return total, done, landed

    total, done, landed = jax.jit(jax.vmap(episode))(jax.random.split(jax.random.key(2024), n))
    assert np.all(np.asarray(done))
    assert float(np.mean(total)) > 200.0, np.asarray(total)
    assert int(np.sum(landed)) >= 12, np.asarray(total)


def test_materialize_returns_its_inputs_exactly():
    """`_materialize` (a performance device: a product with the identity) must not round."""
    from pgx_jax.envs.lunar_lander import _materialize

    rng = np.random.default_rng(0)
    values = [
        (rng.standard_normal(256) * 10.0 ** rng.integers(-30, 30, 256)).astype(np.float32) for _ in range(3)
    ]
    out = jax.jit(jax.vmap(_materialize))(*(jnp.asarray(v) for v in values))
    for given, returned in zip(values, out):
        np.testing.assert_array_equal(np.asarray(returned), given)


def test_heuristic_action_is_batched_and_follows_the_rules():
    obs = jnp.zeros((4, 8), jnp.float32)
    obs = obs.at[0, 1].set(-0.5)  # low: main engine
    obs = obs.at[1, 1].set(0.5).at[1, 4].set(0.5)  # tilted left (ccw) and high: turn clockwise (3)
    obs = obs.at[2, 1].set(0.5).at[2, 4].set(-0.5)  # tilted right: turn counter-clockwise (1)
    obs = obs.at[3, 1].set(0.5).at[3, 6].set(1.0)  # touching, not falling: nothing
    np.testing.assert_array_equal(np.asarray(heuristic_action(obs)), [2, 3, 1, 0])


# --- Against Gymnasium's Box2D LunarLander-v3 (needs `pip install box2d`) --------------------


def _gym_env():
    pytest.importorskip("Box2D")
    gym = pytest.importorskip("gymnasium")
    return gym.make("LunarLander-v3")


def test_reset_observations_match_gymnasium_ranges():
    env = _gym_env()
    theirs = np.array([env.reset(seed=seed)[0] for seed in range(100)])
    keys = jax.random.split(jax.random.key(0), 500)
    ours = np.asarray(jax.vmap(ENV.reset, in_axes=(0, None))(keys, PARAMS)[0])
    # Same support per coordinate (x, y, vx, vy, angle, angular velocity; contacts are 0): the
    # extremes agree within 15% of the range, and the means within 15% of the range.
    span = theirs.max(0) - theirs.min(0)
    for i in range(6):
        assert abs(ours[:, i].min() - theirs[:, i].min()) < 0.15 * span[i], i
        assert abs(ours[:, i].max() - theirs[:, i].max()) < 0.15 * span[i], i
        assert abs(ours[:, i].mean() - theirs[:, i].mean()) < 0.15 * span[i], i
    assert np.all(ours[:, 6:] == 0) and np.all(theirs[:, 6:] == 0)


def test_engines_move_the_lander_like_gymnasium():
    """From Gymnasium's state after reset (copied into ours), 10 steps of one engine change the
    velocities and the spin alike. Engine dispersion is random in both, so the change is averaged
    over 8 episodes; tolerance 15% of Gymnasium's change + 0.02 (observation units)."""
    env = _gym_env()
    for action in (1, 2, 3):
        theirs, ours = [], []
        for seed in range(8):
            start, _ = env.reset(seed=seed)
            lander = env.unwrapped.lander
            state = flying(
                x=lander.position[0], y=lander.position[1], vx=lander.linearVelocity[0],
                vy=lander.linearVelocity[1], angle=lander.angle, ang_vel=lander.angularVelocity,
                fold0=0.14, fold1=0.14,
            )
            np.testing.assert_allclose(ENV.get_obs(state), start, atol=1e-5)
            for t in range(10):
                their_obs, *_ = env.step(action)
                our_obs, state, *_ = step_env(jax.random.key(100 * seed + t), state, action, PARAMS)
            theirs.append(their_obs - start)
            ours.append(np.asarray(our_obs) - start)
        theirs, ours = np.mean(theirs, 0), np.mean(ours, 0)
        for i in (2, 3, 5):  # vx, vy, angular velocity
            assert abs(ours[i] - theirs[i]) <= 0.15 * abs(theirs[i]) + 0.02, (action, i, ours, theirs)
        big = np.abs(theirs[[2, 3, 5]]) > 0.05
        assert np.all(np.sign(ours[[2, 3, 5]])[big] == np.sign(theirs[[2, 3, 5]])[big])


def test_heuristic_action_equals_gymnasium_heuristic():
    env = _gym_env()
    from gymnasium.envs.box2d.lunar_lander import heuristic

    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, size=(500, 8)).astype(np.float32)
    obs[:, 6:] = rng.random((500, 2)) < 0.2
    theirs = np.array([heuristic(env, o) for o in obs])
    np.testing.assert_array_equal(np.asarray(heuristic_action(jnp.asarray(obs))), theirs)
