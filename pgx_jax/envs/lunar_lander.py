"""A pure-JAX lunar lander with Gymnasium `LunarLander-v3`'s interface, and its gravity family.

Interface (as Gymnasium's discrete LunarLander-v3 without wind):
  observation f32[8]: x, y, vx, vy, angle, angular velocity, contact of the leg on the +x side
    (Gymnasium's legs[0]), contact of the leg on the −x side, in Gymnasium's scaled units
    (x = y = 0 at the pad centre with the legs on the pad; see `_observation`).
  actions: 0 noop, 1 left orientation engine, 2 main engine, 3 right orientation engine
    (anything else is a noop).
  reward: shaping_t − shaping_{t−1} − 0.3·[main] − 0.03·[side], with
    shaping = −100·|(x, y)| − 100·|(vx, vy)| − 100·|angle| + 10·contact₀ + 10·contact₁;
    replaced by −100 on a crash (the hull touches the ground, or |x| ≥ 1) and by +100 when the
    lander comes to rest (Box2D's "not awake"), both terminal; +100 wins if both happen.
    Truncation after 1000 steps (gymnax's `max_steps_in_episode`).
  reward vector (MO-Gymnasium's mo-lunar-lander, `info["reward_vector"]` f32[4]): ±100 on
    landing / crash (0 otherwise), shaping_t − shaping_{t−1}, −[main], −[side]. Under the
    weights `SCALAR_WEIGHTS` = (1, 1, 0.3, 0.03) its dot product is the scalar reward on every
    step but the terminal one, where Gymnasium's scalar drops the shaping and fuel terms and
    MO-Gymnasium's vector keeps them.
  params: `gravity` in Gymnasium's open range (−12, 0), default −10; `swap_side_engines`
    (default False) fires the right orientation engine on action 1 and the left one on action
    3, a change of dynamics that the observation does not reveal.

Physics (a simplification of Gymnasium's Box2D world in its units: metres, seconds, 1/50 s
steps; constants from gymnasium/envs/box2d/lunar_lander.py and Box2D's defaults):
  * One rigid body: the hull plus both legs at their extended pose. Mass (4.959 kg), centre of
    mass and inertia are computed from Gymnasium's polygon, leg boxes and densities. Positions
    are the hull's body origin (what Gymnasium observes); velocities the centre of mass's.
  * Engines: Gymnasium's impulses at Gymnasium's application points, with its dispersion noise
    U(−1, 1)/30 on two axes drawn every step, and its side-engine lever-arm quirk (a point
    mixing hull and world frames, which makes the torque depend on the angle).
  * Legs: a massless arm per side, hinged at the hull origin, touching the ground at the lower
    of its two bottom corners. Box2D drives the legs outward with a motor of at most 40 N·m at
    0.3 rad/s within a 0.5 rad joint range; here a leg carries at most the normal force whose
    torque about the hinge is 40 N·m, folds when that is exceeded (keeping its foot on the
    ground) and otherwise re-extends at 0.3 rad/s. A hard landing folds the legs until the hull
    hits the ground: a crash, as in Box2D.
  * Contacts: sequential impulses (8 Gauss–Seidel sweeps) on the two feet, no restitution,
    Coulomb friction μ = √(0.2·0.1) (Box2D mixes the leg and ground frictions so). Speculative:
    a foot about to pass the ground this step is stopped on it, so the hull brakes in the step
    its foot arrives; Box2D's time-of-impact step stops only the leg there and brakes the hull
    one step later, so hard landings fold Box2D's legs somewhat more.
  * Ground: Gymnasium's random terrain (11 chunk heights U(0, H/2) smoothed by its
    0.33-weighted window, including the wrap-around at the first chunk, and the flat pad for
    |x| ≤ 0.2). Contact flags and the hull crash test use a 0.02 m skin (Box2D's polygon radii);
    flags are those after the step (Box2D reports the contacts found at the start of a step).
  * Rest ("not awake"): hull and both legs below Box2D's sleep tolerances (0.01 m/s, 2°/s) for
    25 consecutive steps (Box2D's 0.5 s); the velocities are then zeroed, as Box2D does.
  * Reset: Gymnasium's initial push (a force U(−1000, 1000) N on each axis for one step) and
    its one noop step in free fall, plus two measured Box2D effects of that first step: the hull
    spins at ω = −0.1133·vx (the legs' joint coupling) and the legs start 0.14 rad folded.
  Not modelled: the legs' own masses and motion, contacts other than the foot corners and the
  hull, wind, rendering. Random numbers are hashed from the key (see `_uniforms`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from pgx_jax.envs.family import TaskFamily

# --- Gymnasium's constants (world units are pixels / SCALE = metres) -------------------------
FPS = 50.0
DT = 1.0 / FPS
SCALE = 30.0
MAIN_ENGINE_POWER = 13.0
SIDE_ENGINE_POWER = 0.6
INITIAL_RANDOM = 1000.0
LANDER_POLY = np.array([(-14, 17), (-17, 0), (-17, -10), (17, -10), (17, 0), (14, 17)], np.float64) / SCALE
LEG_AWAY, LEG_DOWN, LEG_W, LEG_H = 20.0 / SCALE, 18.0 / SCALE, 2.0 / SCALE, 8.0 / SCALE
LEG_SPRING_TORQUE = 40.0
SIDE_ENGINE_HEIGHT, SIDE_ENGINE_AWAY, MAIN_ENGINE_Y = 14.0 / SCALE, 12.0 / SCALE, 4.0 / SCALE
W, H = 600.0 / SCALE, 400.0 / SCALE
CHUNKS = 11
HELIPAD_Y = H / 4
GRAVITY_RANGE = (-12.0, 0.0)  # open interval, as Gymnasium asserts
MAX_STEPS = 1000

# --- Derived model constants ------------------------------------------------------------------
# Box2D's joint reference angle is the legs' initial ±0.05 rad tilt, so the joint limits
# [0.4, 0.9] put the extended leg at 0.35 rad from the hull and allow 0.5 rad of folding.
LEG_EXTENDED = 0.35
LEG_TRAVEL = 0.5
LEG_MOTOR_SPEED = 0.3  # rad/s
LEG_SIGNS = (1.0, -1.0)  # legs[0] sits on the +x side (Gymnasium's obs[6]), legs[1] on −x (obs[7])
SKIN = 0.02  # Box2D polygon radius of the leg/hull (0.01) + the ground edge (0.01)
CONTACT_TOL = 0.005  # Box2D's linear slop: a gap below this counts as touching
FRICTION = float(np.sqrt(0.2 * 0.1))
SLEEP_LINEAR, SLEEP_ANGULAR, SLEEP_STEPS = 0.01, 2.0 * np.pi / 180.0, 25
RESET_SPIN = -0.1133  # rad/s of hull spin per m/s of initial vx (Box2D, leg-joint coupling)
RESET_LEG_FOLD = 0.14  # leg fold after Box2D's first step (joint at 0.54 instead of 0.4)
# Gauss–Seidel sweeps of the contact solver: 8 leaves a resting lander ~3e-4 m/s from rest,
# far inside Box2D's 0.01 m/s sleep tolerance; with 4, landings often never "fell asleep".
SOLVER_ITERATIONS = 8
BAUMGARTE = 0.2  # fraction of a foot's penetration pushed out per step (Box2D's value)


def _polygon_properties(vertices: np.ndarray, density: float):
    """Mass, centroid f64[2] and inertia about the centroid of a CCW polygon."""
    p, q = vertices, np.roll(vertices, -1, axis=0)
    cross = p[:, 0] * q[:, 1] - p[:, 1] * q[:, 0]
    area = cross.sum() / 2
    centroid = ((p + q) * cross[:, None]).sum(0) / (6 * area)
    inertia_origin = density * (cross * ((p * p).sum(1) + (p * q).sum(1) + (q * q).sum(1))).sum() / 12
    mass = density * area
    return mass, centroid, inertia_origin - mass * centroid @ centroid


def _mass_properties():
    """Mass, centre of mass (body frame, from the hull origin) and inertia of hull + legs."""
    hull_mass, hull_com, hull_inertia = _polygon_properties(LANDER_POLY, 5.0)
    leg_mass = 1.0 * (2 * LEG_W) * (2 * LEG_H)
    leg_inertia = leg_mass * ((2 * LEG_W) ** 2 + (2 * LEG_H) ** 2) / 12
    leg_centres = [
        _rotate_np(sign * LEG_EXTENDED, np.array([sign * LEG_AWAY, -LEG_DOWN])) for sign in LEG_SIGNS
    ]
    mass = hull_mass + 2 * leg_mass
    com = (hull_mass * hull_com + leg_mass * sum(leg_centres)) / mass
    inertia = hull_inertia + hull_mass * np.sum((hull_com - com) ** 2)
    inertia += sum(leg_inertia + leg_mass * np.sum((c - com) ** 2) for c in leg_centres)
    return float(mass), com, float(inertia)


def _rotate_np(angle: float, v: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


MASS, COM_OFFSET, INERTIA = _mass_properties()  # ≈ 4.959 kg, (0, 0.089) m, 0.912 kg·m²
# Foot corners of a leg in its own frame relative to the hinge (the hull origin), inner and
# outer, for the leg on the +x side (the −x leg is the mirror image).
FOOT_CORNERS = np.array([[LEG_AWAY - LEG_W, -LEG_DOWN - LEG_H], [LEG_AWAY + LEG_W, -LEG_DOWN - LEG_H]])
# Height of the hull origin above flat ground when resting on extended legs (the skin included).
REST_HEIGHT = float(-min(_rotate_np(LEG_EXTENDED, c)[1] for c in FOOT_CORNERS) + SKIN)
# Leg centres relative to the hinge, in the leg frame of the +x leg (for the sleep test).
LEG_CENTRE = np.array([LEG_AWAY, -LEG_DOWN])


@struct.dataclass
class EnvState(environment.EnvState):
    """One lander, in world units (metres, radians, seconds); scalars are f32[] unless noted.

    x, y: the hull's body origin (Box2D `lander.position`). vx, vy: centre-of-mass velocity.
    angle, ang_vel: hull angle (counter-clockwise, unwrapped) and angular velocity.
    fold0, fold1: leg folding in [0, 0.5] rad (0 = extended) of legs[0] (the +x side,
    Gymnasium's obs[6]) and legs[1] (−x side, obs[7]). contact0, contact1: 1.0 where that
    foot touches the ground. terrain f32[11]: ground height at x = 0, 2, …, 20.
    prev_shaping: shaping of the last observation. rest_steps i32[]: consecutive steps below
    Box2D's sleep tolerances. time i32[]: steps since reset.
    (Scalars rather than small vectors: XLA's CPU code for the batched step is faster.)
    """

    x: jax.Array
    y: jax.Array
    vx: jax.Array
    vy: jax.Array
    angle: jax.Array
    ang_vel: jax.Array
    fold0: jax.Array
    fold1: jax.Array
    contact0: jax.Array
    contact1: jax.Array
    terrain: jax.Array
    prev_shaping: jax.Array
    rest_steps: jax.Array
    time: int


@struct.dataclass
class EnvParams(environment.EnvParams):
    """gravity: vertical acceleration in m/s², Gymnasium's range (−12, 0) (checked by
    `lunar_lander_family`; not inside jitted code). swap_side_engines: actions 1 and 3 fire the
    other orientation engine. max_steps_in_episode: truncation limit. Every field is a pytree
    leaf: params stacked for vmap need every field stacked (`lunar_lander_family` does it)."""

    gravity: float = -10.0
    swap_side_engines: bool = False
    max_steps_in_episode: int = MAX_STEPS


# Weights under which MO-Gymnasium's reward vector gives Gymnasium's scalar reward (see the
# module docstring for the terminal step): landed/crashed, shaping, main fuel, side fuel.
SCALAR_WEIGHTS = (1.0, 1.0, 0.3, 0.03)
OBJECTIVES = ("landed_or_crashed", "shaping", "main_engine_fuel", "side_engine_fuel")


# --- Geometry and physics, written on scalars (one lander): under vmap every operation is then
# elementwise over the batch, which XLA's CPU backend fuses into a few loops. Small array ops
# on a trailing axis of 2 (stacks, dots, gathers) and per-point 10-way terrain lookups were
# several times slower, because XLA copies such producers into each of their many consumers. --

_COM_X, _COM_Y = (float(c) for c in COM_OFFSET)
_CHUNK_W = W / (CHUNKS - 1)
_REACH = 1.2  # no foot corner (1.14 m) or hull vertex (0.74 m) is farther from the hull origin
_LEG_MID = LEG_EXTENDED + LEG_TRAVEL / 2
_LEG_MID_COS, _LEG_MID_SIN = float(np.cos(_LEG_MID)), float(np.sin(_LEG_MID))


def _materialize(*values):
    """The same values (k ≥ 2 finite f32 scalars), each computed once.

    XLA's CPU fusion copies a producer made of cheap elementwise ops into every consumer, so a
    quantity read by many consumers is recomputed in each: `terminated`, which selects every
    state leaf in gymnax's auto-reset, was computed ~10 times per step, the foot geometry ~15
    times. XLA never copies a matrix product into its consumers, so a product with the
    identity (k² flops, exact at HIGHEST precision) computes them once; this made the batched
    step about 3× faster on CPU. Where to use it was chosen by measurement (using it everywhere
    is slower). A performance device only (skipped on other backends): if a compiler removed
    it, results would not change. (With k = 1, XLA rewrites the product as a multiply, which
    fuses again.)
    """
    if len(values) < 2:
        raise ValueError("_materialize needs at least 2 values")
    if jax.default_backend() != "cpu":
        return tuple(jnp.asarray(v, jnp.float32) for v in values)
    stacked = jnp.stack([jnp.asarray(v, jnp.float32) for v in values], -1)
    identity = jnp.eye(len(values), dtype=jnp.float32)
    out = jnp.matmul(stacked, identity, precision=jax.lax.Precision.HIGHEST)
    return tuple(out[..., i] for i in range(len(values)))


def _mix32(x):
    """A 32-bit integer finalizer (the "lowbias32" constants): every input bit flips each output
    bit with probability ≈ 1/2."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _uniforms(key, n: int):
    """n independent U[0, 1) f32 scalars determined by `key` (typed or raw).

    Hashes the key's bits instead of calling jax.random: on CPU each jax.random call is a
    rolled 20-round threefry loop of ~80 small kernels, which cost more than the whole physics
    step. All key words are mixed into a seed, then each value is one finalizer round of
    seed + i·φ (SplitMix-style). The noise needs no cryptographic quality, only independence
    across keys and counters.
    """
    words = jax.random.key_data(key).reshape(-1).astype(jnp.uint32)
    seed = jnp.uint32(0)
    for j in range(words.shape[0]):
        seed = _mix32(seed ^ words[j])
    return [
        (_mix32(seed + jnp.uint32((0x9E3779B9 * (i + 1)) & 0xFFFFFFFF)) >> 8).astype(jnp.float32)
        * (1.0 / (1 << 24))
        for i in range(n)
    ]


def _rot(c, s, x, y):
    """Rotate (x, y) by the angle whose cosine and sine are (c, s)."""
    return c * x - s * y, s * x + c * y


def _leg_rotation(fold):
    """cos and sin of the leg angle LEG_EXTENDED + fold for fold in [0, 0.5], by Taylor series
    about the middle of the range (error < 4e-7): cheaper than cos/sin, which XLA duplicates."""
    d = fold - LEG_TRAVEL / 2
    d2 = d * d
    cos_d = 1.0 - d2 * (0.5 - d2 * (1.0 / 24 - d2 / 720))
    sin_d = d * (1.0 - d2 * (1.0 / 6 - d2 / 120))
    return _LEG_MID_COS * cos_d - _LEG_MID_SIN * sin_d, _LEG_MID_SIN * cos_d + _LEG_MID_COS * sin_d


def _terrain_window(terrain, px):
    """The 3 terrain chunks around a hull at x = px: (index of the first chunk, its 4 corner
    heights). Everything that can touch the ground lies within 1.2 m of px, i.e. in them."""
    first = jnp.clip(jnp.floor((px - _REACH) / _CHUNK_W), 0, CHUNKS - 4)
    heights = []
    for offset in range(4):
        h = terrain[offset]
        for j in range(1, CHUNKS - 3):
            h = jnp.where(first >= j, terrain[j + offset], h)
        heights.append(h)
    return first, heights


def _gap(window, x, y):
    """For a point (x, y): (distance above the ground along its normal minus the skin, normal
    x, normal y). The ground is piecewise linear; points beyond the window use its edge chunks."""
    first, (h0, h1, h2, h3) = window
    k = jnp.clip(jnp.floor(x / _CHUNK_W) - first, 0, 2)
    left = jnp.where(k < 1, h0, jnp.where(k < 2, h1, h2))
    right = jnp.where(k < 1, h1, jnp.where(k < 2, h2, h3))
    slope = (right - left) / _CHUNK_W
    inv_norm = jax.lax.rsqrt(1.0 + slope * slope)
    height = left + slope * (x - (first + k) * _CHUNK_W)
    return (y - height) * inv_norm - SKIN, -slope * inv_norm, inv_norm


def _foot(px, py, ca, sa, fold, sign, window):
    """Lowest foot corner of the leg on side `sign` (+1: +x, −1: −x) of a hull at origin (px, py)
    with angle cosine/sine (ca, sa): (x, y, gap, nx, ny). The +x leg folds counter-clockwise
    about its hinge at the hull origin; the −x leg is its mirror image.

    The ground is looked up under the inner corner only; the outer corner (0.13 m away) is
    measured against the same ground line, which is exact unless a terrain vertex lies between.
    """
    ct, st = _leg_rotation(fold)
    cl, sl = ca * ct - sign * sa * st, sa * ct + sign * ca * st  # hull angle + sign·leg angle
    (ix, iy), (ox, oy) = (_rot(cl, sl, sign * float(cx), float(cy)) for cx, cy in FOOT_CORNERS)
    x, y = px + ix, py + iy
    gap, nx, ny = _gap(window, x, y)
    outer_gap = gap + (ox - ix) * nx + (oy - iy) * ny
    lower = outer_gap < gap
    return (
        jnp.where(lower, px + ox, x), jnp.where(lower, py + oy, y), jnp.minimum(gap, outer_gap), nx, ny,
    )


def _hull_touches(px, py, ca, sa, window):
    """True where the hull touches the ground (within the skin): a hull vertex at or below the
    ground, or the nearest terrain vertex (a peak) inside the hull polygon. Peaks are 2 m apart
    and no hull point is more than 0.74 m from the origin, so only the nearest can be inside."""
    hit = jnp.bool_(False)
    for vx, vy in LANDER_POLY:
        dx, dy = _rot(ca, sa, float(vx), float(vy))
        gap, _, _ = _gap(window, px + dx, py + dy)
        hit = jnp.logical_or(hit, gap <= CONTACT_TOL)
    first, (h0, h1, h2, h3) = window
    k = jnp.clip(jnp.round(px / _CHUNK_W) - first, 0, 3)
    peak = jnp.where(k < 1, h0, jnp.where(k < 2, h1, jnp.where(k < 3, h2, h3)))
    lx, ly = _rot(ca, -sa, (first + k) * _CHUNK_W - px, peak - py)  # the peak in the hull frame
    inside = jnp.bool_(True)
    for i in range(len(LANDER_POLY)):  # CCW polygon: inside = left of every edge
        (ax, ay), (bx, by) = LANDER_POLY[i], LANDER_POLY[(i + 1) % len(LANDER_POLY)]
        ex, ey = float(bx - ax), float(by - ay)
        side = (ex * (ly - float(ay)) - ey * (lx - float(ax))) / float(np.hypot(ex, ey))
        inside = jnp.logical_and(inside, side > -SKIN)
    return jnp.logical_or(hit, inside)


def _observation(px, py, vx, vy, angle, ang_vel, contact0, contact1):
    """Gymnasium's scaled observation f32[8] from world quantities."""
    return jnp.stack([
        (px - W / 2) / (W / 2),
        (py - (HELIPAD_Y + LEG_DOWN)) / (H / 2),
        vx * (W / 2) / FPS,
        vy * (H / 2) / FPS,
        angle,
        20.0 * ang_vel / FPS,
        contact0,
        contact1,
    ]).astype(jnp.float32)


def shaping(obs):
    """Gymnasium's potential for obs f32[..., 8] → f32[...]."""
    return (
        -100.0 * jnp.sqrt(obs[..., 0] ** 2 + obs[..., 1] ** 2)
        - 100.0 * jnp.sqrt(obs[..., 2] ** 2 + obs[..., 3] ** 2)
        - 100.0 * jnp.abs(obs[..., 4])
        + 10.0 * obs[..., 6]
        + 10.0 * obs[..., 7]
    )


def _engine_impulse(px, py, ca, sa, action, d0, d1):
    """Gymnasium's discrete engine impulses: (impulse x, y, angular impulse about the centre of
    mass, main fuel flag, side fuel flag). d0, d1: the dispersion, U(−1, 1)/30 each."""
    comx, comy = _rot(ca, sa, _COM_X, _COM_Y)  # relative to the origin
    main = (action == 2).astype(jnp.float32)
    side = jnp.logical_or(action == 1, action == 3).astype(jnp.float32)
    direction = (action - 2).astype(jnp.float32)  # −1 left, +1 right (only used when side)

    # Main engine: pushes along the hull's up axis from just below the origin, ±dispersion.
    ox, oy = _rot(ca, sa, -d1, -(MAIN_ENGINE_Y + 2.0 * d0))
    mx, my = -MAIN_ENGINE_POWER * ox, -MAIN_ENGINE_POWER * oy
    main_torque = (ox - comx) * my - (oy - comy) * mx

    # Side engines: a sideways push high on the hull. The application point mixes the hull frame
    # with a world-frame term (Gymnasium's 17 vs SIDE_ENGINE_HEIGHT quirk), kept on purpose.
    ox, oy = _rot(ca, sa, -(3.0 * d1 + direction * SIDE_ENGINE_AWAY), -d0)
    sx, sy = -SIDE_ENGINE_POWER * ox, -SIDE_ENGINE_POWER * oy
    rx, ry = ox - sa * 17.0 / SCALE - comx, oy + ca * SIDE_ENGINE_HEIGHT - comy
    side_torque = rx * sy - ry * sx
    return (
        main * mx + side * sx,
        main * my + side * sy,
        main * main_torque + side * side_torque,
        main,
        side,
    )


def _physics_step(state: EnvState, action, d0, d1, gravity):
    """One 1/50 s step: engine impulse, gravity, leg/ground contact solve, integration.

    Returns scalars (x, y, vx, vy, angle, ang_vel, cos angle, sin angle, [fold0, fold1],
    [fold rate0, fold rate1], main fuel flag, side fuel flag).
    """
    px, py = state.x, state.y
    window = _terrain_window(state.terrain, px)
    # Read by most of what follows (see `_materialize`); so are the feet and the new angle's.
    ca, sa = _materialize(jnp.cos(state.angle), jnp.sin(state.angle))
    jx, jy, jw, main, side = _engine_impulse(px, py, ca, sa, action, d0, d1)
    vx = state.vx + jx / MASS
    vy = state.vy + jy / MASS + gravity * DT
    w = state.ang_vel + jw / INERTIA
    comx, comy = _rot(ca, sa, _COM_X, _COM_Y)
    comx, comy = px + comx, py + comy

    feet = _materialize(*(
        value for i, sign in enumerate(LEG_SIGNS)
        for value in _foot(px, py, ca, sa, (state.fold0, state.fold1)[i], sign, window)
    ))
    legs = []
    for i, sign in enumerate(LEG_SIGNS):
        fold = (state.fold0, state.fold1)[i]
        fx, fy, gap, nx, ny = feet[5 * i : 5 * i + 5]
        tx, ty = ny, -nx
        rx, ry = fx - comx, fy - comy  # lever from the centre of mass
        # Normal force → folding torque about the hinge, per unit force; > 0 folds the leg.
        lever = sign * ((fx - px) * ny - (fy - py) * nx)
        folding = lever > 1e-3
        safe_lever = jnp.where(folding, lever, 1.0)
        # The most normal impulse the leg carries this step before its 40 N·m motor gives way.
        cap = jnp.where(folding, LEG_SPRING_TORQUE * DT / safe_lever, 1e9)
        # The motor re-extends a folded leg at 0.3 rad/s, pushing the foot down by rate·lever.
        motor_rate = -jnp.minimum(LEG_MOTOR_SPEED, fold / DT)
        # Speculative contact: the foot may close the gap this step but not pass the ground;
        # an existing penetration is pushed out by a Baumgarte fraction per step.
        gap_speed = jnp.where(gap >= 0, -gap / DT, -BAUMGARTE * gap / DT)
        rn, rt = rx * ny - ry * nx, rx * ty - ry * tx
        legs.append(dict(
            fold=fold, rx=rx, ry=ry, nx=nx, ny=ny, tx=tx, ty=ty, folding=folding,
            safe_lever=safe_lever, cap=cap, motor_rate=motor_rate, gap_speed=gap_speed,
            target=gap_speed - motor_rate * jnp.maximum(lever, 0.0),
            k_normal=1.0 / MASS + rn * rn / INERTIA, k_tangent=1.0 / MASS + rt * rt / INERTIA,
        ))

    def along(leg, vx, vy, w, ux, uy):  # velocity of the foot's body point along (ux, uy)
        return (vx - w * leg["ry"]) * ux + (vy + w * leg["rx"]) * uy

    def push(leg, vx, vy, w, p, ux, uy):  # impulse p·(ux, uy) at the foot
        return vx + p * ux / MASS, vy + p * uy / MASS, w + p * (leg["rx"] * uy - leg["ry"] * ux) / INERTIA

    def sweep(_, carry):
        # One projected Gauss–Seidel sweep of sequential impulses: a normal and a friction row
        # per leg. A rolled loop: unrolled, XLA's fusion recomputes the chain and is far slower.
        vx, vy, w, lam_n, lam_t = carry
        lam_n, lam_t = list(lam_n), list(lam_t)
        for i, leg in enumerate(legs):
            vn = along(leg, vx, vy, w, leg["nx"], leg["ny"])
            lam = jnp.clip(lam_n[i] + (leg["target"] - vn) / leg["k_normal"], 0.0, leg["cap"])
            vx, vy, w = push(leg, vx, vy, w, lam - lam_n[i], leg["nx"], leg["ny"])
            lam_n[i] = lam
            vt = along(leg, vx, vy, w, leg["tx"], leg["ty"])
            bound = FRICTION * lam
            lam = jnp.clip(lam_t[i] - vt / leg["k_tangent"], -bound, bound)
            vx, vy, w = push(leg, vx, vy, w, lam - lam_t[i], leg["tx"], leg["ty"])
            lam_t[i] = lam
        return vx, vy, w, tuple(lam_n), tuple(lam_t)

    zero = jnp.zeros_like(vx)
    vx, vy, w, _, _ = jax.lax.fori_loop(
        0, SOLVER_ITERATIONS, sweep, (vx, vy, w, (zero, zero), (zero, zero))
    )

    # A leg whose cap was hit folds so its foot stays on the ground; otherwise the motor wins.
    folds, rates = [], []
    for leg in legs:
        vn = along(leg, vx, vy, w, leg["nx"], leg["ny"])
        rate = jnp.where(
            leg["folding"],
            jnp.maximum(leg["motor_rate"], (leg["gap_speed"] - vn) / leg["safe_lever"]),
            leg["motor_rate"],
        )
        rate = jnp.minimum(rate, (LEG_TRAVEL - leg["fold"]) / DT)
        folds.append(jnp.clip(leg["fold"] + rate * DT, 0.0, LEG_TRAVEL))
        rates.append(rate)

    # Semi-implicit Euler on the centre of mass, then back to the hull origin.
    angle = state.angle + w * DT
    ca, sa = _materialize(jnp.cos(angle), jnp.sin(angle))
    ox, oy = _rot(ca, sa, _COM_X, _COM_Y)
    px, py = comx + vx * DT - ox, comy + vy * DT - oy
    return px, py, vx, vy, angle, w, ca, sa, folds, rates, main, side


def _at_rest(vx, vy, w, ca, sa, folds, rates):
    """Box2D's per-body sleep test on the hull and both legs (velocities after the step)."""
    rest = jnp.logical_and(vx * vx + vy * vy < SLEEP_LINEAR**2, w * w < SLEEP_ANGULAR**2)
    for i, sign in enumerate(LEG_SIGNS):
        ct, st = _leg_rotation(folds[i])
        cl, sl = ca * ct - sign * sa * st, sa * ct + sign * ca * st
        hx, hy = _rot(cl, sl, sign * float(LEG_CENTRE[0]), float(LEG_CENTRE[1]))  # hinge → centre
        cx, cy = _rot(ca, sa, _COM_X, _COM_Y)
        rx, ry = hx - cx, hy - cy  # centre of mass → leg centre
        spin = sign * rates[i]  # the leg's rotation relative to the hull
        lvx = vx - w * ry - spin * hy
        lvy = vy + w * rx + spin * hx
        leg_rest = jnp.logical_and(
            lvx * lvx + lvy * lvy < SLEEP_LINEAR**2, (w + spin) ** 2 < SLEEP_ANGULAR**2
        )
        rest = jnp.logical_and(rest, leg_rest)
    return rest


class LunarLander(environment.Environment[EnvState, EnvParams]):
    """Gymnasium LunarLander-v3 (discrete, no wind) in pure JAX; see the module docstring."""

    def __init__(self):
        super().__init__()
        self.obs_shape = (8,)

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def step_env(
        self, key: jax.Array, state: EnvState, action: int | jax.Array, params: EnvParams
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[Any, Any]]:
        """One step: (obs f32[8], state, reward f32[], terminated bool[], info)."""
        action = jnp.asarray(action, jnp.int32)
        action = jnp.where(params.swap_side_engines & ((action == 1) | (action == 3)),
                           4 - action, action)
        d0, d1 = ((2.0 * u - 1.0) / SCALE for u in _uniforms(key, 2))
        gravity = jnp.asarray(params.gravity, jnp.float32)
        px, py, vx, vy, angle, w, ca, sa, folds, rates, main, side = _physics_step(
            state, action, d0, d1, gravity
        )
        window = _terrain_window(state.terrain, px)
        contact = [
            _foot(px, py, ca, sa, folds[i], sign, window)[2] <= CONTACT_TOL
            for i, sign in enumerate(LEG_SIGNS)
        ]
        at_rest = _at_rest(vx, vy, w, ca, sa, folds, rates)
        out_of_bounds = jnp.abs(px - W / 2) >= W / 2  # |obs x| ≥ 1
        crashed = jnp.logical_or(_hull_touches(px, py, ca, sa, window), out_of_bounds)
        # Expensive, and read by many consumers: `terminated` selects every state leaf in
        # gymnax's auto-reset (see `_materialize`).
        crashed, at_rest, *contact = _materialize(crashed, at_rest, *contact)
        crashed, at_rest = crashed > 0.5, at_rest > 0.5
        rest_steps = jnp.where(at_rest, state.rest_steps + 1, 0).astype(jnp.int32)
        asleep = rest_steps >= SLEEP_STEPS
        # Box2D zeroes the velocities of a body it puts to sleep.
        vx, vy, w = (jnp.where(asleep, 0.0, v) for v in (vx, vy, w))

        obs = _observation(px, py, vx, vy, angle, w, *contact)
        new_shaping = shaping(obs)
        reward = new_shaping - state.prev_shaping - 0.3 * main - 0.03 * side
        # Same precedence as Gymnasium: the rest check comes last and wins.
        reward = jnp.where(crashed, -100.0, reward)
        reward = jnp.where(asleep, 100.0, reward)
        outcome = jnp.where(asleep, 100.0, jnp.where(crashed, -100.0, 0.0))
        reward_vector = jnp.stack([outcome, new_shaping - state.prev_shaping,
                                   -main.astype(jnp.float32), -side.astype(jnp.float32)])
        terminated = jnp.logical_or(crashed, asleep)

        state = EnvState(
            x=px, y=py, vx=vx, vy=vy, angle=angle, ang_vel=w, fold0=folds[0], fold1=folds[1],
            contact0=contact[0], contact1=contact[1], terrain=state.terrain,
            prev_shaping=new_shaping, rest_steps=rest_steps, time=state.time + 1,
        )
        return (
            jax.lax.stop_gradient(obs),
            jax.lax.stop_gradient(state),
            reward.astype(jnp.float32),
            terminated,
            {"discount": 1.0 - terminated.astype(jnp.float32),
             "reward_vector": reward_vector.astype(jnp.float32)},
        )

    reward_dim = len(OBJECTIVES)

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        """A fresh episode: random terrain and push, then Gymnasium's one noop step (free fall:
        the lander starts 9 m above the pad, so no contact is possible in it)."""
        # Only the 7 terrain heights off the helipad and the 2 force components are random.
        u = _materialize(*_uniforms(key, 9))
        pad = [jnp.float32(HELIPAD_Y)] * 5
        height = jnp.stack([v * (H / 2) for v in u[:3]] + pad + [v * (H / 2) for v in u[3:7]])
        # Gymnasium's window: 0.33·(h[i−1] + h[i] + h[i+1]), where h[−1] wraps to the last value.
        terrain = 0.33 * (jnp.roll(height, 1)[:CHUNKS] + height[:CHUNKS] + height[1:])
        fx, fy = (u[7] * 2.0 - 1.0) * INITIAL_RANDOM, (u[8] * 2.0 - 1.0) * INITIAL_RANDOM
        gravity = jnp.asarray(params.gravity, jnp.float32)
        vx, vy = fx * DT / MASS, fy * DT / MASS + gravity * DT
        w = RESET_SPIN * vx
        angle = w * DT
        ox, oy = _rot(jnp.cos(angle), jnp.sin(angle), _COM_X, _COM_Y)
        px = W / 2 + _COM_X + vx * DT - ox
        py = H + _COM_Y + vy * DT - oy
        zero = jnp.float32(0.0)
        obs = _observation(px, py, vx, vy, angle, w, zero, zero)
        state = EnvState(
            x=px, y=py, vx=vx, vy=vy, angle=angle, ang_vel=w,
            fold0=jnp.float32(RESET_LEG_FOLD), fold1=jnp.float32(RESET_LEG_FOLD),
            contact0=zero, contact1=zero,
            terrain=terrain, prev_shaping=shaping(obs), rest_steps=jnp.int32(0), time=jnp.int32(0),
        )
        return obs, state

    def get_obs(self, state: EnvState, params=None, key=None) -> jax.Array:
        """Observation f32[8] of `state`."""
        return _observation(
            state.x, state.y, state.vx, state.vy, state.angle, state.ang_vel,
            state.contact0, state.contact1,
        )

    def is_terminated(self, state: EnvState, params: EnvParams) -> jax.Array:
        """Crash (hull on the ground, |x| ≥ 1) or landed (at rest for 25 steps), from `state`."""
        ca, sa = jnp.cos(state.angle), jnp.sin(state.angle)
        out = jnp.abs(state.x - W / 2) >= W / 2
        window = _terrain_window(state.terrain, state.x)
        crashed = jnp.logical_or(out, _hull_touches(state.x, state.y, ca, sa, window))
        return jnp.logical_or(crashed, state.rest_steps >= SLEEP_STEPS)

    @property
    def name(self) -> str:
        return "LunarLander-v3"

    @property
    def num_actions(self) -> int:
        return 4

    def action_space(self, params: EnvParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(4)

    def observation_space(self, params: EnvParams) -> spaces.Box:
        high = jnp.array([2.5, 2.5, 10.0, 10.0, 2 * jnp.pi, 10.0, 1.0, 1.0], jnp.float32)
        low = high.at[6:].set(0.0) * jnp.array([-1, -1, -1, -1, -1, -1, 1, 1], jnp.float32)
        return spaces.Box(low, high, (8,), jnp.float32)


def heuristic_action(obs: jax.Array) -> jax.Array:
    """Gymnasium's `heuristic` controller (discrete) in JAX: obs f32[..., 8] → action i32[...].

    Aim the hull at the pad (angle target from x and vx, clipped to ±0.4 rad), hover at a height
    proportional to |x|, and once a leg touches only cancel the fall speed.
    """
    x, y, vx, vy, angle, spin = (obs[..., i] for i in range(6))
    touching = jnp.logical_or(obs[..., 6] != 0, obs[..., 7] != 0)
    angle_targ = jnp.clip(x * 0.5 + vx * 1.0, -0.4, 0.4)
    hover_targ = 0.55 * jnp.abs(x)
    angle_todo = jnp.where(touching, 0.0, (angle_targ - angle) * 0.5 - spin * 1.0)
    hover_todo = jnp.where(touching, -vy * 0.5, (hover_targ - y) * 0.5 - vy * 0.5)
    return jnp.where(
        jnp.logical_and(hover_todo > jnp.abs(angle_todo), hover_todo > 0.05), 2,
        jnp.where(angle_todo < -0.05, 3, jnp.where(angle_todo > 0.05, 1, 0)),
    ).astype(jnp.int32)


# Ten source gravities over Gymnasium's open range (−12, 0), evenly spaced from −11.5 (near the
# strongest allowed; the heuristic lands ~60% there) to −2.0 (a slow, floaty descent), rounded
# to 0.01: −11.5, −10.44, −9.39, −8.33, −7.28, −6.22, −5.17, −4.11, −3.06, −2.0.
LUNAR_LANDER_GRAVITIES = tuple(float(g) for g in np.round(np.linspace(-11.5, -2.0, 10), 2))


def lunar_lander_family(gravities=LUNAR_LANDER_GRAVITIES, swap_side_engines=False) -> TaskFamily:
    """LunarLander tasks that differ in gravity (m/s², negative = downwards), and optionally in
    which orientation engine each side action fires.

    Args:
      gravities: n gravities.
      swap_side_engines: a bool, or n bools (per task): actions 1 and 3 fire the other engine.

    Returns a TaskFamily with params `EnvParams(gravity=f32[n], swap_side_engines=bool[n],
    max_steps_in_episode=i32[n])` and names like "gravity=-10.44" ("gravity=-10.44,swapped" for
    swapped engines). Raises ValueError unless every gravity is finite and in Gymnasium's
    allowed open interval (−12, 0).
    """
    gravities = np.asarray(gravities, dtype=np.float64).reshape(-1)
    if gravities.size == 0:
        raise ValueError("gravities is empty")
    low, high = GRAVITY_RANGE
    bad = ~np.isfinite(gravities) | (gravities <= low) | (gravities >= high)
    if np.any(bad):
        raise ValueError(
            f"gravities must be finite and lie strictly between {low} and {high} (Gymnasium's "
            f"LunarLander range), got {gravities[bad].tolist()}"
        )
    n = gravities.size
    swapped = np.broadcast_to(np.asarray(swap_side_engines, dtype=bool), (n,))
    params = EnvParams(
        gravity=jnp.asarray(gravities, jnp.float32),
        swap_side_engines=jnp.asarray(swapped),
        max_steps_in_episode=jnp.full((n,), MAX_STEPS, jnp.int32),
    )
    return TaskFamily(
        env=LunarLander(),
        params=params,
        names=tuple(f"gravity={g:g}" + (",swapped" if w else "") for g, w in zip(gravities, swapped)),
        discrete=True,
        action_dim=4,
        obs_dim=8,
    )
