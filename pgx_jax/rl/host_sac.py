"""Multitask SAC on host-stepped envs (Meta-World): many learners in one update, the envs
stepping while it runs.

L learners (say, one per task group of every grouping and seed) share one network and
`SACConfig` and differ in their tasks and PRNG keys. Their states and replay buffers are stacked
on a leading axis and updated by one vmapped, jitted call per vector step, and all their envs
are rows of one host vector env (`LearnerLayout` says which rows are whose). Learners of
different group sizes are padded to the widest group; padding rows are never written to a
buffer, so every learner trains exactly as it would alone (`tests/test_sac_host.py` checks
that against separate runs). On a 2-core CPU this buys no speed — the vmapped updates of 10
Soft-Mod learners ran 0.9× the same learners one after another (`benchmarks/sac_update.py`):
the update is arithmetic-bound there, and XLA's batched matmuls are a little slower than plain
ones. It is for accelerators, which one learner's batch of 256 cannot fill, and it makes the
whole comparison one run.

Overlap: each vector step first picks the actions (a small jitted call, with the actor as of
the previous update), then dispatches the update — JAX returns at once and XLA runs it on its
own threads — and steps the MuJoCo envs while it runs; so a step costs about the slower of the
two, not their sum. The price is a policy lag of one update: the actions of step t come from
the actor before update t (a loop that waits for the update would use the actor after it; SAC
is off-policy, so only the data's freshness changes, by one update). `overlap=False` waits for
each update before stepping the envs: the same numbers, for timing the overlap.

One vector step, for every learner l with its g_l tasks × E envs:
  actions ← π_l(obs) (uniform in [−1, 1] during the `learning_starts` warm-up);
  buffer_l ← buffer_l + the previous step's g_l·E transitions;
  `updates_per_step` SAC updates of learner l on batches from buffer_l (after the warm-up);
  the envs step with the actions (while the update runs).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pgx_jax.rl.host import HostRunner, _mean_of_ended, play_episodes
from pgx_jax.rl.ppo import per_task_mean
from pgx_jax.rl.sac import Batch, ReplayBuffer, init_sac
from pgx_jax.rl.sac import update as sac_update


@dataclasses.dataclass(frozen=True)
class LearnerLayout:
    """L learners' task groups and where their envs sit in one host vector env.

    Attributes:
      groups: learner l trains on the family tasks `groups[l]` (a tuple of task ids).
    The host vector's rows are the groups one after the other (`rows`, int[R], R = Σ g_l); on
    the learner side every learner is padded to G = max g_l task slots (padding last).
    """

    groups: tuple[tuple[int, ...], ...]

    def __post_init__(self):
        if not self.groups or any(len(g) == 0 for g in self.groups):
            raise ValueError(f"groups must be a non-empty list of non-empty task groups, got "
                             f"{self.groups!r}")
        if any(len(set(g)) != len(g) for g in self.groups):
            raise ValueError(f"a group repeats a task: {self.groups!r}")

    @classmethod
    def of(cls, groups) -> "LearnerLayout":
        return cls(tuple(tuple(int(t) for t in g) for g in groups))

    @property
    def num_learners(self) -> int:
        return len(self.groups)

    @property
    def width(self) -> int:
        """G, the task slots of every learner (its group, then padding)."""
        return max(len(g) for g in self.groups)

    @functools.cached_property
    def rows(self) -> np.ndarray:
        """int[R]: the family task of every row of the host vector env."""
        return np.asarray([t for g in self.groups for t in g])

    @functools.cached_property
    def _row_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(learner, slot) of every row: int[R] each."""
        learner = np.repeat(np.arange(self.num_learners), [len(g) for g in self.groups])
        slot = np.concatenate([np.arange(len(g)) for g in self.groups])
        return learner, slot

    @functools.cached_property
    def tasks(self) -> np.ndarray:
        """int[L, G]: the task of every slot (padding slots repeat the learner's first task)."""
        return np.asarray([g + (g[0],) * (self.width - len(g)) for g in self.groups])

    @functools.cached_property
    def sizes(self) -> np.ndarray:
        """int[L]: g_l."""
        return np.asarray([len(g) for g in self.groups])

    def slot_tasks(self, envs_per_task: int) -> jax.Array:
        """int[L, G·E]: the task of every env slot on the learner side."""
        return jnp.asarray(np.repeat(self.tasks, envs_per_task, axis=1), jnp.int32)

    def to_learners(self, x: np.ndarray) -> np.ndarray:
        """Host rows x[R, ...] → x[L, G, ...] (padding slots 0)."""
        out = np.zeros((self.num_learners, self.width) + x.shape[1:], x.dtype)
        out[self._row_index] = x
        return out

    def to_rows(self, x: np.ndarray) -> np.ndarray:
        """x[L, G, ...] → host rows x[R, ...] (padding dropped)."""
        return np.asarray(x)[self._row_index]

    def per_learner(self, per_row: np.ndarray, num_tasks: int) -> np.ndarray:
        """Per-row values f32[R] → f32[L, num_tasks] by task, NaN for tasks a learner lacks."""
        out = np.full((self.num_learners, num_tasks), np.nan, np.float32)
        out[self._row_index[0], self.rows] = per_row
        return out


@struct.dataclass
class HostSACResult:
    """Learner states stacked on a leading axis L (`SACState` [L, ...]); metrics per log
    interval: episode_return, success f32[I, L, n] (NaN where a learner lacks the task or no
    episode ended), the mean update metrics f32[I, L], and the host's env_seconds (stepping
    the envs) and wait_seconds (blocked on the device) f64[I]."""

    state: Any
    metrics: dict


@functools.partial(jax.jit, static_argnums=(0, 1))
def _act(agent, warmup: bool, actor, obs, task, keys):
    """(actions f32[L, M, A], update keys key[L], next keys key[L]) for raw obs f32[L, M, d]."""
    inputs = agent.observe(obs, task)

    # Learner l's draws depend on its key alone, not on the padded width M it shares: with
    # JAX's default threefry_partitionable, uniform draws of a larger shape begin with those of
    # the smaller one, so a learner's actions equal those it would draw alone.
    def one(actor, inputs, key):
        key, key_action, key_update = jax.random.split(key, 3)
        if warmup:
            action = jax.random.uniform(key_action, inputs.shape[:-1] + (agent.action_dim,),
                                        minval=-1.0, maxval=1.0)
        else:
            action, _ = agent.actor.sample(actor, inputs, key_action)
        return action, key_update, key

    return jax.vmap(one)(actor, inputs, keys)


def _learn(agent, config, update: bool, sac, buffer, rows, counts, keys):
    """Adds each learner's rows (the first counts[l] of its M) and, if `update`, runs
    `config.updates_per_step` SAC updates per learner: (sac, buffer, mean metrics f32[L]).

    The buffers are written and sampled for all learners at once, so an update only sees its
    batches [U, B], never a learner's whole buffer.
    """
    obs, action, reward, final_obs, terminated, task = rows
    batch = Batch(obs=agent.observe(obs, task), action=action, reward=reward,
                  next_obs=agent.observe(final_obs, task), terminated=terminated, task=task)
    buffer = jax.vmap(ReplayBuffer.add)(buffer, batch, counts)
    if not update:
        return sac, buffer, {}
    sample_keys, update_keys = jax.vmap(
        lambda key: jax.random.split(key, (2, config.updates_per_step)), out_axes=1)(keys)
    batches = jax.vmap(lambda buffer, keys: jax.vmap(
        lambda key: buffer.sample(key, config.batch_size))(keys))(buffer, sample_keys)  # [L, U, B]

    def one(sac, batches, update_keys):
        def step(sac, inputs):
            return sac_update(agent, config, sac, *inputs)

        sac, metrics = jax.lax.scan(step, sac, (batches, update_keys))
        return sac, jax.tree_util.tree_map(jnp.mean, metrics)

    sac, metrics = jax.vmap(one)(sac, batches, update_keys)
    return sac, buffer, metrics


# The states and buffers are donated: every step rewrites them in place, not by copy.
_learn_jit = jax.jit(_learn, static_argnums=(0, 1, 2), donate_argnums=(3, 4))


def init_learners(agent, config, layout: LearnerLayout, obs_dim: int, keys: jax.Array,
                  steps: int, envs_per_task: int):
    """(SACState [L, ...], empty ReplayBuffer [L, C, ...]): learner l's networks from keys[l]
    (as `init_sac`); C = min(buffer_size, the most rows any learner adds in `steps` steps), so
    a learner wraps around exactly when it would alone."""
    sac = jax.vmap(lambda key: init_sac(agent, config, obs_dim, key))(keys)
    # Every buffer has the widest learner's capacity (one stacked array): memory is
    # L × C × ~(2·(d + n) + A + 3) floats, e.g. ~2.5 GB for `--preset medium`'s ~20 learners.
    capacity = min(config.buffer_size, steps * layout.width * envs_per_task)
    empty = ReplayBuffer.create(capacity, Batch.example(obs_dim + agent.num_tasks,
                                                        agent.action_dim))
    buffer = jax.tree_util.tree_map(
        lambda x: jnp.broadcast_to(x, (layout.num_learners,) + x.shape).copy(), empty)
    return sac, buffer


def train_sac_on_host(agent, config, envs, layout: LearnerLayout, keys: jax.Array, *,
                      log_every: int = 500, progress: Callable | None = None,
                      overlap: bool = True) -> HostSACResult:
    """Multitask SAC (`pgx_jax.rl.sac`) for every learner of `layout`, on one host vector env.

    `config.total_steps` env steps per task (`config.total_steps // E` vector steps), the first
    `config.learning_starts` of them with uniform random actions; see the module docstring for
    one step.

    Args:
      agent: from `make_sac_agent(config, family.num_tasks, ...)` (one-hot over the family).
      envs: `family.make_envs(stream, rows=layout.rows)`: E = `config.num_envs` envs per row.
      layout: the learners' task groups.
      keys: key[L], learner l's PRNG key (init, actions, batches, updates).
      log_every: vector steps per metrics row; `progress(step, mean_return, mean_success)`
        (over learners and tasks; NaN when no episode ended) is called then.
      overlap: step the envs while the update runs (False: wait for it; the same numbers).
    """
    num_envs = config.num_envs
    if envs.shape != (len(layout.rows), num_envs) or not np.array_equal(envs.rows, layout.rows):
        raise ValueError(f"the envs' rows {envs.rows.tolist()} × {envs.shape[1]} must be the "
                         f"layout's {layout.rows.tolist()} × config.num_envs={num_envs}")
    if keys.shape != (layout.num_learners,):
        raise ValueError(f"keys must be key[{layout.num_learners}] (typed, from jax.random.key; "
                         f"one per learner), got shape {keys.shape}")
    if agent.num_tasks != envs.family.num_tasks:
        raise ValueError(f"the agent's one-hot has {agent.num_tasks} tasks, the envs' family "
                         f"{envs.family.num_tasks}")
    steps, warmup_steps = config.total_steps // num_envs, config.learning_starts // num_envs
    if steps <= max(warmup_steps, 1):
        raise ValueError(f"config.total_steps={config.total_steps} leaves no update after the "
                         f"warm-up (learning_starts={config.learning_starts}) with "
                         f"{num_envs} envs per task")
    obs_dim, width = envs.family.obs_dim, layout.width * num_envs
    init_keys, keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    sac, buffer = init_learners(agent, config, layout, obs_dim, init_keys, steps, num_envs)
    task = layout.slot_tasks(num_envs)  # int[L, M]
    counts = jnp.asarray(layout.sizes * num_envs, jnp.int32)

    def learner_side(x: np.ndarray) -> np.ndarray:  # host [R, E, ...] → [L, M, ...]
        padded = layout.to_learners(x)
        return padded.reshape((layout.num_learners, width) + x.shape[2:])

    runner = HostRunner.start(envs)
    obs = learner_side(runner.obs)
    pending = None  # the last step's transitions, added at the next update
    intervals, window = [], collections.defaultdict(list)
    env_seconds = wait_seconds = 0.0
    for step in range(steps):
        warmup = step < warmup_steps
        start = time.perf_counter()
        action, update_keys, keys = _act(agent, warmup, sac.actor, obs, task, keys)
        action = np.asarray(action)  # waits for the previous update
        if pending is not None:
            sac, buffer, update_metrics = _learn_jit(agent, config, not warmup, sac, buffer,
                                                     pending, counts, update_keys)
            if update_metrics:
                window["update"].append(update_metrics)
            if not overlap:
                jax.block_until_ready(sac)
        stepped = time.perf_counter()
        host_action = layout.to_rows(action.reshape(layout.num_learners, layout.width,
                                                    num_envs, -1))
        out = runner.step(envs, host_action)
        wait_seconds += stepped - start
        env_seconds += time.perf_counter() - stepped
        pending = (obs, action, learner_side(out.reward),
                   learner_side(out.final_obs), learner_side(out.terminated.astype(np.float32)),
                   task)
        obs = learner_side(runner.obs)
        window["episode_return"].append(out.finished_return)
        window["success"].append(out.finished_success)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            row = {name: layout.per_learner(per_task_mean(np.stack(window[name])),
                                            agent.num_tasks)
                   for name in ("episode_return", "success")}
            updates = window["update"]  # device arrays, read once per interval
            for name in (updates[0] if updates else {}):
                row[name] = np.mean([np.asarray(u[name]) for u in updates], axis=0)
            intervals.append({**row, "env_seconds": env_seconds, "wait_seconds": wait_seconds})
            window, env_seconds, wait_seconds = collections.defaultdict(list), 0.0, 0.0
            if progress is not None:
                progress(step, _mean_of_ended(row["episode_return"]),
                         _mean_of_ended(row["success"]))
    jax.block_until_ready(sac)
    # Intervals inside the warm-up have no update metrics: NaN there.
    names = dict.fromkeys(name for row in intervals for name in row)
    nan = np.full(layout.num_learners, np.nan, np.float32)
    return HostSACResult(state=sac, metrics={
        name: np.stack([np.asarray(row.get(name, nan)) for row in intervals]) for name in names})


@functools.partial(jax.jit, static_argnums=0)
def _greedy(agent, actor, obs, task):
    return jax.vmap(agent.actor.mode)(actor, agent.observe(obs, task))


def evaluate_sac_on_host(agent, sac_state, envs, layout: LearnerLayout, *, episodes: int = 1,
                         max_episode_steps: int | None = None):
    """Success rate and return of every learner's greedy policy (tanh of the mean) on each of
    its tasks, over `episodes` whole episodes (of at most `max_episode_steps`, default the
    family's) in each of the E envs of `envs` (rows `layout.rows`): (success f32[L, n],
    return f32[L, n]), NaN for tasks a learner lacks."""
    if not np.array_equal(envs.rows, layout.rows):
        raise ValueError(f"the envs' rows {envs.rows.tolist()} must be the layout's "
                         f"{layout.rows.tolist()}")
    max_episode_steps = max_episode_steps or envs.family.max_episode_steps
    num_envs = envs.shape[1]
    task = layout.slot_tasks(num_envs)

    def policy(obs: np.ndarray) -> np.ndarray:
        padded = layout.to_learners(obs).reshape(layout.num_learners, -1, obs.shape[-1])
        action = np.asarray(_greedy(agent, sac_state.actor, padded, task))
        return layout.to_rows(action.reshape(layout.num_learners, layout.width, num_envs, -1))

    success, returns = play_episodes(envs, policy, episodes * max_episode_steps)
    return (layout.per_learner(success, agent.num_tasks),
            layout.per_learner(returns, agent.num_tasks))
