"""The JAX highway (highway-fast-v0): API, reward, IDM/MOBIL, collisions, density, and (when
highway-env is installed) step-by-step agreement with highway-env itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax.envs.family import TaskFamily
from pgx_jax.envs.highway import (
    FASTER,
    HIGHWAY_DENSITIES,
    IDLE,
    LANE_LEFT,
    LANE_RIGHT,
    SLOWER,
    EnvState,
    Highway,
    apply_meta_action,
    cars,
    decide,
    ego_collisions,
    highway_family,
    idm_acceleration,
    reward,
    reward_terms,
)

ENV = Highway()
FAMILY = highway_family()
# Density 1 = highway-fast-v0's defaults, as arrays (so that jitted functions compile once).
PARAMS = FAMILY.task_params(3)
M = ENV.vehicles_count + 1
OBS_DIM = 25
# Everything runs jitted, and tests share compiled functions (compilation dominates runtime).
STEP = jax.jit(ENV.step)
GET_OBS = jax.jit(ENV.get_obs)
DECIDE = jax.jit(decide)
REWARD = jax.jit(reward)
REWARD_TERMS = jax.jit(reward_terms)
META = jax.jit(apply_meta_action)
COLLISIONS = jax.jit(ego_collisions, static_argnums=1)
ENVS = 128  # per task in the batched tests
# [tasks, envs] batches over the whole family.
BATCH_RESET = jax.jit(jax.vmap(jax.vmap(ENV.reset, in_axes=(0, None))))
BATCH_STEP = jax.jit(jax.vmap(jax.vmap(ENV.step, in_axes=(0, 0, 0, None))))


def hand_state(vehicles, **overrides) -> EnvState:
    """A scene from (x, lane, speed) rows, vehicle 0 the ego, headings 0, target = own lane and
    speed, δ = 4, timers 0.5; the remaining vehicles are parked far behind the road start (off
    every lane, so nobody sees them as a neighbour)."""
    rest = M - len(vehicles)
    x = [v[0] for v in vehicles] + [-1000.0 - 10.0 * k for k in range(rest)]
    lane = [v[1] for v in vehicles] + [k % 3 for k in range(rest)]
    speed = [v[2] for v in vehicles] + [20.0] * rest
    state = EnvState(
        x=jnp.asarray(x, jnp.float32),
        y=4.0 * jnp.asarray(lane, jnp.float32),
        heading=jnp.zeros(M, jnp.float32),
        speed=jnp.asarray(speed, jnp.float32),
        target_lane=jnp.asarray(lane, jnp.int32),
        target_speed=jnp.asarray(speed, jnp.float32),
        delta=jnp.full(M, 4.0, jnp.float32),
        timer=jnp.full(M, 0.5, jnp.float32),
        crashed=jnp.zeros(M, bool),
        impact=jnp.zeros(M, bool),
        time=jnp.zeros((), jnp.int32),
    )
    return state.replace(**overrides)


def set_at(array, index, value):
    return array.at[index].set(value)


# --- API ------------------------------------------------------------------------------------


def test_reset_and_step_shapes():
    assert float(PARAMS.vehicles_density) == ENV.default_params.vehicles_density == 1.0
    obs, state = ENV.reset(jax.random.key(0), PARAMS)
    assert obs.shape == (OBS_DIM,) and obs.dtype == jnp.float32
    assert state.x.shape == (M,) and state.target_lane.dtype == jnp.int32
    assert np.all(np.abs(obs) <= 1)
    rows = np.asarray(obs).reshape(5, 5)
    assert rows[0, 0] == 1 and rows[0, 3] == pytest.approx(25 / 80)  # ego: 25 m/s, vx / 80
    # All 20 others start ahead of the ego, one jittered gap after another.
    assert np.all(np.diff(np.asarray(state.x)) > 0)
    obs, state, rew, terminated, truncated, info = STEP(jax.random.key(1), state, IDLE, PARAMS)
    assert obs.shape == (OBS_DIM,) and rew.shape == () and rew.dtype == jnp.float32
    assert terminated.dtype == bool and truncated.dtype == bool
    assert info["final_observation"].shape == (OBS_DIM,)
    assert int(state.time) == 1 and float(state.x[0]) > 0
    assert ENV.num_actions == 5 and ENV.observation_space(PARAMS).shape == (OBS_DIM,)


def test_family_jits_and_vmaps_over_tasks_and_envs():
    family = FAMILY
    assert isinstance(family, TaskFamily)
    assert family.num_tasks == 10 and family.discrete and family.action_dim == 5
    assert family.obs_dim == OBS_DIM
    assert family.names[0] == "density=0.5" and family.names[3] == "density=1"
    np.testing.assert_allclose(family.params.vehicles_density, HIGHWAY_DENSITIES, rtol=1e-6)
    n, e = family.num_tasks, ENVS
    keys = jax.random.split(jax.random.key(0), (n, e))
    obs, state = BATCH_RESET(keys, family.params)
    assert obs.shape == (n, e, OBS_DIM) and state.x.shape == (n, e, M)
    actions = jnp.zeros((n, e), jnp.int32) + FASTER
    obs, state, rew, terminated, truncated, info = BATCH_STEP(keys, state, actions, family.params)
    assert obs.shape == (n, e, OBS_DIM) and rew.shape == (n, e) and terminated.shape == (n, e)
    assert info["final_observation"].shape == (n, e, OBS_DIM)
    # Task 0 alone equals its slice of the batch ...
    _, alone = ENV.reset(keys[0, 0], family.task_params(0))
    np.testing.assert_array_equal(alone.x, BATCH_RESET(keys, family.params)[1].x[0, 0])
    # ... and one key in every task gives the same scene with gaps scaled by 1 / density.
    same_key = jnp.broadcast_to(keys[:1], (n, e))
    gaps = np.diff(np.asarray(BATCH_RESET(same_key, family.params)[1].x[:, 0]), axis=-1)
    np.testing.assert_allclose(gaps[-1] / gaps[0], 0.5 / 2.0, rtol=1e-4)


def test_automatic_reset_and_final_observation():
    # Ego 3 m behind vehicle 1 in its lane: they overlap, the step ends the episode.
    state = hand_state([(100.0, 1, 25.0), (103.0, 1, 20.0)])
    key = jax.random.key(3)
    obs, new_state, rew, terminated, truncated, info = STEP(key, state, IDLE, PARAMS)
    assert bool(terminated) and not bool(truncated) and bool(info["crashed"])
    # obs / state are a fresh reset ...
    reset_obs, reset_state = ENV.reset(jax.random.split(key)[1], PARAMS)
    np.testing.assert_array_equal(obs, reset_obs)
    np.testing.assert_array_equal(new_state.x, reset_state.x)
    assert int(new_state.time) == 0 and not bool(new_state.crashed.any())
    # ... and final_observation the crashed scene: the ego moved on from x = 100 m, and
    # vehicle 1 still overlaps it in its lane (< 5 m apart; both brake once crashed).
    final = np.asarray(info["final_observation"]).reshape(5, 5)
    assert final[0, 1] > 100 / 200
    assert final[1, 0] == 1 and abs(final[1, 1] * 200) < 5 and final[1, 2] == 0
    assert np.all(final[2:] == 0)  # nobody else in view


# --- Reward ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lane, speed, heading, crashed",
    [(2, 25.0, 0.0, False), (0, 25.0, 0.0, False), (1, 28.0, 0.2, False), (2, 35.0, 0.0, True),
     (1, 15.0, 0.0, True), (0, 30.0, -0.1, False)],
)
def test_reward_matches_highway_env_formula(lane, speed, heading, crashed):
    state = hand_state([(100.0, lane, speed)])
    state = state.replace(
        heading=set_at(state.heading, 0, heading), crashed=set_at(state.crashed, 0, crashed)
    )
    # highway-env: collision −1, right lane 0.1 · lane / (lanes − 1), high speed
    # 0.4 · clip((v cos h − 20) / (30 − 20), 0, 1); normalized from [−1, 0.5] to [0, 1].
    right = lane / 2
    fast = np.clip((speed * np.cos(heading) - 20) / 10, 0, 1)
    raw = -1.0 * crashed + 0.1 * right + 0.4 * fast
    terms = REWARD_TERMS(state, PARAMS)
    assert float(terms["right_lane_reward"]) == pytest.approx(right)
    assert float(terms["high_speed_reward"]) == pytest.approx(fast, abs=1e-6)
    assert float(terms["collision_reward"]) == float(crashed)
    assert float(REWARD(state, PARAMS)) == pytest.approx((raw + 1) / 1.5, abs=1e-6)
    raw_params = PARAMS.replace(normalize_reward=False)
    assert float(REWARD(state, raw_params)) == pytest.approx(raw, abs=1e-6)


def test_reward_uses_target_lane_and_is_zero_off_road():
    state = hand_state([(100.0, 1, 25.0)])
    changing = state.replace(target_lane=set_at(state.target_lane, 0, 2))  # still in lane 1
    assert float(REWARD_TERMS(changing, PARAMS)["right_lane_reward"]) == 1.0
    off_road = state.replace(y=set_at(state.y, 0, 8.0 + 2.5))  # 2.5 m right of the last lane
    assert float(REWARD_TERMS(off_road, PARAMS)["on_road_reward"]) == 0.0
    assert float(REWARD(off_road, PARAMS)) == 0.0
    assert not bool(ENV.is_terminated(off_road, PARAMS))
    assert bool(ENV.is_terminated(off_road, PARAMS.replace(offroad_terminal=True)))


# --- IDM and MOBIL --------------------------------------------------------------------------


def idm_closed_form(v, v0, gap, v_leader, delta=4.0):
    s_star = 10.0 + 1.5 * v + v * (v - v_leader) / (2 * np.sqrt(15.0))
    return 3.0 * (1 - (v / v0) ** delta) - 3.0 * (s_star / gap) ** 2


def test_idm_matches_closed_form():
    follower = cars(100.0, 20.0, 0.0, 25.0)
    leader = cars(130.0, 15.0, 0.0, 15.0)
    expected = idm_closed_form(20.0, 25.0, 30.0, 15.0)
    assert float(idm_acceleration(follower, leader, 4.0)) == pytest.approx(expected, rel=1e-5)
    # No leader: free-road term only; δ is the evaluating vehicle's exponent.
    free = float(idm_acceleration(follower, leader, 3.5, has_leader=False))
    assert free == pytest.approx(3.0 * (1 - 0.8**3.5), rel=1e-5)
    # No follower: 0. Target speeds are clipped to the 30 m/s speed limit.
    assert float(idm_acceleration(follower, leader, 4.0, has_follower=False)) == 0.0
    fast = cars(0.0, 30.0, 0.0, 60.0)
    at_limit = float(idm_acceleration(fast, leader, 4.0, has_leader=False))
    assert at_limit == pytest.approx(0.0, abs=1e-6)


def test_idm_drives_the_follower_of_a_hand_set_pair():
    # Vehicle 1 follows vehicle 2 in lane 2, the ego far away in lane 0.
    state = hand_state([(0.0, 0, 25.0), (200.0, 2, 22.0), (260.0, 2, 18.0)])
    state = state.replace(
        delta=set_at(state.delta, 1, 3.7), target_speed=set_at(state.target_speed, 1, 26.0)
    )
    _, _, _, acceleration = DECIDE(state, PARAMS)
    expected = idm_closed_form(22.0, 26.0, 60.0, 18.0, delta=3.7)
    assert -6.0 < expected < 0.0
    assert float(acceleration[1]) == pytest.approx(expected, rel=1e-5)
    # Closer, the IDM braking saturates at highway-env's ±6 m/s² clip.
    close = state.replace(x=set_at(state.x, 2, 225.0))
    assert float(DECIDE(close, PARAMS)[3][1]) == pytest.approx(-6.0)
    assert float(acceleration[2]) == pytest.approx(0.0, abs=1e-5)  # free road at cruise speed
    assert float(acceleration[0]) == pytest.approx(0.0, abs=1e-5)  # ego at its target speed


def test_mobil_accepts_and_rejects_lane_changes():
    # Vehicle 1 cruises at 25 m/s in the middle lane, 30 m behind a 15 m/s vehicle 2.
    base = [(0.0, 0, 25.0), (300.0, 1, 25.0), (330.0, 1, 15.0)]
    due = {"timer": jnp.full(M, 1.5, jnp.float32)}
    target = DECIDE(hand_state(base, **due), PARAMS)[0]
    assert int(target[1]) == 2  # both sides free: the right one wins, as in highway-env
    # A fast vehicle 5 m behind in the right lane would have to brake > 2 m/s²: go left instead.
    blocked_right = base + [(295.0, 2, 30.0)]
    assert int(DECIDE(hand_state(blocked_right, **due), PARAMS)[0][1]) == 0
    # Both sides blocked: stay.
    blocked_both = blocked_right + [(295.0, 0, 30.0)]
    assert int(DECIDE(hand_state(blocked_both, **due), PARAMS)[0][1]) == 1
    # No gain: the slow leader is 300 m ahead.
    far = [(0.0, 0, 25.0), (300.0, 1, 25.0), (900.0, 1, 15.0)]
    assert int(DECIDE(hand_state(far, **due), PARAMS)[0][1]) == 1
    # The timer allows a decision only once per second.
    assert int(DECIDE(hand_state(base), PARAMS)[0][1]) == 1
    # The ego never runs MOBIL, however slow its leader.
    ego_stuck = [(300.0, 1, 25.0), (330.0, 1, 15.0)]
    assert int(DECIDE(hand_state(ego_stuck, **due), PARAMS)[0][0]) == 1


def test_meta_actions_set_ego_targets():
    state = hand_state([(100.0, 1, 25.0)])

    def lane(action):
        return int(META(state, action, PARAMS).target_lane[0])

    def speed(current, action):
        moving = state.replace(speed=set_at(state.speed, 0, current))
        return float(META(moving, action, PARAMS).target_speed[0])

    assert (lane(LANE_LEFT), lane(IDLE), lane(LANE_RIGHT)) == (0, 1, 2)
    edge = state.replace(target_lane=set_at(state.target_lane, 0, 0), y=set_at(state.y, 0, 0.0))
    assert int(META(edge, LANE_LEFT, PARAMS).target_lane[0]) == 0
    # FASTER / SLOWER step from the target speed closest to the current speed.
    assert speed(25.0, FASTER) == 30.0 and speed(25.0, SLOWER) == 20.0
    assert speed(21.0, FASTER) == 25.0 and speed(30.0, FASTER) == 30.0
    assert speed(27.6, SLOWER) == 25.0 and speed(25.0, IDLE) == 25.0


# --- Termination, truncation ------------------------------------------------------------------


def test_collision_geometry():
    def hits(dx, dy, heading=0.0, speed=0.0):
        state = hand_state([(100.0, 1, speed), (100.0 + dx, 1, 0.0)])
        state = state.replace(
            y=set_at(state.y, 1, 4.0 + dy), heading=set_at(state.heading, 1, heading)
        )
        intersecting, will_intersect = COLLISIONS(state, 0.2)
        return bool(intersecting[0]), bool(will_intersect[0])

    assert hits(4.9, 0.0) == (True, True)  # 5 m long boxes overlap
    assert hits(5.1, 0.0) == (False, False)
    assert hits(0.0, 1.9) == (True, True)  # 2 m wide boxes overlap
    assert hits(0.0, 4.0) == (False, False)  # side by side in adjacent lanes
    assert hits(5.1, 0.0, speed=10.0) == (False, True)  # 2 m closer after one frame
    assert hits(0.0, 2.5, heading=np.pi / 2) == (True, True)  # crossing box reaches 2.5 m
    assert hits(0.0, 3.6, heading=np.pi / 2) == (False, False)


def test_crash_terminates():
    state = hand_state([(100.0, 1, 25.0), (103.0, 1, 20.0)])
    _, _, rew, terminated, truncated, info = STEP(jax.random.key(0), state, IDLE, PARAMS)
    assert bool(terminated) and not bool(truncated) and bool(info["crashed"])
    # A crashed vehicle brakes (a = −v): the final speed is well below 20 m/s, so the speed
    # term is 0 and the reward is the collision + right-lane terms (lane 1 of 3) normalized.
    final_speed = 80 * float(info["final_observation"][3])
    assert final_speed == pytest.approx(float(info["speed"]), abs=1e-4) and final_speed < 20
    assert float(rew) == pytest.approx((-1.0 + 0.1 * 0.5 + 1) / 1.5, abs=1e-6)
    # A predicted overlap crashes on the NEXT frame, as in highway-env: ego at 30 m/s, 16 m
    # behind a 20 m/s vehicle; after 5 frames (1 s) the centres are 6 m apart (no overlap),
    # but one more frame at constant speed would overlap, so the crash lands in the next step.
    closing = hand_state([(100.0, 1, 30.0), (116.0, 1, 20.0)])
    _, after, _, terminated, *_ = STEP(jax.random.key(0), closing, IDLE, PARAMS)
    assert not bool(terminated) and bool(after.impact[0]) and not bool(after.crashed[0])
    assert float(after.x[1] - after.x[0]) == pytest.approx(6.0, abs=1e-3)
    _, _, _, terminated, *_ = STEP(jax.random.key(0), after, IDLE, PARAMS)
    assert bool(terminated)


def test_truncation_at_the_duration():
    state = hand_state([(100.0, 0, 25.0)])  # everybody else far behind
    for t in range(1, 31):
        _, state, rew, terminated, truncated, info = STEP(jax.random.key(t), state, IDLE, PARAMS)
        assert not bool(terminated)
        assert bool(truncated) == (t == 30)
        assert float(rew) == pytest.approx((0.4 * 0.5 + 1) / 1.5, abs=1e-5)
    assert int(state.time) == 0  # auto-reset after the 30th step
    # The final observation: the ego alone, 30 s × 25 m/s further (x saturates at 200 m).
    expected = np.zeros(OBS_DIM, np.float32)
    expected[:5] = [1, 1, 0, 25 / 80, 0]
    np.testing.assert_allclose(info["final_observation"], expected, atol=1e-6)
    short = PARAMS.replace(max_steps_in_episode=jnp.asarray(3, jnp.int32))
    state, truncations = hand_state([(100.0, 0, 25.0)]), []
    for t in range(3):
        _, state, _, _, truncated, _ = STEP(jax.random.key(t), state, IDLE, short)
        truncations.append(bool(truncated))
    assert truncations == [False, False, True]


# --- Density --------------------------------------------------------------------------------


# Densities 0.5, 1 and 2 of the family.
SPARSE, DEFAULT, DENSE = 0, 3, 9


def test_higher_density_packs_vehicles_closer_at_reset():
    keys = jax.random.split(jax.random.key(0), (FAMILY.num_tasks, ENVS))
    obs, state = BATCH_RESET(keys, FAMILY.params)
    x = np.asarray(state.x)
    mean_gap = np.diff(x, axis=-1).mean(axis=(1, 2))  # [tasks]
    near = (np.abs(x[..., 1:] - x[..., :1]) < 100).sum(-1).mean(-1)
    observed_dx = np.asarray(obs)[..., 6::5].mean(axis=(1, 2))  # x of the 4 observed vehicles
    assert np.all(np.diff(mean_gap) < 0), mean_gap
    # Gaps ∝ 1 / density (same draws per env up to sampling: compare via the means).
    np.testing.assert_allclose(mean_gap[SPARSE] / mean_gap[DENSE], 4.0, rtol=0.05)
    assert np.all(np.diff(near) > 0), near
    assert observed_dx[SPARSE] > observed_dx[DEFAULT] > observed_dx[DENSE], observed_dx


def test_higher_density_crashes_more_under_always_faster():
    n = FAMILY.num_tasks
    _, state = BATCH_RESET(jax.random.split(jax.random.key(1), (n, ENVS)), FAMILY.params)
    actions = jnp.full((n, ENVS), FASTER, jnp.int32)
    alive = np.ones((n, ENVS), bool)
    crash_step = np.full((n, ENVS), 30)
    for t in range(30):
        keys = jax.random.split(jax.random.key(100 + t), (n, ENVS))
        _, state, _, terminated, truncated, _ = BATCH_STEP(keys, state, actions, FAMILY.params)
        terminated, truncated = np.asarray(terminated), np.asarray(truncated)
        crash_step[alive & terminated] = t
        alive &= ~(terminated | truncated)
    rate = (crash_step < 30).mean(-1)  # [tasks]: collision rate over a 30 s episode
    early = (crash_step < 10).mean(-1)  # crashed within the first 10 s
    assert rate[SPARSE] < rate[DENSE], rate
    assert early[DEFAULT] - early[SPARSE] > 0.2 and early[DENSE] - early[DEFAULT] > 0.1, early
    assert np.corrcoef(FAMILY.params.vehicles_density, early)[0, 1] > 0.8, early


# --- Validation -----------------------------------------------------------------------------


def test_family_and_env_validation():
    with pytest.raises(ValueError, match="empty"):
        highway_family(())
    for bad in [(1.0, -0.5), (0.0,), (np.nan,), (5.0,)]:
        with pytest.raises(ValueError, match="densities"):
            highway_family(bad)
    with pytest.raises(ValueError, match="vehicles_count"):
        Highway(vehicles_count=0)
    with pytest.raises(ValueError, match="simulation_frequency"):
        Highway(simulation_frequency=1, policy_frequency=2)
    small = highway_family((1.0,), env=Highway(vehicles_count=2, observed_vehicles=5))
    obs, _ = small.env.reset(jax.random.key(0), small.task_params(0))
    assert obs.shape == (25,) and np.all(np.asarray(obs)[15:] == 0)  # rows 3, 4 empty


# --- Agreement with highway-env itself (skipped without it) -------------------------------------


def test_matches_highway_env_step_by_step():
    gymnasium = pytest.importorskip("gymnasium")
    pytest.importorskip("highway_env")
    from benchmarks.highway_reference import policy_action, state_from_highway_env

    env = gymnasium.make("highway-fast-v0")
    rng = np.random.default_rng(0)
    for seed, policy in [(0, "IDLE"), (1, "FASTER"), (2, "random")]:
        ref_obs, _ = env.reset(seed=seed)
        state = state_from_highway_env(env)
        np.testing.assert_allclose(GET_OBS(state, PARAMS), ref_obs.reshape(-1), atol=1e-5)
        for _ in range(30):
            action = policy_action(policy, rng)
            ref_obs, ref_reward, ref_terminated, ref_truncated, _ = env.step(action)
            obs, state, rew, terminated, truncated, _ = STEP(
                jax.random.key(0), state, action, PARAMS
            )
            assert bool(truncated) == ref_truncated
            assert bool(terminated) == ref_terminated
            assert float(rew) == pytest.approx(ref_reward, abs=1e-4)
            if ref_terminated or ref_truncated:
                break  # highway-env also nudges crashed vehicles apart; we do not
            np.testing.assert_allclose(obs, ref_obs.reshape(-1), atol=1e-4)
            ref = state_from_highway_env(env)
            np.testing.assert_allclose(state.x, ref.x, atol=1e-2)
            np.testing.assert_allclose(state.y, ref.y, atol=1e-2)
            np.testing.assert_array_equal(state.target_lane, ref.target_lane)


def test_idm_and_reward_match_highway_env_objects():
    gymnasium = pytest.importorskip("gymnasium")
    pytest.importorskip("highway_env")
    from highway_env.vehicle.behavior import IDMVehicle

    env = gymnasium.make("highway-fast-v0")
    env.reset(seed=0)
    base = env.unwrapped
    road = base.road
    follower = IDMVehicle(road, [100.0, 4.0], heading=0.05, speed=22.0, target_speed=27.0)
    leader = IDMVehicle(road, [128.0, 4.5], heading=-0.02, speed=17.0)
    follower.DELTA = 3.8
    expected = follower.acceleration(ego_vehicle=follower, front_vehicle=leader)
    ours = idm_acceleration(cars(100.0, 22.0, 0.05, 27.0), cars(128.0, 17.0, -0.02, 17.0), 3.8)
    assert float(ours) == pytest.approx(expected, rel=1e-5)

    ego = base.vehicle
    cases = [(2, 8.0, 27.0, 0.1, False), (0, 1.0, 22.0, 0.0, True), (1, 4.0, 31.0, 0.0, False),
             (2, 10.5, 25.0, 0.0, False)]  # the last one is off the road
    for lane, y, speed, heading, crashed in cases:
        ego.position = np.array([150.0, y])
        ego.speed, ego.heading, ego.crashed = speed, heading, crashed
        ego.target_lane_index = ("0", "1", lane)
        ego.on_state_update()
        state = hand_state([(150.0, lane, speed)])
        state = state.replace(
            y=set_at(state.y, 0, y), heading=set_at(state.heading, 0, heading),
            crashed=set_at(state.crashed, 0, crashed),
        )
        assert float(REWARD(state, PARAMS)) == pytest.approx(base._reward(IDLE), abs=1e-6)
