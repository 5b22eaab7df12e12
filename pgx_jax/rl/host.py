"""PPO, evaluation and transition collection on host-stepped envs (Meta-World).

The envs step on the host (`pgx_jax.envs.metaworld.HostEnvs`); the policy's forward pass, the
normalizers and the PPO update (`pgx_jax.rl.ppo.learn`) are jitted. Rollouts come back as the
JAX families' `Trajectory` [T, n, E] and the estimator's `Transitions`, so everything downstream
is shared with the JAX families.

Normalization, as Meta-World PPO baselines do it (Gymnasium's NormalizeObservation /
NormalizeReward semantics):
  * observations: running mean and variance over every observation seen in training;
    the policy input is clip((s − μ) / √(σ² + 1e-8), ±10), then the task one-hot. The statistics
    are frozen at evaluation and collection, and belong to θ* (saved with it).
  * rewards: divided by the running standard deviation of each env's discounted return (γ), for
    the critic's sake; reported returns and success are always the raw ones.
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pgx_jax.rl.moments import RunningMoments
from pgx_jax.rl.ppo import (
    Agent,
    PPOConfig,
    Trajectory,
    episode_metrics,
    learn,
    make_optimizer,
    per_task_mean,
    transitions_from_rollout,
)
from pgx_jax.types import Transitions

@struct.dataclass
class RewardScaler:
    """Divides rewards by the running std of each env's discounted return (Gymnasium semantics).

    Attributes: discounted f32[n, E] running discounted return per env; moments of its values.
    """

    discounted: jax.Array
    moments: RunningMoments

    @classmethod
    def create(cls, shape) -> "RewardScaler":
        return cls(discounted=jnp.zeros(shape), moments=RunningMoments.create())

    def scale(self, reward: jax.Array) -> jax.Array:
        return reward / jnp.sqrt(self.moments.var + 1e-8)


@partial(jax.jit, static_argnames="gamma")
def scale_rewards(scaler: RewardScaler, reward: jax.Array, done: jax.Array, gamma: float):
    """Updates the scaler step by step over a rollout and scales it.

    reward, done: f32[T, n, E]. Returns (scaled rewards f32[T, n, E], updated scaler).
    """

    def step(scaler, inputs):
        reward_t, done_t = inputs
        discounted = scaler.discounted * gamma + reward_t
        scaler = RewardScaler(discounted=discounted * (1.0 - done_t),
                              moments=scaler.moments.update(discounted))
        return scaler, scaler.scale(reward_t)

    scaler, scaled = jax.lax.scan(step, scaler, (reward, done))
    return scaled, scaler


def track_episodes(running_return, running_success, reward, success, done):
    """Bookkeeping of one step: (running return, running success) → finished episodes' values.

    Args:
      running_return f32[...], running_success bool[...]: of the episodes in progress.
      reward f32[...], success bool[...], done bool[...]: this step's.
    Returns:
      (running_return', running_success', finished_return f32[...] (NaN where no episode ended),
      finished_success f32[...] (1 if `success` held at any step of the ended episode, else 0;
      NaN where none ended)).
    """
    episode_return = running_return + reward
    episode_success = np.logical_or(running_success, success)
    finished_return = np.where(done, episode_return, np.nan)
    finished_success = np.where(done, episode_success.astype(np.float32), np.nan)
    return (np.where(done, 0.0, episode_return), np.where(done, False, episode_success),
            finished_return, finished_success)


@dataclasses.dataclass
class HostRunner:
    """The host side of a rollout in progress: raw obs f32[n, E, d] and running episode stats."""

    obs: np.ndarray
    episode_return: np.ndarray
    episode_success: np.ndarray

    @classmethod
    def start(cls, envs) -> "HostRunner":
        obs = envs.reset()
        return cls(obs=obs, episode_return=np.zeros(obs.shape[:2], np.float32),
                   episode_success=np.zeros(obs.shape[:2], bool))

    def step(self, envs, action: np.ndarray) -> "HostStep":
        """Steps `envs` with `action` f32[n, E, A]; moves the runner to the next observations."""
        obs, reward, terminated, truncated, final_obs, success = envs.step(action)
        done = np.logical_or(terminated, truncated)
        (self.episode_return, self.episode_success, finished_return,
         finished_success) = track_episodes(self.episode_return, self.episode_success, reward,
                                            success, done)
        self.obs = obs
        return HostStep(reward=reward, terminated=terminated, done=done, final_obs=final_obs,
                        finished_return=finished_return, finished_success=finished_success)


@dataclasses.dataclass
class HostStep:
    """One vector step, all [n, E]: reward, terminated, done, final_obs (pre-reset, f32[n, E, d]),
    and the finished episodes' return and success (NaN where none ended; `track_episodes`)."""

    reward: np.ndarray
    terminated: np.ndarray
    done: np.ndarray
    final_obs: np.ndarray
    finished_return: np.ndarray
    finished_success: np.ndarray


def _mean_of_ended(values: np.ndarray) -> float:
    """The mean over tasks that ended an episode (NaN if none did), for progress reports."""
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")


@partial(jax.jit, static_argnames=("agent", "greedy"))
def _act(agent: Agent, params, obs_moments: RunningMoments, obs, task_grid, key, greedy=False):
    policy_obs = agent.observe(obs_moments.normalize(obs), task_grid)
    if greedy:
        action = agent.actor.mode(params["actor"], policy_obs)
    else:
        action = agent.actor.sample(params["actor"], policy_obs, key)
    log_prob = agent.actor.log_prob(params["actor"], policy_obs, action)
    value = agent.critic.apply(params["critic"], policy_obs)
    return policy_obs, action, log_prob, value


@partial(jax.jit, static_argnames="agent")
def _value(agent: Agent, params, obs_moments: RunningMoments, obs, task_grid):
    return agent.critic.apply(params["critic"],
                              agent.observe(obs_moments.normalize(obs), task_grid))


@dataclasses.dataclass
class HostRollout:
    """A host rollout: `trajectory` [T, n, E] with raw rewards and policy-input obs; `raw_obs`
    f32[T, n, E, d]; finished-episode `returns` and `success` f32[T, n, E] (NaN elsewhere);
    `env_seconds` and `policy_seconds` spent stepping the envs and in the policy."""

    trajectory: Trajectory
    raw_obs: np.ndarray
    returns: np.ndarray
    success: np.ndarray
    env_seconds: float
    policy_seconds: float


def host_rollout(agent: Agent, params, obs_moments: RunningMoments, envs, runner: HostRunner,
                 task_ids, key: jax.Array, num_steps: int, greedy: bool = False) -> HostRollout:
    """Steps the host envs `num_steps` times with the policy; updates `runner` in place.

    Args:
      task_ids: int[n] the family ids of the envs' tasks (for the one-hot input).
    """
    task_grid = _task_grid(envs, task_ids)
    columns = {name: [] for name in ("obs", "raw_obs", "action", "log_prob", "value", "reward",
                                     "terminated", "done", "next_value", "returns", "success")}
    env_seconds = policy_seconds = 0.0
    for step_key in jax.random.split(key, num_steps):
        start = time.perf_counter()
        policy_obs, action, log_prob, value = _act(agent, params, obs_moments, runner.obs,
                                                   task_grid, step_key, greedy)
        action = np.asarray(action)
        raw_obs = runner.obs
        stepped = time.perf_counter()
        out = runner.step(envs, action)
        env_done = time.perf_counter()
        next_value = _value(agent, params, obs_moments, out.final_obs, task_grid)
        for name, value_t in (("obs", policy_obs), ("raw_obs", raw_obs), ("action", action),
                              ("log_prob", log_prob), ("value", value), ("reward", out.reward),
                              ("terminated", out.terminated.astype(np.float32)),
                              ("done", out.done.astype(np.float32)), ("next_value", next_value),
                              ("returns", out.finished_return),
                              ("success", out.finished_success)):
            columns[name].append(value_t)
        env_seconds += env_done - stepped
        policy_seconds += (stepped - start) + (time.perf_counter() - env_done)
    stacked = {name: np.stack([np.asarray(v) for v in values]) for name, values in columns.items()}
    trajectory = Trajectory(**{name: jnp.asarray(stacked[name]) for name in (
        "obs", "action", "log_prob", "value", "reward", "terminated", "done", "next_value")})
    return HostRollout(trajectory=trajectory, raw_obs=stacked["raw_obs"],
                       returns=stacked["returns"], success=stacked["success"],
                       env_seconds=env_seconds, policy_seconds=policy_seconds)


@struct.dataclass
class HostTrainState:
    """Everything a host PPO run carries between updates (a checkpoint, envs aside)."""

    params: Any
    opt_state: Any
    obs_moments: RunningMoments
    reward_scaler: RewardScaler
    key: jax.Array
    update: jax.Array  # int32[] updates done


@struct.dataclass
class HostTrainResult:
    """The trained agent params, the normalizer statistics that belong with them, and metrics
    per update: episode_return, success, episodes f32[U, n]; policy_loss, value_loss, entropy,
    env_seconds, policy_seconds, learn_seconds f32[U]."""

    params: Any
    obs_moments: RunningMoments
    reward_scaler: RewardScaler
    metrics: dict


def init_host_train(agent: Agent, config: PPOConfig, num_tasks: int, obs_dim: int,
                    key: jax.Array, init_params=None) -> HostTrainState:
    """The state before the first update: fresh (or given) params and empty normalizers."""
    key_init, key_run = jax.random.split(key)
    params = agent.init(key_init, obs_dim) if init_params is None else init_params
    return HostTrainState(
        params=params, opt_state=make_optimizer(config).init(params),
        obs_moments=RunningMoments.create((obs_dim,)),
        reward_scaler=RewardScaler.create((num_tasks, config.num_envs)),
        key=key_run, update=jnp.int32(0),
    )


@partial(jax.jit, static_argnames=("agent", "config", "freeze_obs_moments"))
def _learn_step(agent: Agent, config: PPOConfig, state: HostTrainState, trajectory: Trajectory,
                raw_obs: jax.Array, key: jax.Array, freeze_obs_moments: bool = False):
    reward, reward_scaler = scale_rewards(state.reward_scaler, trajectory.reward,
                                          trajectory.done, config.gamma)
    params, opt_state, losses = learn(agent, config, make_optimizer(config), state.params,
                                      state.opt_state, trajectory.replace(reward=reward), key)
    obs_moments = state.obs_moments if freeze_obs_moments else state.obs_moments.update(raw_obs)
    state = state.replace(params=params, opt_state=opt_state, reward_scaler=reward_scaler,
                          obs_moments=obs_moments, update=state.update + 1)
    return state, losses


def train_on_host(agent: Agent, config: PPOConfig, envs, state: HostTrainState, *,
                  task_ids=None, metrics: dict | None = None,
                  progress: Callable | None = None,
                  checkpoint: Callable | None = None, checkpoint_every: int = 10,
                  freeze_obs_moments: bool = False) -> HostTrainResult:
    """Multitask PPO on host envs from `state` until `config.num_updates` updates are done.

    Every update is a rollout of `config.num_steps` steps in all [n, E] envs (E =
    `config.num_envs` must equal the envs' E), then `ppo.learn` on the scaled rewards; the
    observation statistics are updated after each update's rollout.

    Args:
      agent: its `num_tasks` is the family's; `task_ids` (default 0..n−1) are the envs' tasks.
      envs: fresh episodes start from their next reset (on resume, give them a new stream).
      state: from `init_host_train`, or a checkpoint to resume from.
      metrics: the metrics of the updates before `state` (when resuming), lists per name.
      progress: `progress(update_index, mean_episode_return, mean_success)` after each update.
      checkpoint: `checkpoint(state, metrics)` every `checkpoint_every` updates and at the end.
      freeze_obs_moments: keep `state.obs_moments` as they are (fine-tuning, `fine_tune_on_host`).
    """
    if envs.shape[1] != config.num_envs:
        raise ValueError(f"the envs have {envs.shape[1]} per task, config.num_envs is "
                         f"{config.num_envs}")
    metrics = {name: list(values) for name, values in (metrics or {}).items()}
    runner = HostRunner.start(envs)
    done_updates = int(state.update)
    for update in range(done_updates, config.num_updates):
        key, key_rollout, key_learn = jax.random.split(state.key, 3)
        state = state.replace(key=key)
        out = host_rollout(agent, state.params, state.obs_moments, envs, runner, task_ids,
                           key_rollout, config.num_steps)
        start = time.perf_counter()
        state, losses = _learn_step(agent, config, state, out.trajectory, out.raw_obs, key_learn,
                                    freeze_obs_moments)
        jax.block_until_ready(state.params)
        learn_seconds = time.perf_counter() - start
        episodes = {name: np.asarray(v) for name, v in episode_metrics(out.returns).items()}
        row = {**episodes, "success": np.asarray(per_task_mean(out.success)),
               **{name: float(value) for name, value in losses.items()},
               "env_seconds": out.env_seconds, "policy_seconds": out.policy_seconds,
               "learn_seconds": learn_seconds}
        for name, value in row.items():
            metrics.setdefault(name, []).append(value)
        if progress is not None:
            progress(update, _mean_of_ended(row["episode_return"]), _mean_of_ended(row["success"]))
        if checkpoint is not None and ((update + 1) % checkpoint_every == 0
                                       or update + 1 == config.num_updates):
            checkpoint(state, metrics)
    return HostTrainResult(params=state.params, obs_moments=state.obs_moments,
                           reward_scaler=state.reward_scaler,
                           metrics={name: np.asarray(values) for name, values in metrics.items()})


def fine_tune_on_host(agent: Agent, config: PPOConfig, envs, params, obs_moments: RunningMoments,
                      reward_scaler: RewardScaler, key: jax.Array, *, task_ids,
                      progress: Callable | None = None) -> HostTrainResult:
    """PPO fine-tuning of θ* (`params` and its normalizers) on the tasks of `envs`' rows.

    The observation normalizer stays θ*'s: the fine-tuned policy is θ* + Δθ on the same policy
    inputs, the function the estimate linearizes (a normalizer refitted to a subset's states
    would move every task's inputs too, a change no Δθ describes). The reward scaler goes on
    from θ*'s return statistics (the critic's units) with fresh running returns per env.

    Args:
      envs: host envs [α, E] (E = `config.num_envs`), row r a task of `task_ids` int[α].
      key: the run's key (initial optimizer state is fresh; `config.lr` is the fine-tuning's).
    Returns the `HostTrainResult` (its `obs_moments` are θ*'s).
    """
    state = init_host_train(agent, config, envs.shape[0], obs_moments.mean.shape[-1], key,
                            init_params=params)
    state = state.replace(obs_moments=obs_moments, reward_scaler=RewardScaler(
        discounted=jnp.zeros(envs.shape), moments=reward_scaler.moments))
    return train_on_host(agent, config, envs, state, task_ids=task_ids, progress=progress,
                         freeze_obs_moments=True)


def evaluate_on_host(agent: Agent, params, obs_moments: RunningMoments, envs, key: jax.Array, *,
                     episodes: int = 1, max_episode_steps: int = 500, task_ids=None,
                     greedy: bool = True):
    """Success rate and return per task over `episodes` whole episodes in each of the E envs.

    Returns (success f32[n], return f32[n]): means over the n·E·episodes finished episodes.
    Meta-World episodes never end early, so every env finishes exactly `episodes` episodes.
    """
    task_grid = _task_grid(envs, task_ids)
    step_keys = iter(jax.random.split(key, episodes * max_episode_steps))
    return play_episodes(envs, lambda obs: _act(agent, params, obs_moments, obs, task_grid,
                                                next(step_keys), greedy)[1],
                         episodes * max_episode_steps)


def play_episodes(envs, policy: Callable, num_steps: int):
    """Steps fresh episodes `num_steps` times with `policy(obs f32[n, E, d]) -> actions`.

    Returns (success f32[n], return f32[n]): means per task over the episodes that ended.
    """
    runner = HostRunner.start(envs)
    steps = [runner.step(envs, np.asarray(policy(runner.obs))) for _ in range(num_steps)]
    return (np.asarray(per_task_mean(np.stack([s.finished_success for s in steps]))),
            np.asarray(per_task_mean(np.stack([s.finished_return for s in steps]))))


def _task_grid(envs, task_ids) -> jax.Array:
    """int32[n, E]: the family id of every env's task (default: 0..n−1)."""
    ids = np.arange(envs.shape[0]) if task_ids is None else np.asarray(task_ids)
    return jnp.broadcast_to(jnp.asarray(ids, jnp.int32)[:, None], envs.shape)


def collect_transitions_on_host(agent: Agent, params, obs_moments: RunningMoments,
                                reward_scaler: RewardScaler, envs, key: jax.Array, *,
                                steps_per_task: int, gamma: float, gae_lambda: float,
                                task_ids=None) -> Transitions:
    """Transitions at θ for the estimator: `steps_per_task` per task from fresh episodes.

    Like `ppo.collect_transitions`: GAE advantages (on rewards scaled by the frozen training
    scaler, the critic's units), standardized per task; obs are the policy inputs.
    """
    num_tasks, num_envs = envs.shape
    if steps_per_task % num_envs:
        raise ValueError(f"steps_per_task={steps_per_task} must be a multiple of the "
                         f"{num_envs} envs per task")
    task_ids = np.arange(num_tasks) if task_ids is None else np.asarray(task_ids)
    out = host_rollout(agent, params, obs_moments, envs, HostRunner.start(envs), task_ids, key,
                       steps_per_task // num_envs)
    trajectory = out.trajectory.replace(reward=reward_scaler.scale(out.trajectory.reward))
    return transitions_from_rollout(trajectory, task_ids, gamma, gae_lambda)
