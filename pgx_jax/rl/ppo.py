"""Multitask PPO, fully jitted: `make_train(config, family)(key)` is one `lax.scan` over updates.

The shape follows PureJaxRL's `ppo.py` (a `make_train` that returns a pure `train(key)`), with a
frozen config, named state, top-level step functions, and the n tasks of a `TaskFamily` stepped
in one `vmap` (envs are [n_tasks, num_envs]). The same function meta-trains θ* on all tasks and
fine-tunes a given θ on a subset of them (`task_ids`, `init_params`).

Advantages are GAE(λ). Time-limit truncation is bootstrapped: gymnax 1.0 reports the
observation before its automatic reset in `info["final_observation"]`, so the target of every
step is r + γ·(1 − terminated)·V(s'), and only true termination cuts the bootstrap.

Observation normalization (`PPOConfig.normalize_obs`, off by default): running mean and variance
of every raw observation seen while training θ* from scratch, updated after each rollout (as
brax's PPO does), the input being clip((s − μ)/σ, ±10) then the task one-hot. The statistics are
part of the agent params (`params["obs_norm"]`, not trained by the optimizer) and are frozen
whenever training starts from given params (fine-tuning θ* on a subset), so θ* and every policy
fine-tuned from it see the same inputs, and so do the estimator's features: `Transitions.obs` are
the normalized policy inputs. Any params that hold `obs_norm` are normalized by `Agent.inputs`,
whichever code built the agent.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from pgx_jax.envs.family import TaskFamily
from pgx_jax.rl.moments import RunningMoments
from pgx_jax.rl.policies import CategoricalMLP, GaussianMLP, ValueMLP
from pgx_jax.types import Transitions


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters. Budgets are per task: each task gets `num_envs` parallel envs."""

    steps_per_task: int = 500_000
    num_envs: int = 8
    num_steps: int = 128
    update_epochs: int = 4
    num_minibatches: int = 4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    # PPO's value clipping (±clip_eps around the old value, in return units). On returns of
    # hundreds (LunarLander) it lets the critic move 0.2 per update, far too slowly.
    clip_value: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    lr: float = 2.5e-4
    anneal_lr: bool = True
    hidden: tuple[int, ...] = (64, 64)
    task_onehot: bool = False
    normalize_obs: bool = False

    def __post_init__(self):
        for name in ("steps_per_task", "num_envs", "num_steps", "update_epochs", "num_minibatches"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"PPOConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        if self.steps_per_task < self.num_envs * self.num_steps:
            raise ValueError(
                f"steps_per_task={self.steps_per_task} is less than one rollout "
                f"(num_envs × num_steps = {self.num_envs * self.num_steps})"
            )
        if (self.num_envs * self.num_steps) % self.num_minibatches:
            raise ValueError("num_envs × num_steps must be divisible by num_minibatches")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"PPOConfig.{name} must lie in [0, 1]")

    @property
    def num_updates(self) -> int:
        return self.steps_per_task // (self.num_envs * self.num_steps)


@dataclasses.dataclass(frozen=True)
class Agent:
    """Actor and critic modules for a family (hashable, so it can be a static jit argument).

    `observe` appends the one-hot id of each task (in the FULL family's numbering) when
    `task_onehot` is set, so a fine-tuned policy sees the same inputs as the meta-policy.
    `normalize_obs` makes `init` add observation statistics (`params["obs_norm"]`); `inputs`
    applies them wherever params hold them.
    """

    actor: nn.Module
    critic: nn.Module
    num_tasks: int
    task_onehot: bool
    normalize_obs: bool = False

    def observe(self, obs: jax.Array, task: jax.Array) -> jax.Array:
        """obs f32[..., obs_dim], task int[...] → policy input f32[..., obs_dim (+ n)]."""
        if not self.task_onehot:
            return obs
        return jnp.concatenate([obs, jax.nn.one_hot(task, self.num_tasks)], -1)

    def inputs(self, params, obs: jax.Array, task: jax.Array) -> jax.Array:
        """Raw obs f32[..., obs_dim] → policy input: normalized if `params` hold `obs_norm`,
        then `observe`d."""
        if "obs_norm" in params:
            obs = params["obs_norm"].normalize(obs)
        return self.observe(obs, task)

    def init(self, key: jax.Array, obs_dim: int):
        dummy = jnp.zeros(obs_dim + (self.num_tasks if self.task_onehot else 0))
        key_actor, key_critic = jax.random.split(key)
        params = {"actor": self.actor.init(key_actor, dummy),
                  "critic": self.critic.init(key_critic, dummy)}
        if self.normalize_obs:
            params["obs_norm"] = RunningMoments.create((obs_dim,))
        return params


def make_agent(family: TaskFamily, config: PPOConfig) -> Agent:
    actor = (
        CategoricalMLP(num_actions=family.action_dim, hidden=config.hidden)
        if family.discrete
        else GaussianMLP(action_dim=family.action_dim, hidden=config.hidden)
    )
    return Agent(actor, ValueMLP(hidden=config.hidden), family.num_tasks, config.task_onehot,
                 config.normalize_obs)


def trainable(params) -> dict:
    """The params the optimizer updates: all but the observation statistics."""
    return {name: value for name, value in params.items() if name != "obs_norm"}


@struct.dataclass
class Trajectory:
    """One rollout, every leaf [T, n, E, ...]."""

    obs: jax.Array  # policy inputs (one-hot appended if used)
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    terminated: jax.Array
    done: jax.Array
    next_value: jax.Array  # V(s') with s' the pre-reset next observation
    # The observations the policy saw, before normalization; kept only while the statistics
    # are being updated (`rollout(keep_raw_obs=True)`), None otherwise.
    raw_obs: jax.Array | None = None


@struct.dataclass
class EnvRunner:
    """Environment side of the carried state: envs are [n, E]."""

    state: Any
    obs: jax.Array  # f32[n, E, obs_dim]
    episode_return: jax.Array  # f32[n, E] return of the running episode


@struct.dataclass
class TrainState:
    params: Any
    opt_state: Any
    env: EnvRunner
    key: jax.Array


def env_map(fn):
    """An env `step` vmapped over tasks (params axis 0) and envs (params shared): [n, E]."""
    return jax.vmap(jax.vmap(fn, in_axes=(0, 0, 0, None)), in_axes=(0, 0, 0, 0))


def reset_envs(env, env_params, key: jax.Array, num_envs: int) -> EnvRunner:
    """Fresh envs [n, E] for the stacked `env_params` of n tasks."""
    num_tasks = jax.tree_util.tree_leaves(env_params)[0].shape[0]
    keys = jax.random.split(key, (num_tasks, num_envs))
    reset = jax.vmap(jax.vmap(env.reset, in_axes=(0, None)), in_axes=(0, 0))
    obs, state = reset(keys, env_params)
    return EnvRunner(state=state, obs=obs, episode_return=jnp.zeros((num_tasks, num_envs)))


def rollout(agent: Agent, env, env_params, task_ids, params, runner: EnvRunner,
            key: jax.Array, num_steps: int, greedy: bool = False, keep_raw_obs: bool = False):
    """Steps all envs `num_steps` times with the current policy.

    Returns:
      (runner, trajectory [T, n, E], episode returns f32[T, n, E] with NaN where no episode ended).
      With `keep_raw_obs`, `trajectory.raw_obs` holds the unnormalized observations the policy
      saw (for updating observation statistics); otherwise None, to save the memory.
    """
    step_env = env_map(env.step)
    task_grid = jnp.broadcast_to(task_ids[:, None], runner.obs.shape[:2])

    def one_step(runner, step_key):
        key_action, key_env = jax.random.split(step_key)
        raw_obs = runner.obs
        policy_obs = agent.inputs(params, raw_obs, task_grid)
        action = (
            agent.actor.mode(params["actor"], policy_obs)
            if greedy
            else agent.actor.sample(params["actor"], policy_obs, key_action)
        )
        log_prob = agent.actor.log_prob(params["actor"], policy_obs, action)
        value = agent.critic.apply(params["critic"], policy_obs)
        env_keys = jax.random.split(key_env, runner.obs.shape[:2])
        obs, state, reward, terminated, truncated, info = step_env(
            env_keys, runner.state, action, env_params
        )
        next_value = agent.critic.apply(
            params["critic"], agent.inputs(params, info["final_observation"], task_grid)
        )
        done = jnp.logical_or(terminated, truncated)
        episode_return = runner.episode_return + reward
        finished = jnp.where(done, episode_return, jnp.nan)
        runner = EnvRunner(state=state, obs=obs, episode_return=jnp.where(done, 0.0, episode_return))
        transition = Trajectory(
            obs=policy_obs, action=action, log_prob=log_prob, value=value, reward=reward,
            terminated=terminated.astype(jnp.float32), done=done.astype(jnp.float32),
            next_value=next_value, raw_obs=raw_obs if keep_raw_obs else None,
        )
        return runner, (transition, finished)

    runner, (trajectory, finished) = jax.lax.scan(one_step, runner, jax.random.split(key, num_steps))
    return runner, trajectory, finished


def gae(reward, value, next_value, terminated, done, gamma: float, lam: float):
    """Generalized advantage estimation over a time axis 0.

    δ_t = r_t + γ(1 − terminated_t) V(s'_t) − V(s_t);  A_t = δ_t + γλ(1 − done_t) A_{t+1}.

    Args: all f32[T, ...]. Returns: (advantages, value targets A + V), both f32[T, ...].
    """
    delta = reward + gamma * (1.0 - terminated) * next_value - value

    def backward(next_advantage, inputs):
        delta_t, done_t = inputs
        advantage = delta_t + gamma * lam * (1.0 - done_t) * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(backward, jnp.zeros_like(delta[0]), (delta, done), reverse=True)
    return advantages, advantages + value


def ppo_loss(agent: Agent, config: PPOConfig, params, batch: Trajectory, advantage, target):
    """Clipped PPO objective + clipped value loss − entropy bonus, on one minibatch."""
    log_prob = agent.actor.log_prob(params["actor"], batch.obs, batch.action)
    ratio = jnp.exp(log_prob - batch.log_prob)
    advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
    clipped = jnp.clip(ratio, 1 - config.clip_eps, 1 + config.clip_eps)
    policy_loss = -jnp.mean(jnp.minimum(ratio * advantage, clipped * advantage))
    value = agent.critic.apply(params["critic"], batch.obs)
    value_clipped = batch.value + jnp.clip(value - batch.value, -config.clip_eps, config.clip_eps)
    value_loss = 0.5 * jnp.mean(jnp.maximum((value - target) ** 2, (value_clipped - target) ** 2)
                                if config.clip_value else (value - target) ** 2)
    entropy = jnp.mean(agent.actor.entropy(params["actor"], batch.obs))
    total = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy
    return total, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}


def learn(agent: Agent, config: PPOConfig, tx, params, opt_state, trajectory: Trajectory,
          key: jax.Array):
    """PPO's learning half: GAE on a rollout [T, n, E], then epochs of minibatch steps.

    Returns (params, opt_state, mean losses {policy_loss, value_loss, entropy}). Shared by the
    jitted `update_step` and the host-stepped trainer (`pgx_jax.rl.host`).
    """
    advantage, target = gae(
        trajectory.reward, trajectory.value, trajectory.next_value, trajectory.terminated,
        trajectory.done, config.gamma, config.gae_lambda,
    )
    # Flatten [T, n, E] → [B]; each minibatch mixes all tasks.
    flat = jax.tree_util.tree_map(
        lambda x: x.reshape((-1,) + x.shape[3:]),
        (trajectory.replace(raw_obs=None), advantage, target),
    )
    batch_size = flat[1].shape[0]
    grad_fn = jax.grad(partial(ppo_loss, agent, config), has_aux=True)

    def epoch(carry, epoch_key):
        params, opt_state = carry
        order = jax.random.permutation(epoch_key, batch_size)
        minibatches = jax.tree_util.tree_map(
            lambda x: x[order].reshape((config.num_minibatches, -1) + x.shape[1:]), flat
        )

        def minibatch_step(carry, minibatch):
            params, opt_state = carry
            grads, info = grad_fn(params, *minibatch)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), info

        return jax.lax.scan(minibatch_step, (params, opt_state), minibatches)

    (params, opt_state), losses = jax.lax.scan(
        epoch, (params, opt_state), jax.random.split(key, config.update_epochs)
    )
    return params, opt_state, jax.tree_util.tree_map(jnp.mean, losses)


def per_task_mean(finished: jax.Array) -> jax.Array:
    """Finished-episode values f32[T, n, E] (NaN where none ended) → their mean per task f32[n],
    NaN for a task in which no episode ended (so means over tasks can skip it, not count 0)."""
    ended = jnp.sum(~jnp.isnan(finished), axis=(0, 2))
    return jnp.where(ended > 0, jnp.nansum(finished, axis=(0, 2)) / jnp.maximum(ended, 1), jnp.nan)


def episode_metrics(finished: jax.Array) -> dict:
    """Per task from finished-episode returns f32[T, n, E] (NaN where none ended):
    episode_return f32[n] (their mean, NaN where none ended) and episodes int[n]."""
    return {"episode_return": per_task_mean(finished),
            "episodes": jnp.sum(~jnp.isnan(finished), axis=(0, 2))}


def update_step(agent: Agent, config: PPOConfig, env, env_params, task_ids, tx,
                update_obs_norm: bool, state: TrainState, _update_index=None):
    """One PPO update: a rollout, GAE, then epochs of minibatch gradient steps.

    With `update_obs_norm`, the observation statistics (if the params hold them) then absorb the
    rollout's raw observations; the rollout itself was normalized with the previous ones.
    """
    key, key_rollout, key_epochs = jax.random.split(state.key, 3)
    normalizing = update_obs_norm and "obs_norm" in state.params
    runner, trajectory, finished = rollout(agent, env, env_params, task_ids, state.params,
                                           state.env, key_rollout, config.num_steps,
                                           keep_raw_obs=normalizing)
    params, opt_state, losses = learn(agent, config, tx, trainable(state.params),
                                      state.opt_state, trajectory, key_epochs)
    if "obs_norm" in state.params:
        obs_norm = state.params["obs_norm"]
        params["obs_norm"] = obs_norm.update(trajectory.raw_obs) if normalizing else obs_norm
    metrics = {**episode_metrics(finished), **losses}
    return TrainState(params=params, opt_state=opt_state, env=runner, key=key), metrics


def make_optimizer(config: PPOConfig):
    """Adam with global-norm clipping; the step size decays linearly to 0 over the run."""
    updates_per_run = config.num_updates * config.update_epochs * config.num_minibatches
    lr = (
        optax.linear_schedule(config.lr, 0.0, updates_per_run) if config.anneal_lr else config.lr
    )
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(lr, eps=1e-5))


@struct.dataclass
class TrainResult:
    """params: the trained agent params; metrics: per update, episode_return f32[U, n_sel] (NaN
    where no episode of a task ended) etc."""

    params: Any
    metrics: dict


def _selection(family: TaskFamily, task_ids):
    if task_ids is None:
        return jnp.arange(family.num_tasks, dtype=jnp.int32), family.params
    ids = np.asarray(task_ids, dtype=np.int32).reshape(-1)
    subset = family.subset(ids)  # validates the ids
    return jnp.asarray(ids), subset.params


def make_finetune(config: PPOConfig, family: TaskFamily, progress=None,
                  update_obs_norm: bool = False):
    """Returns `run(key, task_ids, init_params) -> TrainResult`, pure and jittable.

    Unlike `make_train`, the task ids are an argument (int32[α]), so one jitted `run` can be
    `vmap`ped over many subsets of the same size, e.g. to fine-tune θ* on each of m subsets.

    Args:
      config: PPO hyperparameters.
      family: the task family.
      progress: optional `progress(update_index, mean_episode_return)` called from inside the
        jitted loop after every update (through `jax.debug.callback`), e.g. to drive a bar.
      update_obs_norm: let the observation statistics in the params (if any) follow the data;
        off for fine-tuning, which keeps θ*'s.
    """
    agent = make_agent(family, config)
    tx = make_optimizer(config)

    def run(key: jax.Array, task_ids: jax.Array, init_params) -> TrainResult:
        env_params = jax.tree_util.tree_map(lambda leaf: leaf[task_ids], family.params)
        step = partial(update_step, agent, config, family.env, env_params, task_ids, tx,
                       update_obs_norm)
        if progress is not None:
            step = _reporting(step, progress)
        key_env, key_run = jax.random.split(key)
        state = TrainState(
            params=init_params,
            opt_state=tx.init(trainable(init_params)),
            env=reset_envs(family.env, env_params, key_env, config.num_envs),
            key=key_run,
        )
        state, metrics = jax.lax.scan(step, state, jnp.arange(config.num_updates))
        return TrainResult(params=state.params, metrics=metrics)

    return run


def _reporting(step, progress):
    def reporting_step(state, update):
        state, metrics = step(state, update)
        # The mean over the tasks in which an episode ended; NaN when none did.
        jax.debug.callback(progress, update, jnp.nanmean(metrics["episode_return"]))
        return state, metrics

    return reporting_step


def make_train(config: PPOConfig, family: TaskFamily, task_ids=None, init_params=None,
               progress=None):
    """Returns `train(key) -> TrainResult`, a pure function to `jax.jit` (and `vmap` over keys).

    Args:
      config: PPO hyperparameters.
      family: the task family.
      task_ids: train on these tasks only (default: all). One-hot inputs keep the family's ids.
      init_params: start from these agent params (fine-tuning) instead of a fresh init; their
        observation statistics, if any, stay frozen (from a fresh init they are learned).
      progress: see `make_finetune`.
    """
    agent = make_agent(family, config)
    ids, _ = _selection(family, task_ids)
    run = make_finetune(config, family, progress, update_obs_norm=init_params is None)

    def train(key: jax.Array) -> TrainResult:
        key_init, key_run = jax.random.split(key)
        params = agent.init(key_init, family.obs_dim) if init_params is None else init_params
        return run(key_run, ids, params)

    return train


def evaluate(agent: Agent, params, family: TaskFamily, key: jax.Array, *, num_envs: int = 16,
             max_steps: int = 500, task_ids=None, greedy: bool = False) -> jax.Array:
    """Mean return of the first episode of `num_envs` fresh envs per task: f32[n_sel].

    Runs `max_steps` steps; an episode still running then counts with its return so far (set
    `max_steps` to the env's time limit to score whole episodes).
    """
    ids, env_params = _selection(family, task_ids)
    return _evaluate(agent, params, family.env, env_params, ids, key, num_envs, max_steps, greedy)


def episode_returns(agent, params, env, env_params, ids, key, num_envs, max_steps, greedy=False):
    """The pure core of `evaluate` (vmappable over params, env_params, ids and key): f32[n_sel]."""
    key_reset, key_run = jax.random.split(key)
    runner = reset_envs(env, env_params, key_reset, num_envs)
    _, trajectory, _ = rollout(agent, env, env_params, ids, params, runner, key_run, max_steps, greedy)
    # Only the first episode of each env counts: mask every step after its first `done`.
    before_first_done = jnp.cumsum(trajectory.done, axis=0) - trajectory.done == 0
    returns = jnp.sum(trajectory.reward * before_first_done, axis=0)  # [n, E]
    return returns.mean(-1)


_evaluate = jax.jit(
    episode_returns, static_argnames=("agent", "env", "num_envs", "max_steps", "greedy")
)


@partial(jax.jit, static_argnames=("env", "discrete", "action_dim", "num_envs", "max_steps"))
def _random_returns(env, env_params, discrete, action_dim, key, num_envs, max_steps):
    key_reset, key_run = jax.random.split(key)
    runner = reset_envs(env, env_params, key_reset, num_envs)
    space = env.action_space(None)
    step_env = env_map(env.step)
    shape = runner.episode_return.shape  # [n, E]

    def one(carry, step_key):
        state, total, running = carry
        key_action, key_env = jax.random.split(step_key)
        action = (jax.random.randint(key_action, shape, 0, action_dim) if discrete
                  else jax.random.uniform(key_action, shape + (action_dim,),
                                          minval=space.low, maxval=space.high))
        _, state, reward, terminated, truncated, _ = step_env(
            jax.random.split(key_env, shape), state, action, env_params)
        total = total + running * reward
        return (state, total, running & ~jnp.logical_or(terminated, truncated)), None

    carry = (runner.state, jnp.zeros(shape), jnp.ones(shape, bool))
    (_, total, _), _ = jax.lax.scan(one, carry, jax.random.split(key_run, max_steps))
    return total.mean(-1)


def random_policy_returns(family: TaskFamily, key: jax.Array, *, num_envs: int = 16,
                          max_steps: int = 500) -> jax.Array:
    """`evaluate`'s score for the uniformly random policy (actions uniform over the discrete set or
    the Box): mean return of the first episode of `num_envs` fresh envs per task, f32[n]."""
    return _random_returns(family.env, family.params, family.discrete, family.action_dim, key,
                           num_envs, max_steps)


def collect_transitions(agent: Agent, params, family: TaskFamily, key: jax.Array, *,
                        steps_per_task: int = 2000, num_envs: int = 10, gamma: float = 0.99,
                        gae_lambda: float = 0.95, task_ids=None) -> Transitions:
    """Transitions at θ = params for the estimator: `steps_per_task` per task, GAE advantages.

    Advantages are standardized per task (zero mean, unit variance over the task's samples),
    as PPO standardizes them before its update. Centring matters: a critic that lags the policy
    makes raw GAE advantages nearly all positive, and then y = sign(Â) carries no information;
    the per-task scale keeps a task with large returns from dominating every subset's loss, and
    fixes the scale so that one `l2` means the same thing across environments.

    Returns:
      Transitions with N = n_sel · steps_per_task samples; obs are the policy inputs (one-hot
      appended if the agent uses it), so `agent.actor.log_prob` applies to them directly.
    """
    if steps_per_task % num_envs:
        raise ValueError(f"steps_per_task={steps_per_task} must be a multiple of num_envs={num_envs}")
    ids, env_params = _selection(family, task_ids)
    return _collect(agent, params, family.env, env_params, ids, key, num_envs,
                    steps_per_task // num_envs, gamma, gae_lambda)


@partial(jax.jit, static_argnames=("agent", "env", "num_envs", "num_steps"))
def _collect(agent, params, env, env_params, ids, key, num_envs, num_steps, gamma, lam):
    key_reset, key_run = jax.random.split(key)
    runner = reset_envs(env, env_params, key_reset, num_envs)
    _, trajectory, _ = rollout(agent, env, env_params, ids, params, runner, key_run, num_steps)
    return transitions_from_rollout(trajectory, ids, gamma, lam)


def transitions_from_rollout(trajectory: Trajectory, ids: jax.Array, gamma: float,
                             lam: float) -> Transitions:
    """A rollout [T, n, E] of tasks `ids` (int[n]) → Transitions with per-task standardized GAE.

    Samples are task-major, then env, then time ([n, E, T] flattened).
    """
    advantage, _ = gae(trajectory.reward, trajectory.value, trajectory.next_value,
                       trajectory.terminated, trajectory.done, gamma, lam)
    mean = advantage.mean(axis=(0, 2), keepdims=True)
    advantage = (advantage - mean) / (advantage.std(axis=(0, 2), keepdims=True) + 1e-8)
    # [T, n, E] → [n, E, T]: each env's trajectory is contiguous, so the held-out tail of a
    # task (see `solve_subsets`) is whole trajectories, not the last time steps of every env.
    task_major = jax.tree_util.tree_map(
        lambda x: jnp.moveaxis(x, 0, 2).reshape((-1,) + x.shape[3:]),
        (trajectory.obs, trajectory.action, advantage),
    )
    num_steps, _, num_envs = trajectory.reward.shape
    task = jnp.repeat(jnp.asarray(ids, jnp.int32), num_steps * num_envs)
    return Transitions(obs=task_major[0], action=task_major[1], advantage=task_major[2], task=task)
