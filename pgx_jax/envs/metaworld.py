"""Meta-World MT10 as a host-stepped task family: the real MuJoCo tasks, stepped on the CPU.

There is no JAX port of Meta-World (7 of the 10 MT10 models use collisions MJX lacks), so the
envs run in a Gymnasium vector env on the host and only the policy is jitted
(`pgx_jax.rl.host`). A `MetaWorldFamily` describes the tasks; `HostEnvs` is a live vector env
laid out as [R rows, E envs per row] — by default one row per task, [n, E], the layout of the JAX
families, so rollouts come back as the same `Trajectory` / `Transitions` and the estimator and
PPO code do not know the difference; rows may repeat tasks (many SAC learners in one vector).

Needs the `metaworld` extra (`pip install -e ".[metaworld]"`: metaworld 3.1.1, MuJoCo 3.3.0).
Observations are Meta-World's 39 numbers without its one-hot (the agent appends the task id, as it
does for every family); actions are 4 numbers in [−1, 1]; episodes last 500 steps and never end
early (Meta-World's training setting: no termination on success). Each reset draws one of the
task's 50 goal variations, as `gym.make_vec("Meta-World/MT10")` does. An episode succeeds if
`info["success"]` is true at any of its steps (Meta-World's definition).
"""

from __future__ import annotations

import dataclasses
import functools
import zlib

import numpy as np

from pgx_jax._validate import check_int

# The MT10 tasks, in Meta-World's order.
MT10_TASKS = (
    "reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
    "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3",
)
VECTOR_STRATEGIES = ("sync", "async")


def _import_metaworld():
    import importlib

    try:
        gymnasium = importlib.import_module("gymnasium")
        importlib.import_module("metaworld")  # registers the Meta-World/* envs with gymnasium
    except ImportError as error:
        raise ImportError(
            f"Meta-World is not installed ({error}); install the extra: pip install -e \".[metaworld]\""
        ) from error
    return gymnasium


@dataclasses.dataclass(frozen=True)
class MetaWorldFamily:
    """n Meta-World tasks stepped on the host, E envs each.

    Attributes:
      names: Meta-World task names (default: MT10's ten).
      envs_per_task: E, parallel envs per task.
      seed: seeds the goal variations each env draws from, the envs and their resets.
      vector_strategy: "sync" (one process) or "async" (one subprocess per env).
      max_episode_steps: episode length (Meta-World: 500).
    """

    names: tuple[str, ...] = MT10_TASKS
    envs_per_task: int = 1
    seed: int = 0
    vector_strategy: str = "sync"
    max_episode_steps: int = 500

    discrete = False
    action_dim = 4
    obs_dim = 39

    def __post_init__(self):
        if not isinstance(self.names, tuple) or not self.names:
            raise ValueError(f"names must be a non-empty tuple of task names, got {self.names!r}")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"names repeat a task: {self.names}")
        for name in ("envs_per_task", "max_episode_steps"):
            check_int(f"MetaWorldFamily.{name}", getattr(self, name), minimum=1)
        check_int("MetaWorldFamily.seed", self.seed, minimum=0)
        if self.vector_strategy not in VECTOR_STRATEGIES:
            raise ValueError(f"vector_strategy must be one of {VECTOR_STRATEGIES}, "
                             f"got {self.vector_strategy!r}")

    @property
    def num_tasks(self) -> int:
        return len(self.names)

    def subset(self, task_ids) -> "MetaWorldFamily":
        """The family restricted to `task_ids` (in that order)."""
        ids = np.asarray(task_ids, dtype=int).reshape(-1)
        if ids.size == 0 or ids.min() < 0 or ids.max() >= self.num_tasks:
            raise ValueError(f"task_ids must be non-empty and lie in [0, {self.num_tasks}), "
                             f"got {ids.tolist()}")
        return dataclasses.replace(self, names=tuple(self.names[i] for i in ids))

    def check_available(self) -> None:
        """Raises ImportError if Meta-World is not installed, ValueError for unknown task names
        (without starting any env)."""
        _import_metaworld()
        unknown = sorted(set(self.names) - set(_known_tasks()))
        if unknown:
            raise ValueError(f"unknown Meta-World tasks {unknown}; e.g. {MT10_TASKS[:3]}")

    def make_envs(self, stream=0, rows=None) -> "HostEnvs":
        """Starts the vector env (a few seconds: MuJoCo models are compiled per env).

        Args:
          stream: envs of one family `seed` and `stream` replay the same episodes under the same
            actions; give each use (training, evaluation, collection) its own stream. An int, or
            one per row (int[R]: learners of several seeds in one vector).
          rows: the task (an index into `names`) of each row of the [R, E] env grid; repeats
            allowed (several learners' envs in one vector). Default: every task once, in order.

        Env e of a row of task `name` is seeded by (seed, stream, name, e) alone, so it replays
        the same episodes wherever its row sits: a group's envs inside a vector of many groups
        step exactly as in a vector of their own.
        """
        return HostEnvs(self, stream, rows)


def _env_seed(family_seed: int, stream: int, name: str, env: int) -> int:
    """Meta-World's seed for env `env` of task `name` (≥ 1: Meta-World reads 0 as "no seed")."""
    entropy = [family_seed, stream, zlib.crc32(name.encode()), env]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] % 2**30) + 1


class HostEnvs:
    """A live Gymnasium vector env over an [R, E] grid of Meta-World envs (flat index row · E +
    env; row r runs task `rows[r]` of the family, by default R = n and row r = task r).

    `reset()` and `step(action f32[R, E, 4])` return arrays shaped [R, E, ...]. Close it (or use
    it as a context manager) to stop async workers.
    """

    def __init__(self, family: MetaWorldFamily, stream=0, rows=None):
        family.check_available()
        gymnasium = _import_metaworld()
        import metaworld

        rows = np.arange(family.num_tasks) if rows is None else np.asarray(rows).reshape(-1)
        if (rows.size == 0 or not np.issubdtype(rows.dtype, np.integer) or rows.min() < 0
                or rows.max() >= family.num_tasks):
            raise ValueError(f"rows must be non-empty task indices in [0, {family.num_tasks}), "
                             f"got {rows.tolist()}")
        if np.ndim(stream) and np.shape(stream) != rows.shape:
            raise ValueError(f"stream must be an int or one per row (shape {rows.shape}), got "
                             f"shape {np.shape(stream)}")
        streams = np.broadcast_to(np.asarray(stream, int), rows.shape)
        self.family, self.rows = family, rows
        self.shape = (rows.size, family.envs_per_task)
        vector = {"sync": gymnasium.vector.SyncVectorEnv,
                  "async": gymnasium.vector.AsyncVectorEnv}[family.vector_strategy]
        # One env per (row, e); Meta-World seeds an env's goal variations and its generator
        # from `seed` (`reset(seed=...)` does not reseed it).
        self.envs = vector(
            [functools.partial(metaworld.make_mt_envs, family.names[task],
                               seed=_env_seed(family.seed, int(row_stream), family.names[task],
                                              env),
                               use_one_hot=False, max_episode_steps=family.max_episode_steps)
             for task, row_stream in zip(rows, streams) for env in range(family.envs_per_task)],
            autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)

    def _grid(self, x) -> np.ndarray:
        x = np.asarray(x)
        return x.reshape(self.shape + x.shape[1:])

    def reset(self) -> np.ndarray:
        """Fresh episodes in every env, each on a goal variation drawn by the env's generator:
        obs f32[R, E, 39]."""
        obs, _ = self.envs.reset()
        return self._grid(obs).astype(np.float32)

    def step(self, action: np.ndarray):
        """One step of every env (auto-reset on the same step).

        Args:
          action: f32[R, E, 4]; clipped to [−1, 1] here, as Meta-World does internally.
        Returns:
          (obs f32[R, E, 39] (the reset observation where an episode ended), reward f32[R, E],
          terminated bool[R, E], truncated bool[R, E], final_obs f32[R, E, 39] (the observation
          before the reset; = obs where nothing ended), success bool[R, E]).
        """
        action = np.clip(np.asarray(action, np.float64), -1.0, 1.0).reshape(-1, self.family.action_dim)
        obs, reward, terminated, truncated, info = self.envs.step(action)
        done = np.logical_or(terminated, truncated)
        final_obs = np.array(obs, copy=True)
        if done.any():
            final_obs[done] = np.stack([info["final_obs"][i] for i in np.flatnonzero(done)])
            success = np.array([info["final_info"]["success"][i] if d else info["success"][i]
                                for i, d in enumerate(done)], dtype=bool)
        else:
            success = np.asarray(info["success"], dtype=bool)
        return (self._grid(obs).astype(np.float32), self._grid(reward).astype(np.float32),
                self._grid(terminated), self._grid(truncated),
                self._grid(final_obs).astype(np.float32), self._grid(success))

    def close(self) -> None:
        self.envs.close()

    def __enter__(self) -> "HostEnvs":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _known_tasks() -> tuple[str, ...]:
    import metaworld

    return tuple(metaworld.ALL_V3_ENVIRONMENTS)
