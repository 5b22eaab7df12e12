"""Task families over brax locomotion envs: `brax_family(env_name, ...)`.

Every task is brax's env (`brax.envs.get_environment(env_name, backend=...)`) with its own
reward parameters and physics, all n tasks stepping in one `vmap` through the gymnax-style API
of `TaskFamily` (automatic reset, `info["final_observation"]`, truncation at
`max_steps_in_episode` kept apart from termination, which is brax's `done`: Ant falling over).

Reward. brax reports its reward as named components in `State.metrics` (`REWARD_COMPONENTS`:
HalfCheetah (run, ctrl), Ant (forward, survive, ctrl, contact)), and its reward is their sum.
A task's reward is wᵀr with r these components, except that the forward component is the task's:
`run = u·v` along the task's unit direction u (v: the torso's planar velocity, as brax computes
it, (x after − x before)/dt), or `run = −|u·v − v*|` for a task that tracks a target speed v*
(MAML's HalfCheetahVel). r is `info["reward_vector"]` (with `reward_dim`), so the reward-weight
view of `pgx_jax.envs.reward_weight` holds: the default task (u = +x, w = 1, no target) is brax's
own env, reward included.

Physics. `gravity_scales` multiply the System's gravity per task (`gravity`, read by the
generalized, positional and spring backends, and `opt.gravity`, read by mjx), through a copy of
the env that holds the task's System, as brax's own domain randomization does. Masses and
friction are not offered: the backends read them through derived fields that would also have to
change consistently (positional/spring use mass^(1 − spring_mass_scale), which is 1 for every
link of Ant; generalized and mjx keep inverse weights computed from the unscaled masses).

Actions are clipped to [−1, 1] (brax's actuator range) before the step, and the control cost is
brax's, of the clipped action.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from pgx_jax.envs.family import TaskFamily

BRAX_BACKENDS = ("generalized", "positional", "spring", "mjx")
PER_TASK_SETTINGS = ("directions", "target_speeds", "weights", "gravity_scales")


@dataclasses.dataclass(frozen=True)
class RewardComponents:
    """The reward components (`State.metrics` keys, in order) of a brax env whose reward is their
    sum; `forward` names the one that is the forward speed, scaled by `forward_scale` (HalfCheetah's
    `forward_reward_weight`, 1 by default); `planar`: the body can move in the plane (Ant) rather
    than along x only (HalfCheetah)."""

    names: tuple[str, ...]
    forward: str
    planar: bool
    forward_scale: float = 1.0


REWARD_COMPONENTS = {
    "halfcheetah": RewardComponents(("reward_run", "reward_ctrl"), "reward_run", planar=False),
    "ant": RewardComponents(("reward_forward", "reward_survive", "reward_ctrl", "reward_contact"),
                            "reward_forward", planar=True),
}


@struct.dataclass
class BraxParams(environment.EnvParams):
    """One task (leaves gain a leading task axis in a family).

    direction: f32[2], unit; the direction of the run term. target_speed: f32, v*.
    tracks_speed: bool, run = −|u·v − v*| when True, u·v otherwise. weights: f32[components],
    w. gravity_scale: f32, multiplies gravity. max_steps_in_episode: truncation limit.
    """

    direction: jax.Array = struct.field(default_factory=lambda: jnp.array([1.0, 0.0]))
    target_speed: jax.Array = struct.field(default_factory=lambda: jnp.float32(0.0))
    tracks_speed: jax.Array = struct.field(default_factory=lambda: jnp.bool_(False))
    weights: jax.Array | None = None
    gravity_scale: jax.Array = struct.field(default_factory=lambda: jnp.float32(1.0))
    max_steps_in_episode: int = 1000


@struct.dataclass
class BraxEnvState(environment.EnvState):
    brax: Any  # brax.envs.State


def _scaled_system(sys, gravity_scale):
    """The System with its gravity × gravity_scale, in the fields every backend reads."""
    return sys.tree_replace({"gravity": sys.gravity * gravity_scale,
                             "opt.gravity": sys.opt.gravity * gravity_scale})


class BraxTaskEnv(environment.Environment[BraxEnvState, BraxParams]):
    """A brax env as a gymnax environment whose params are one task (`BraxParams`)."""

    def __init__(self, env_name: str, backend: str = "positional"):
        super().__init__()
        try:  # the `brax` extra; imported only when a brax family is made
            from brax import envs as brax_envs
        except ImportError as error:
            raise ImportError(f'brax task families need brax ({error}): pip install -e ".[brax]"'
                              ) from error

        if env_name not in REWARD_COMPONENTS:
            raise ValueError(f"unknown brax env {env_name!r}; task families exist for "
                             f"{sorted(REWARD_COMPONENTS)}")
        if backend not in BRAX_BACKENDS:
            raise ValueError(f"unknown brax backend {backend!r}; choose one of {BRAX_BACKENDS}")
        self.env_name, self.backend = env_name, backend
        self.components = REWARD_COMPONENTS[env_name]
        self.brax_env = brax_envs.get_environment(env_name, backend=backend)
        self.reward_dim = len(self.components.names)
        self.obs_shape = (int(self.brax_env.observation_size),)
        self.action_dim = int(self.brax_env.action_size)

    def __hash__(self):  # jit's static `self`
        return hash((type(self), self.env_name, self.backend))

    def __eq__(self, other):
        return (type(other) is type(self) and other.env_name == self.env_name
                and other.backend == self.backend)

    @property
    def default_params(self) -> BraxParams:
        return BraxParams(weights=jnp.ones(self.reward_dim, jnp.float32))

    def task_env(self, params: BraxParams):
        """brax's env with this task's System (a shallow copy; the original is untouched)."""
        env = copy.copy(self.brax_env)
        env.sys = _scaled_system(env.sys, params.gravity_scale)
        return env

    def reset_env(self, key, params: BraxParams):
        state = self.task_env(params).reset(key)
        return state.obs, BraxEnvState(time=0, brax=state)

    def step_env(self, key, state: BraxEnvState, action, params: BraxParams):
        """One step: (obs f32[obs_dim], state, reward f32[], terminated bool[], info) with
        info["reward_vector"] f32[components] and info["velocity"] f32[2]."""
        del key  # brax's step is deterministic
        env = self.task_env(params)
        before = state.brax
        # brax updates `metrics` in place: give it a fresh dict, not the carried state's.
        after = env.step(before.replace(metrics=dict(before.metrics)),
                         jnp.clip(action, -1.0, 1.0))
        velocity = (after.pipeline_state.x.pos[0, :2] - before.pipeline_state.x.pos[0, :2]) / env.dt
        speed = jnp.dot(params.direction, velocity)
        run = jnp.where(params.tracks_speed, -jnp.abs(speed - params.target_speed), speed)
        components = jnp.stack([
            self.components.forward_scale * run if name == self.components.forward
            else after.metrics[name] for name in self.components.names]).astype(jnp.float32)
        reward = jnp.dot(params.weights, components)
        state = BraxEnvState(time=state.time + 1, brax=after)
        info = {"reward_vector": components, "velocity": velocity}
        return after.obs, state, reward, after.done > 0.5, info

    def get_obs(self, state: BraxEnvState, params=None, key=None):
        return state.brax.obs

    def is_terminated(self, state: BraxEnvState, params: BraxParams):
        return state.brax.done > 0.5

    @property
    def name(self) -> str:
        return f"brax-{self.env_name}-{self.backend}"

    @property
    def num_actions(self) -> int:
        return self.action_dim

    def action_space(self, params=None):
        return spaces.Box(-1.0, 1.0, (self.action_dim,), jnp.float32)

    def observation_space(self, params):
        return spaces.Box(-jnp.inf, jnp.inf, self.obs_shape, jnp.float32)


def _per_task(name: str, value, shape: tuple, n: int | None) -> np.ndarray | None:
    """`value` as f64[n, *shape] (None stays None); checks finiteness and the shape."""
    if value is None:
        return None
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 1 + len(shape) or array.shape[1:] != shape or array.shape[0] == 0:
        raise ValueError(f"{name} must have shape [n{''.join(f', {s}' for s in shape)}], got "
                         f"{array.shape}")
    if n is not None and array.shape[0] != n:
        raise ValueError(f"{name} has {array.shape[0]} tasks, the other settings {n}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or inf")
    return array


def brax_family(env_name: str, *, backend: str = "positional", directions=None,
                target_speeds=None, weights=None, gravity_scales=None,
                episode_length: int = 1000, names=None, **unknown) -> TaskFamily:
    """n tasks over brax's `env_name`; every per-task setting given has n rows, the others keep
    brax's defaults (u = +x, no target speed, w = 1, gravity × 1).

    Args:
      env_name: a key of `REWARD_COMPONENTS` ("halfcheetah", "ant").
      backend: one of `BRAX_BACKENDS`.
      directions: f[n, 2], the run direction (normalized here); HalfCheetah moves along x only,
        so its directions must be (±1, 0)·c.
      target_speeds: f[n], v* ≥ 0: the task's run term is −|u·v − v*|.
      weights: f[n, components] ≥ 0, w over `REWARD_COMPONENTS[env_name].names`.
      gravity_scales: f[n] > 0.
      episode_length: truncation limit (brax's training default: 1000).
      names: n task names (default: from the settings that vary).

    Raises:
      ValueError: on an unknown env, backend or setting (masses, friction: see the module
        docstring), settings of the wrong shape or disagreeing task
        counts, none given, a direction HalfCheetah cannot run in, a zero direction, negative
        weights or speeds, non-positive scales or episode length.
    """
    if unknown:
        raise ValueError(f"brax_family has no setting {sorted(unknown)}; per-task settings: "
                         f"{list(PER_TASK_SETTINGS)} (masses and friction are not offered: see "
                         "pgx_jax.envs.brax_family)")
    env = BraxTaskEnv(env_name, backend)
    components = env.components
    if (isinstance(episode_length, bool) or not isinstance(episode_length, (int, np.integer))
            or episode_length < 1):
        raise ValueError(f"episode_length must be a positive int, got {episode_length!r}")
    settings = {}
    n = None
    given = dict(zip(PER_TASK_SETTINGS, (directions, target_speeds, weights, gravity_scales)))
    shapes = {"directions": (2,), "target_speeds": (), "weights": (env.reward_dim,),
              "gravity_scales": ()}
    for name, value in given.items():
        shape = shapes[name]
        if name == "weights" and value is not None and np.ndim(value) == 2 and \
                np.shape(value)[1] != env.reward_dim:
            raise ValueError(f"weights must have one column per reward component of {env_name} "
                             f"{list(components.names)}, got shape {np.shape(value)}")
        settings[name] = _per_task(name, value, shape, n)
        if settings[name] is not None:
            n = settings[name].shape[0]
    if n is None:
        raise ValueError(f"give at least one per-task setting ({', '.join(PER_TASK_SETTINGS)})")
    direction = settings["directions"]
    if direction is not None:
        norm = np.linalg.norm(direction, axis=1, keepdims=True)
        if np.any(norm == 0):
            raise ValueError("directions contain a zero vector")
        direction = settings["directions"] = direction / norm
        if not components.planar and np.any(np.abs(direction[:, 1]) > 1e-9):
            raise ValueError(f"{env_name} moves along x only: directions must be (±1, 0)")
    for name in ("target_speeds", "weights"):
        if settings[name] is not None and np.any(settings[name] < 0):
            raise ValueError(f"{name} must be >= 0")
    if settings["gravity_scales"] is not None and np.any(settings["gravity_scales"] <= 0):
        raise ValueError("gravity_scales must be > 0")

    def column(value, default):
        return jnp.asarray(np.broadcast_to(default, (n,) + np.shape(default)) if value is None
                           else value, jnp.float32)

    params = BraxParams(
        direction=column(direction, np.array([1.0, 0.0])),
        target_speed=column(settings["target_speeds"], 0.0),
        tracks_speed=jnp.full((n,), settings["target_speeds"] is not None),
        weights=column(settings["weights"], np.ones(env.reward_dim)),
        gravity_scale=column(settings["gravity_scales"], 1.0),
        max_steps_in_episode=jnp.full((n,), int(episode_length), jnp.int32))
    if names is None:
        names = tuple(_task_name(settings, i) for i in range(n))
    elif len(names) != n:
        raise ValueError(f"names has {len(names)} entries for {n} tasks")
    return TaskFamily(env=env, params=params, names=tuple(names), discrete=False,
                      action_dim=env.action_dim, obs_dim=env.obs_shape[0])


def _task_name(settings: dict, i: int) -> str:
    """A short name from the settings that vary across tasks (all given ones when none varies),
    e.g. "v*=1.2" or "dir=180°,g×0.9" (directions already normalized)."""
    given = {name: value for name, value in settings.items() if value is not None}
    varying = {name: value for name, value in given.items() if np.ptp(value, axis=0).max() > 0}
    parts = []
    for name, value in (varying or given).items():
        row = value[i]
        if name == "directions":
            parts.append(f"dir={np.degrees(np.arctan2(row[1], row[0])) % 360:.4g}°")
        elif name == "target_speeds":
            parts.append(f"v*={row:.3g}")
        elif name == "weights":
            parts.append("w=(" + ",".join(f"{w:.3g}" for w in row) + ")")
        else:
            parts.append(f"g×{row:.3g}")
    return ",".join(parts)
