"""A pure-JAX multi-lane highway in the spirit of highway-env's `highway-fast-v0`.

Written from the rules and constants of highway-env 1.12.1 (`HighwayEnvFast`, `IDMVehicle`,
`MDPVehicle`, `KinematicObservation`, `DiscreteMetaAction`); no code is shared with it.

The scene (defaults = highway-fast-v0): a straight road of `lanes_count` = 3 lanes, 4 m wide and
10 km long, lane 0 leftmost (y = 0) and lane L-1 rightmost (y = 4(L-1)). Vehicle 0 is the ego,
vehicles 1..20 are IDM/MOBIL drivers. All arrays have a static vehicle axis of size
M = vehicles_count + 1. One policy step is `simulation_frequency // policy_frequency` = 5
simulation frames of dt = 0.2 s; an episode lasts 30 steps (30 s at 1 Hz).

Reset (as highway-env's `_create_vehicles`): the ego starts at 25 m/s on a random lane, at
x = 3·o + o·U(0.9, 1.1) with o = ego_spacing·(12 + 25)·exp(-5·L/40). Each other vehicle gets a
random lane, a speed U(21, 24) that is also its cruise (target) speed, an IDM exponent
δ ~ U(3.5, 4.5), and is placed o_i·U(0.9, 1.1) ahead of the previous one with
o_i = (12 + speed_i)·exp(-5·L/40) / vehicles_density: the density scales every gap by
1/density, so all 20 vehicles start ahead of the ego, packed closer at higher density.
Vehicles are never recycled (neither are they in highway-env): in 30 s nobody reaches the end of
the 10 km road, and vehicles left behind simply stop mattering (they leave the 200 m view).

Each frame, like highway-env's `road.act()` then `road.step(dt)`:
  * decisions: the ego's low-level controllers track its target speed (proportional, 1/0.6 s) and
    the centre of its target lane; every other vehicle runs MOBIL (politeness 0, gain ≥ 0.2 m/s²,
    imposed braking ≤ 2 m/s², at most once per second via its timer, abort when someone closer
    than the desired gap heads for the same lane) and IDM (a_max 3, b 5, s0 10 m incl. length,
    T 1.5 s; min over current and target lane while changing; clipped to ±6 m/s²);
  * kinematics: highway-env's bicycle model (steering from its cascaded lateral controller);
  * collisions: the ego against every other vehicle (highway-fast-v0 does not check pairs of
    other vehicles), exact rotated-rectangle separating-axis test, 5 m × 2 m boxes, including
    highway-env's one-frame look-ahead (a predicted overlap at constant velocity marks both
    vehicles crashed on the next frame).

The ego takes the 5 meta-actions of `DiscreteMetaAction`, applied at the first frame:
0 LANE_LEFT, 1 IDLE, 2 LANE_RIGHT, 3 FASTER, 4 SLOWER, with target speeds (20, 25, 30) m/s;
FASTER/SLOWER move one step from the target speed closest to the CURRENT speed.

Observation: highway-env's default `Kinematics` observation, flattened: V = 5 rows of
(presence, x, y, vx, vy). Row 0 is the ego in ABSOLUTE coordinates (as highway-env does; its x
saturates at 1 after 200 m), rows 1..4 the closest vehicles ahead (|Δx|-sorted, within 200 m,
Δx > -10 m) relative to the ego; x / 200 m, y / (4 m · L), vx, vy / 80 m/s, clipped to [-1, 1];
missing rows are zeros.

Reward (highway-env's `HighwayEnv._reward`): -1·crashed + 0.1·lane/(L-1) (lane = the ego's
TARGET lane) + 0.4·clip(lmap(v·cos h, [20, 30] → [0, 1])), mapped by `normalize_reward` from
[-1, 0.5] to [0, 1], then multiplied by on_road. Terminated on crash (or off-road when
`offroad_terminal`), truncated at `max_steps_in_episode` = duration · policy_frequency.

Simplifications against highway-env (all affect rare events only):
  * all vehicles decide simultaneously from the frame's start state; highway-env loops over them,
    so an abort check there can see a target lane another vehicle picked earlier in that frame;
  * the half-overlap "impact" displacement pushed onto colliding vehicles is not applied (the
    crash flag is; the episode ends on the ego's crash anyway);
  * ties in neighbour search pick the first vehicle instead of the last;
  * the road end (follow_road / next lane after 10 km) is not modelled (not reachable in 30 s).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from pgx_jax.envs.family import TaskFamily

# --- highway-env 1.12.1 constants -------------------------------------------------------------
LANE_WIDTH = 4.0  # AbstractLane.DEFAULT_WIDTH [m]
ROAD_LENGTH = 10_000.0  # RoadNetwork.straight_road_network length [m]
SPEED_LIMIT = 30.0  # lane speed limit [m/s]: IDM target speeds are clipped to it
VEHICLE_LENGTH = 5.0  # [m]
VEHICLE_WIDTH = 2.0  # [m]
MAX_SPEED = 40.0  # Vehicle.MAX_SPEED [m/s]
EGO_SPEED = 25.0  # initial ego speed [m/s]
TARGET_SPEEDS = (20.0, 25.0, 30.0)  # MDPVehicle.DEFAULT_TARGET_SPEEDS [m/s]
PERCEPTION_DISTANCE = 5.0 * MAX_SPEED  # AbstractEnv.PERCEPTION_DISTANCE [m]
# IDM (IDMVehicle)
ACC_MAX = 6.0
COMFORT_ACC_MAX = 3.0
COMFORT_ACC_MIN = -5.0
DISTANCE_WANTED = 5.0 + VEHICLE_LENGTH
TIME_WANTED = 1.5
DELTA_RANGE = (3.5, 4.5)
# MOBIL (IDMVehicle)
POLITENESS = 0.0
LANE_CHANGE_MIN_ACC_GAIN = 0.2
LANE_CHANGE_MAX_BRAKING_IMPOSED = 2.0
LANE_CHANGE_DELAY = 1.0
# Low-level controllers (ControlledVehicle)
KP_A = 1 / 0.6
KP_HEADING = 1 / 0.2
KP_LATERAL = 1 / 0.6
MAX_STEERING_ANGLE = np.pi / 3

ACTION_NAMES = ("LANE_LEFT", "IDLE", "LANE_RIGHT", "FASTER", "SLOWER")
LANE_LEFT, IDLE, LANE_RIGHT, FASTER, SLOWER = range(5)
OBS_FEATURES = ("presence", "x", "y", "vx", "vy")

# Vehicle densities of the family: highway-env's `vehicles_density`, which divides every spawn
# gap. 10 evenly spaced values from sparse (0.5, gaps ~2× the default) to dense (2.0, half the
# default gaps); at 3 lanes the tightest same-lane spawn gap stays above a car length up to ~4.
HIGHWAY_DENSITIES = tuple(float(x) for x in np.round(np.linspace(0.5, 2.0, 10), 3))
MAX_DENSITY = 4.0


@struct.dataclass
class EnvState(environment.EnvState):
    """Every vehicle array is [M] with M = vehicles_count + 1; index 0 is the ego."""

    x: jax.Array  # f32[M] longitudinal position [m]
    y: jax.Array  # f32[M] lateral position [m] (lane k centre at 4k)
    heading: jax.Array  # f32[M] [rad]
    speed: jax.Array  # f32[M] [m/s]
    target_lane: jax.Array  # i32[M]
    target_speed: jax.Array  # f32[M] [m/s]
    delta: jax.Array  # f32[M] IDM exponent (unused for the ego)
    timer: jax.Array  # f32[M] MOBIL timer [s] (unused for the ego)
    crashed: jax.Array  # bool[M]
    impact: jax.Array  # bool[M] predicted collision: crashed at the next frame
    time: jax.Array  # i32[] policy steps taken


@struct.dataclass
class EnvParams(environment.EnvParams):
    """highway-fast-v0's configuration; `vehicles_density` is the task parameter."""

    vehicles_density: float = 1.0
    lanes_count: int = 3
    ego_spacing: float = 1.5
    collision_reward: float = -1.0
    right_lane_reward: float = 0.1
    high_speed_reward: float = 0.4
    reward_speed_low: float = 20.0  # reward_speed_range[0] [m/s]
    reward_speed_high: float = 30.0  # reward_speed_range[1] [m/s]
    normalize_reward: bool = True
    offroad_terminal: bool = False
    max_steps_in_episode: int = 30  # duration 30 s × policy_frequency 1 Hz


class Cars(NamedTuple):
    """What IDM needs to know about a set of vehicles (arrays of one shape); see `cars`."""

    x: jax.Array  # longitudinal position [m]
    speed: jax.Array  # [m/s]
    cos_h: jax.Array  # cos(heading)
    sin_h: jax.Array  # sin(heading)
    target_speed: jax.Array  # [m/s]


def cars(x, speed, heading, target_speed) -> Cars:
    """`Cars` from positions, speeds, headings and target speeds (float32)."""
    heading = jnp.asarray(heading, jnp.float32)
    return Cars(
        jnp.asarray(x, jnp.float32), jnp.asarray(speed, jnp.float32),
        jnp.cos(heading), jnp.sin(heading), jnp.asarray(target_speed, jnp.float32),
    )


def lmap(v, x0, x1, y0, y1):
    """highway-env's `utils.lmap`: the linear map of v from [x0, x1] to [y0, y1]."""
    return y0 + (v - x0) * (y1 - y0) / (x1 - x0)


def not_zero(x, eps: float = 1e-2):
    """highway-env's `utils.not_zero`: x, or ±eps when |x| ≤ eps (sign of x, + at 0)."""
    return jnp.where(jnp.abs(x) > eps, x, jnp.where(x >= 0, eps, -eps))


def desired_gap(follower: Cars, leader: Cars):
    """IDM desired gap s* = s0 + v T + v Δv / (2 √(a b)), Δv projected on the follower's heading."""
    # (v_f − v_l)·dir_f with v = speed·(cos h, sin h)
    dv = follower.speed - leader.speed * (
        leader.cos_h * follower.cos_h + leader.sin_h * follower.sin_h
    )
    return (
        DISTANCE_WANTED
        + follower.speed * TIME_WANTED
        + follower.speed * dv / (2 * np.sqrt(-COMFORT_ACC_MAX * COMFORT_ACC_MIN))
    )


def idm_acceleration(follower: Cars, leader: Cars, delta, has_leader=True, has_follower=True):
    """IDM acceleration of `follower` behind `leader` (highway-env's `IDMVehicle.acceleration`).

    a = a_max (1 − (v / v0)^δ) − a_max (s* / s)², s = x_leader − x_follower, v0 the follower's
    target speed clipped to [0, speed limit]; no interaction term without a leader, and 0 without
    a follower. `delta` is the exponent of the vehicle that EVALUATES (highway-env uses
    `self.DELTA` for every vehicle it reasons about). Not clipped (the caller clips to ±6).
    All arguments broadcast; returns their broadcast shape.
    """
    target = jnp.clip(follower.target_speed, 0.0, SPEED_LIMIT)
    free = COMFORT_ACC_MAX * (
        1 - jnp.power(jnp.maximum(follower.speed, 0.0) / jnp.abs(not_zero(target)), delta)
    )
    gap = leader.x - follower.x
    interaction = COMFORT_ACC_MAX * jnp.square(desired_gap(follower, leader) / not_zero(gap))
    return jnp.where(has_follower, free - jnp.where(has_leader, interaction, 0.0), 0.0)


def lane_of(y, lanes_count):
    """Closest lane to lateral position y (ties to the left lane, like highway-env's argmin)."""
    return jnp.clip(jnp.ceil(y / LANE_WIDTH - 0.5), 0, lanes_count - 1).astype(jnp.int32)


def on_lane(x, y, lane, margin=0.0):
    """highway-env's `StraightLane.on_lane`: |lateral| ≤ w/2 + margin and x on the lane's span."""
    return (
        (jnp.abs(y - lane * LANE_WIDTH) <= LANE_WIDTH / 2 + margin)
        & (x >= -VEHICLE_LENGTH)
        & (x < ROAD_LENGTH + VEHICLE_LENGTH)
    )


def reachable(x, y, lane):
    """highway-env's `is_reachable_from` on a straight lane: within 2 lane widths laterally."""
    return (jnp.abs(y - lane * LANE_WIDTH) <= 2 * LANE_WIDTH) & (x >= 0) & (
        x < ROAD_LENGTH + VEHICLE_LENGTH
    )


def neighbours(x, y, query_lanes):
    """Preceding and following vehicle of every vehicle in each of K query lanes.

    As highway-env's `road.neighbour_vehicles`: a vehicle is in a lane when within 1 m of the
    lane's half-width (so a vehicle mid-change can be in two lanes); front = smallest x ≥ own x,
    rear = largest x < own x; a vehicle is never its own neighbour.

    Args: x, y f32[M]; query_lanes i32[M, K].
    Returns: front i32[M, K], has_front bool[M, K], rear i32[M, K], has_rear bool[M, K].
    """
    m = x.shape[0]
    in_lane = on_lane(x[None, None, :], y[None, None, :], query_lanes[:, :, None], margin=1.0)
    in_lane &= ~jnp.eye(m, dtype=bool)[:, None, :]  # [M(i), K, M(j)]
    dx = (x[None, :] - x[:, None])[:, None, :]  # x_j - x_i
    ahead = jnp.where(in_lane & (dx >= 0), dx, jnp.inf)
    behind = jnp.where(in_lane & (dx < 0), -dx, jnp.inf)
    # min + first index attaining it: much faster than argmin on CPU (XLA's argmin is a
    # variadic reduction); an empty lane gives index 0 with has_* False.
    nearest_ahead = jnp.min(ahead, -1, keepdims=True)
    nearest_behind = jnp.min(behind, -1, keepdims=True)
    index = jnp.arange(m)
    front = jnp.min(jnp.where(ahead == nearest_ahead, index, m - 1), -1)
    rear = jnp.min(jnp.where(behind == nearest_behind, index, m - 1), -1)
    has_front = jnp.isfinite(nearest_ahead[..., 0])
    has_rear = jnp.isfinite(nearest_behind[..., 0])
    return front, has_front, rear, has_rear


def steering_control(y, heading, speed, target_lane):
    """highway-env's `ControlledVehicle.steering_control` on a straight lane (all args [M])."""
    lateral = y - target_lane * LANE_WIDTH
    lateral_speed_command = -KP_LATERAL * lateral
    heading_command = jnp.arcsin(jnp.clip(lateral_speed_command / not_zero(speed), -1, 1))
    heading_ref = jnp.clip(heading_command, -np.pi / 4, np.pi / 4)
    heading_error = jnp.mod(heading_ref - heading + np.pi, 2 * np.pi) - np.pi
    heading_rate_command = KP_HEADING * heading_error
    slip_angle = jnp.arcsin(
        jnp.clip(VEHICLE_LENGTH / 2 / not_zero(speed) * heading_rate_command, -1, 1)
    )
    steering = jnp.arctan(2 * jnp.tan(slip_angle))
    return jnp.clip(steering, -MAX_STEERING_ANGLE, MAX_STEERING_ANGLE)


def apply_meta_action(state: EnvState, action, params: EnvParams) -> EnvState:
    """The ego's meta-action → its new target lane / target speed (`MDPVehicle.act`)."""
    x0, y0, speed0 = state.x[0], state.y[0], state.speed[0]
    lane = state.target_lane[0]
    step = jnp.where(action == LANE_LEFT, -1, jnp.where(action == LANE_RIGHT, 1, 0))
    new_lane = jnp.clip(lane + step, 0, params.lanes_count - 1)
    new_lane = jnp.where(reachable(x0, y0, new_lane), new_lane, lane)
    speeds = jnp.asarray(TARGET_SPEEDS, jnp.float32)
    n = len(TARGET_SPEEDS)
    closest = jnp.clip(
        jnp.round((speed0 - speeds[0]) / (speeds[-1] - speeds[0]) * (n - 1)), 0, n - 1
    ).astype(jnp.int32)
    index = jnp.clip(closest + jnp.where(action == FASTER, 1, -1), 0, n - 1)
    new_speed = jnp.where(
        (action == FASTER) | (action == SLOWER), speeds[index], state.target_speed[0]
    )
    return state.replace(
        target_lane=state.target_lane.at[0].set(new_lane),
        target_speed=state.target_speed.at[0].set(new_speed),
    )


def decide(state: EnvState, params: EnvParams):
    """One frame of decisions for all vehicles (highway-env's `road.act()`), simultaneously.

    Returns: (target_lane i32[M], timer f32[M], steering f32[M], acceleration f32[M]).
    """
    m = state.x.shape[0]
    x, y, speed, heading = state.x, state.y, state.speed, state.heading
    lanes_count = params.lanes_count
    lane = lane_of(y, lanes_count)
    cars_now = cars(x, speed, heading, state.target_speed)
    is_other = jnp.arange(m) > 0
    active = is_other & ~state.crashed  # crashed vehicles make no decision
    delta = state.delta

    # Neighbours in lanes (lane - 1, lane, lane + 1) of every vehicle.
    query = lane[:, None] + jnp.arange(-1, 2)[None, :]  # [M, 3]
    front, has_front, rear, has_rear = neighbours(x, y, query)

    def take(idx):  # gather Cars at an index array
        return Cars(*(a[idx] for a in cars_now))

    me = Cars(*(a[:, None] for a in cars_now))  # [M, 1] for broadcasting against [M, 3]
    d = delta[:, None]

    # --- Lateral: MOBIL (`IDMVehicle.change_lane_policy`) ---------------------------------
    target = state.target_lane
    changing = lane != target
    # An ongoing change is aborted when another vehicle heading for the same lane (and not in
    # it yet) is ahead of us closer than our desired gap to it.
    pair_gap = x[None, :] - x[:, None]  # [i, j] = x_j - x_i
    pair_dstar = desired_gap(
        Cars(*(a[:, None] for a in cars_now)), Cars(*(a[None, :] for a in cars_now))
    )
    conflict = (
        ~jnp.eye(m, dtype=bool)
        & (lane[None, :] != target[:, None])
        & (target[None, :] == target[:, None])
        & (pair_gap > 0)
        & (pair_gap < pair_dstar)
    )
    abort = active & changing & jnp.any(conflict, axis=1)
    # Otherwise, once per LANE_CHANGE_DELAY, MOBIL on each side lane (left first, right wins).
    due = active & ~changing & (state.timer > LANE_CHANGE_DELAY)
    timer = jnp.where(due, 0.0, state.timer)
    new_front, new_rear = take(front), take(rear)  # [M, 3]
    old_front = Cars(*(a[:, 1:2] for a in new_front))  # [M, 1]: the current lane
    old_rear = Cars(*(a[:, 1:2] for a in new_rear))
    has_old_front, has_old_rear = has_front[:, 1:2], has_rear[:, 1:2]
    new_following_a = idm_acceleration(new_rear, new_front, d, has_front, has_rear)
    new_following_pred_a = idm_acceleration(new_rear, me, d, True, has_rear)
    self_pred_a = idm_acceleration(me, new_front, d, has_front)
    self_a = idm_acceleration(me, old_front, d, has_old_front)
    old_following_a = idm_acceleration(old_rear, me, d, True, has_old_rear)
    old_following_pred_a = idm_acceleration(old_rear, old_front, d, has_old_front, has_old_rear)
    gain = self_pred_a - self_a + POLITENESS * (
        new_following_pred_a - new_following_a + old_following_pred_a - old_following_a
    )
    candidate = (
        (query >= 0)
        & (query < lanes_count)
        & reachable(x[:, None], y[:, None], query)
        & (jnp.abs(speed) >= 1)[:, None]
    )
    accept = (
        candidate
        & (new_following_pred_a >= -LANE_CHANGE_MAX_BRAKING_IMPOSED)
        & (gain >= LANE_CHANGE_MIN_ACC_GAIN)
        & due[:, None]
    )
    target = jnp.where(abort, lane, target)
    target = jnp.where(accept[:, 0], lane - 1, target)
    target = jnp.where(accept[:, 2], lane + 1, target)

    # --- Steering toward the target lane (ego and others alike) ----------------------------
    steering = steering_control(y, heading, speed, target)

    # --- Longitudinal --------------------------------------------------------------------
    # Others: IDM behind the front vehicle of the current lane, and while changing lane the
    # more cautious of that and the target lane's front vehicle (within one lane: see
    # module doc; the others' target is always a neighbour lane).
    acc_lanes = idm_acceleration(me, new_front, d, has_front)  # [M, 3]
    acc_target = jnp.where(
        target < lane, acc_lanes[:, 0], jnp.where(target > lane, acc_lanes[:, 2], acc_lanes[:, 1])
    )
    acc_idm = jnp.minimum(acc_lanes[:, 1], acc_target)
    acc_idm = jnp.clip(acc_idm, -ACC_MAX, ACC_MAX)
    # Ego: proportional speed control toward its target speed.
    acc_ego = KP_A * (state.target_speed - speed)
    acceleration = jnp.where(is_other, acc_idm, acc_ego)
    return target, timer, steering, acceleration


def _separating_axis(xa, ya, ha, da, xb, yb, hb, db):
    """Rotated-rectangle test of box a against boxes b (highway-env's `are_polygons_intersecting`).

    Args: a scalars (centre, heading, displacement f32[2] over dt); b arrays [N] (db f32[N, 2]).
    Returns: (intersecting bool[N], will_intersect bool[N]); will_intersect = overlap once a is
      swept by its displacement relative to b.
    """
    headings = jnp.stack([jnp.broadcast_to(ha, hb.shape), hb], -1)  # [N, 2]
    ux, uy = jnp.cos(headings), jnp.sin(headings)
    axes = jnp.concatenate(
        [jnp.stack([ux, uy], -1), jnp.stack([-uy, ux], -1)], 1
    )  # [N, 4, 2]: length and width axes of a and b

    def project(cx, cy, h):  # box → interval [lo, hi] on every axis; cx, cy, h: [N] or scalars
        cx, cy = jnp.asarray(cx)[..., None], jnp.asarray(cy)[..., None]
        centre = axes[..., 0] * cx + axes[..., 1] * cy
        c, s = jnp.cos(h)[..., None], jnp.sin(h)[..., None]
        half = VEHICLE_LENGTH / 2 * jnp.abs(axes[..., 0] * c + axes[..., 1] * s) + (
            VEHICLE_WIDTH / 2 * jnp.abs(-axes[..., 0] * s + axes[..., 1] * c)
        )
        return centre - half, centre + half

    def interval_distance(min_a, max_a, min_b, max_b):
        return jnp.where(min_a < min_b, min_b - max_a, min_a - max_b)

    min_a, max_a = project(xa, ya, jnp.asarray(ha))
    min_b, max_b = project(xb, yb, hb)
    intersecting = jnp.all(interval_distance(min_a, max_a, min_b, max_b) <= 0, -1)
    velocity = jnp.sum(axes * (da[None, None, :] - db[:, None, :]), -1)
    swept_min, swept_max = min_a + jnp.minimum(velocity, 0), max_a + jnp.maximum(velocity, 0)
    will_intersect = jnp.all(interval_distance(swept_min, swept_max, min_b, max_b) <= 0, -1)
    return intersecting, will_intersect


def ego_collisions(state: EnvState, dt: float):
    """Ego (vehicle 0) against every other vehicle after a frame (`road.step` collision pass).

    Returns: (intersecting bool[M-1], will_intersect bool[M-1]) for vehicles 1..M-1.
    """
    x, y, h, v = state.x, state.y, state.heading, state.speed
    disp = jnp.stack([v * jnp.cos(h), v * jnp.sin(h)], -1) * dt  # [M, 2]
    diagonal = np.hypot(VEHICLE_LENGTH, VEHICLE_WIDTH)
    near = jnp.hypot(x[1:] - x[0], y[1:] - y[0]) <= diagonal + v[0] * dt  # spherical pre-check
    intersecting, will_intersect = _separating_axis(
        x[0], y[0], h[0], disp[0], x[1:], y[1:], h[1:], disp[1:]
    )
    return near & intersecting, near & will_intersect


def simulate_frame(state: EnvState, params: EnvParams, dt: float) -> EnvState:
    """One simulation frame: decisions, bicycle-model kinematics, ego collisions."""
    target, timer, steering, acceleration = decide(state, params)
    speed, heading = state.speed, state.heading
    # Vehicle.clip_actions: a crashed vehicle brakes to a stop without steering.
    steering = jnp.where(state.crashed, 0.0, steering)
    acceleration = jnp.where(state.crashed, -speed, acceleration)
    acceleration = jnp.where(
        speed > MAX_SPEED,
        jnp.minimum(acceleration, MAX_SPEED - speed),
        jnp.where(speed < -MAX_SPEED, jnp.maximum(acceleration, -MAX_SPEED - speed), acceleration),
    )
    beta = jnp.arctan(0.5 * jnp.tan(steering))
    state = state.replace(
        x=state.x + speed * jnp.cos(heading + beta) * dt,
        y=state.y + speed * jnp.sin(heading + beta) * dt,
        heading=heading + speed * jnp.sin(beta) / (VEHICLE_LENGTH / 2) * dt,
        speed=speed + acceleration * dt,
        target_lane=target,
        timer=timer + dt,
        crashed=state.crashed | state.impact,  # last frame's predicted collision lands now
        impact=jnp.zeros_like(state.impact),
    )
    intersecting, will_intersect = ego_collisions(state, dt)
    crashed = state.crashed | jnp.concatenate([jnp.any(intersecting)[None], intersecting])
    impact = state.impact | jnp.concatenate([jnp.any(will_intersect)[None], will_intersect])
    return state.replace(crashed=crashed, impact=impact)


def on_road(state: EnvState, params: EnvParams):
    """Whether the ego is on its (closest) lane."""
    x0, y0 = state.x[0], state.y[0]
    return on_lane(x0, y0, lane_of(y0, params.lanes_count))


def reward_terms(state: EnvState, params: EnvParams) -> dict[str, jax.Array]:
    """highway-env's `HighwayEnv._rewards` for the ego (each f32[])."""
    forward_speed = state.speed[0] * jnp.cos(state.heading[0])
    scaled = lmap(forward_speed, params.reward_speed_low, params.reward_speed_high, 0.0, 1.0)
    return {
        "collision_reward": state.crashed[0].astype(jnp.float32),
        "right_lane_reward": state.target_lane[0] / jnp.maximum(params.lanes_count - 1, 1),
        "high_speed_reward": jnp.clip(scaled, 0.0, 1.0),
        "on_road_reward": on_road(state, params).astype(jnp.float32),
    }


# MO-Gymnasium's mo-highway objectives, in the order of `reward_vector`.
OBJECTIVES = ("high_speed", "right_lane", "collision")


def reward_vector(state: EnvState, params: EnvParams) -> jax.Array:
    """MO-Gymnasium's mo-highway reward vector: (high speed, right lane, −collision) × on_road,
    f32[3]. The scalar `reward` is (0.4·r₀ + 0.1·r₁ + 1·r₂ + on_road) / 1.5 at the default
    weights with normalization: an affine map of a weighted sum, not the sum itself."""
    terms = reward_terms(state, params)
    return (jnp.stack([terms["high_speed_reward"], terms["right_lane_reward"],
                       -terms["collision_reward"]]) * terms["on_road_reward"]).astype(jnp.float32)


def reward(state: EnvState, params: EnvParams) -> jax.Array:
    """highway-env's `HighwayEnv._reward`: weighted sum, optionally mapped to [0, 1], × on_road."""
    terms = reward_terms(state, params)
    total = (
        params.collision_reward * terms["collision_reward"]
        + params.right_lane_reward * terms["right_lane_reward"]
        + params.high_speed_reward * terms["high_speed_reward"]
    )
    normalized = lmap(
        total,
        params.collision_reward,
        params.high_speed_reward + params.right_lane_reward,
        0.0,
        1.0,
    )
    total = jnp.where(params.normalize_reward, normalized, total)
    return (total * terms["on_road_reward"]).astype(jnp.float32)


class Highway(environment.Environment[EnvState, EnvParams]):
    """highway-fast-v0 in JAX (gymnax 1.0 API). See the module docstring for the model.

    Args:
      vehicles_count: other vehicles (static: it sets the array sizes).
      observed_vehicles: V, rows of the observation (ego included).
      simulation_frequency, policy_frequency: [Hz]; a step runs sim // policy frames.
    Observation: f32[V·5] (V rows of presence, x, y, vx, vy, flattened row-major).
    Actions: 0 LANE_LEFT, 1 IDLE, 2 LANE_RIGHT, 3 FASTER, 4 SLOWER.
    """

    def __init__(
        self,
        vehicles_count: int = 20,
        observed_vehicles: int = 5,
        simulation_frequency: int = 5,
        policy_frequency: int = 1,
    ):
        super().__init__()
        for name, value in [
            ("vehicles_count", vehicles_count),
            ("observed_vehicles", observed_vehicles),
            ("simulation_frequency", simulation_frequency),
            ("policy_frequency", policy_frequency),
        ]:
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if simulation_frequency < policy_frequency:
            raise ValueError("simulation_frequency must be ≥ policy_frequency")
        self.vehicles_count = int(vehicles_count)
        self.observed_vehicles = int(observed_vehicles)
        self.policy_frequency = int(policy_frequency)
        self.frames = int(simulation_frequency // policy_frequency)
        self.dt = 1.0 / simulation_frequency
        self.obs_shape = (self.observed_vehicles * len(OBS_FEATURES),)

    reward_dim = len(OBJECTIVES)

    @property
    def default_params(self) -> EnvParams:
        return EnvParams(max_steps_in_episode=30 * self.policy_frequency)

    def step_env(
        self, key: jax.Array, state: EnvState, action: int | jax.Array, params: EnvParams
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[Any, Any]]:
        """One policy step: the meta-action, then `frames` simulation frames."""
        del key  # after reset the traffic is deterministic, as in highway-env
        state = apply_meta_action(state, action, params)
        state = jax.lax.fori_loop(
            0, self.frames, lambda _, s: simulate_frame(s, params, self.dt), state
        )
        state = state.replace(time=state.time + 1)
        terminated = self.is_terminated(state, params)
        info = {
            "crashed": state.crashed[0],
            "speed": state.speed[0],
            "discount": jnp.where(terminated, 0.0, 1.0),
            "reward_vector": reward_vector(state, params),
        }
        return (
            jax.lax.stop_gradient(self.get_obs(state, params)),
            jax.lax.stop_gradient(state),
            reward(state, params),
            terminated,
            info,
        )

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        """A new scene (highway-env's `_create_vehicles`; see the module docstring)."""
        m = self.vehicles_count + 1
        # One draw for everything (this runs at every step under gymnax's auto-reset).
        u = jax.random.uniform(key, (4, m))
        lanes_count = params.lanes_count
        lane = jnp.minimum(jnp.floor(u[0] * lanes_count), lanes_count - 1).astype(jnp.int32)
        speed = (SPEED_LIMIT * (0.7 + 0.1 * u[1])).at[0].set(EGO_SPEED)
        # Spawn gaps shrink with more lanes (exp(-5 L / 40)) and with density (÷ density).
        lane_factor = jnp.exp(-5.0 / 40.0 * lanes_count)
        spacing = jnp.full((m,), 1.0 / params.vehicles_density).at[0].set(params.ego_spacing)
        offset = spacing * (12.0 + speed) * lane_factor
        jitter = 0.9 + 0.2 * u[2]
        # The ego starts 3 gaps (+ one jittered gap) into the road, each next vehicle one
        # jittered gap ahead of the previous one.
        x = jnp.cumsum(offset * jitter) + 3 * offset[0]
        y = lane * LANE_WIDTH
        state = EnvState(
            x=x.astype(jnp.float32),
            y=y.astype(jnp.float32),
            heading=jnp.zeros(m, jnp.float32),
            speed=speed,
            target_lane=lane.astype(jnp.int32),
            target_speed=speed,  # IDM drivers cruise at their initial speed; the ego at 25
            delta=DELTA_RANGE[0] + (DELTA_RANGE[1] - DELTA_RANGE[0]) * u[3],
            timer=jnp.mod((x + y) * np.pi, LANE_CHANGE_DELAY).astype(jnp.float32),
            crashed=jnp.zeros(m, bool),
            impact=jnp.zeros(m, bool),
            time=jnp.zeros((), jnp.int32),
        )
        return self.get_obs(state, params), state

    def get_obs(self, state: EnvState, params: EnvParams | None = None, key=None) -> jax.Array:
        """Kinematics observation, f32[V·5] (see module docstring)."""
        if params is None:
            params = self.default_params
        x, y, h, v = state.x, state.y, state.heading, state.speed
        vx, vy = v * jnp.cos(h), v * jnp.sin(h)
        dx, dy, dvx, dvy = x[1:] - x[0], y[1:] - y[0], vx[1:] - vx[0], vy[1:] - vy[0]
        visible = (jnp.hypot(dx, dy) < PERCEPTION_DISTANCE) & (dx > -2 * VEHICLE_LENGTH)
        count = self.observed_vehicles - 1
        # The `count` visible vehicles of smallest |dx|, nearest first.
        distance = jnp.where(visible, jnp.abs(dx), jnp.inf)
        k = min(count, self.vehicles_count)
        order = jax.lax.top_k(-distance, k)[1]
        present = jnp.ones(k, bool)
        if k < count:  # fewer vehicles than observation rows: pad with absent rows
            order = jnp.concatenate([order, jnp.zeros(count - k, order.dtype)])
            present = jnp.concatenate([present, jnp.zeros(count - k, bool)])
        present &= visible[order]
        others = jnp.stack([jnp.ones(count), dx[order], dy[order], dvx[order], dvy[order]], -1)
        ego = jnp.stack([jnp.ones(()), x[0], y[0], vx[0], vy[0]])[None, :]
        rows = jnp.concatenate([ego, others], 0)
        # highway-env maps each feature from a symmetric range [-r, r] to [-1, 1] (= v / r,
        # written as a division so that 0 stays exactly 0 in float32) and clips.
        half_range = jnp.stack([
            jnp.ones(()),  # presence: kept as is
            jnp.asarray(PERCEPTION_DISTANCE, jnp.float32),
            LANE_WIDTH * params.lanes_count,
            jnp.asarray(2 * MAX_SPEED, jnp.float32),
            jnp.asarray(2 * MAX_SPEED, jnp.float32),
        ]).astype(jnp.float32)
        rows = jnp.clip(rows / half_range, -1.0, 1.0)
        rows = rows * jnp.concatenate([jnp.ones((1,), bool), present])[:, None]
        return rows.reshape(-1).astype(jnp.float32)

    def is_terminated(self, state: EnvState, params: EnvParams) -> jax.Array:
        """Crashed ego, or off the road when `offroad_terminal`."""
        return state.crashed[0] | (params.offroad_terminal & ~on_road(state, params))

    @property
    def name(self) -> str:
        return "highway-fast-v0"

    @property
    def num_actions(self) -> int:
        return len(ACTION_NAMES)

    def action_space(self, params: EnvParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(len(ACTION_NAMES))

    def observation_space(self, params: EnvParams | None = None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, self.obs_shape, jnp.float32)


def highway_family(densities=HIGHWAY_DENSITIES, env: Highway | None = None) -> TaskFamily:
    """highway-fast-v0 tasks that differ in `vehicles_density` (all else at its defaults).

    Args:
      densities: positive densities, at most MAX_DENSITY (= 4; beyond it same-lane vehicles can
        spawn overlapping at 3 lanes).
      env: the environment (default `Highway()`, highway-fast-v0's sizes).
    Returns: a TaskFamily with names "density=<d>", 5 discrete actions, obs_dim = V·5.
    """
    env = Highway() if env is None else env
    values = np.asarray(densities, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("densities is empty")
    if not np.all(np.isfinite(values)) or np.any(values <= 0) or np.any(values > MAX_DENSITY):
        raise ValueError(
            f"densities must be finite and lie in (0, {MAX_DENSITY}], got {values.tolist()}"
        )
    default = env.default_params
    n = values.size

    def stack(value):
        return jnp.full((n,), value, dtype=jnp.asarray(value).dtype)

    params = type(default)(**{
        name: stack(getattr(default, name)) for name in default.__dataclass_fields__
    }).replace(vehicles_density=jnp.asarray(values, jnp.float32))
    return TaskFamily(
        env=env,
        params=params,
        names=tuple(f"density={x:g}" for x in values),
        discrete=True,
        action_dim=len(ACTION_NAMES),
        obs_dim=env.obs_shape[0],
    )
