"""MAML for policy gradients (Finn et al. 2017), fully jitted: `make_meta_train(config, family)`.

The meta-objective of one task: collect a support batch with θ, take `inner_steps` policy-gradient
steps θ_{k+1} = θ_k − α ∇L_support(θ_k) (each on a fresh support batch sampled with θ_k), collect a
query batch with θ' = θ_K and score L_query(θ'). The outer loop minimizes the mean of that over a
meta batch of tasks with Adam; one outer step is a `vmap` over the tasks and the training is one
`lax.scan` over outer steps.

Sampled batches are data. The support and query batches depend on θ through the sampling
distribution too; exact MAML-PG would differentiate that (DiCE, ProMP's LVC). Here, as in the
original MAML-RL implementation and most reimplementations, they are constants: rollouts run on
`stop_gradient(params)`, and the meta-gradient is the gradient of the fixed-batch `meta_loss`
L_query(θ − α∇L_support(θ)). Second order (default): the gradient flows through ∇L_support, giving
(I − α∇²L_support(θ)) ∇L_query(θ'). First order (FOMAML): ∇L_support is `stop_gradient`ed, giving
∇L_query(θ').

Batches are fixed-horizon episodes, the MAML-RL setting: every batch starts `num_envs` fresh
envs and runs `num_steps` (= the horizon H) steps; only the first episode of each env counts
(steps after its first `done` are masked out). The objective is the return of that episode,
truncated at H; it is also what the reported returns measure.

Baseline: the linear feature baseline of Duan et al. (2016), used by Finn et al. and ProMP. It is
refit on every batch by ridge regression of the discounted return-to-go on
φ(s, t) = [s, s², t/H, (t/H)², (t/H)³, 1], so there is no critic to train or carry between steps
(a fitted value MLP would need its own inner optimization per batch). The MAML agent's critic is
a parameter-free zero module (`params["critic"] == {}`), which keeps `ppo.rollout`,
`ppo.evaluate` and `ppo.collect_transitions` usable on MAML params.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from pgx_jax._validate import check_int, is_concrete
from pgx_jax.envs.family import TaskFamily
from pgx_jax.rl.policies import CategoricalMLP, GaussianMLP
from pgx_jax.rl.ppo import Agent, TrainResult, gae, reset_envs, rollout

BASELINES = ("linear", "none")


@dataclasses.dataclass(frozen=True)
class MAMLConfig:
    """MAML-PG hyperparameters. Batch sizes are per task.

    Attributes:
      inner_lr: α, the step size of the inner policy-gradient steps (and of `make_adapt_eval`).
      inner_steps: K, inner steps per task; each samples a fresh support batch.
      outer_lr: Adam step size of the meta update.
      meta_batch_size: tasks per outer step, drawn without replacement from the training tasks;
        None = all of them every step.
      num_envs, num_steps: support batch: `num_envs` episodes of horizon `num_steps`.
      query_num_envs, query_num_steps: the same for the query batch (None = as the support).
      gamma, gae_lambda: discount and GAE λ (λ = 1: Â = return-to-go − baseline, as in MAML-RL).
      first_order: FOMAML (no gradient through the inner gradient) instead of second order.
      hidden: hidden layer sizes of the policy MLP.
      num_outer_steps: number of meta updates.
      baseline: "linear" (feature baseline refit per batch) or "none" (Â = return-to-go).
      baseline_reg: ridge coefficient of the baseline fit, relative to the mean feature power.
    """

    inner_lr: float = 0.1
    inner_steps: int = 1
    outer_lr: float = 1e-3
    meta_batch_size: int | None = None
    num_envs: int = 20
    num_steps: int = 100
    query_num_envs: int | None = None
    query_num_steps: int | None = None
    gamma: float = 0.99
    gae_lambda: float = 1.0
    first_order: bool = False
    hidden: tuple[int, ...] = (64, 64)
    num_outer_steps: int = 100
    baseline: str = "linear"
    baseline_reg: float = 1e-5

    def __post_init__(self):
        for name in ("inner_steps", "num_envs", "num_steps", "num_outer_steps"):
            check_int(f"MAMLConfig.{name}", getattr(self, name), minimum=1)
        for name in ("meta_batch_size", "query_num_envs", "query_num_steps"):
            if getattr(self, name) is not None:
                check_int(f"MAMLConfig.{name}", getattr(self, name), minimum=1)

        def real(value):
            return isinstance(value, numbers.Real) and not isinstance(value, bool)

        for name in ("inner_lr", "baseline_reg"):
            value = getattr(self, name)
            if not (real(value) and math.isfinite(value) and value >= 0):
                raise ValueError(f"MAMLConfig.{name} must be a finite number >= 0, got {value!r}")
        if not (real(self.outer_lr) and math.isfinite(self.outer_lr) and self.outer_lr > 0):
            raise ValueError(f"MAMLConfig.outer_lr must be a finite number > 0, got {self.outer_lr!r}")
        for name in ("gamma", "gae_lambda"):
            if not (real(getattr(self, name)) and 0 <= getattr(self, name) <= 1):
                raise ValueError(f"MAMLConfig.{name} must lie in [0, 1], got {getattr(self, name)!r}")
        if not isinstance(self.first_order, bool):
            raise ValueError(f"MAMLConfig.first_order must be a bool, got {self.first_order!r}")
        if self.baseline not in BASELINES:
            raise ValueError(f"MAMLConfig.baseline must be one of {BASELINES}, got {self.baseline!r}")
        if not isinstance(self.hidden, tuple) or not all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in self.hidden
        ):
            raise ValueError(f"MAMLConfig.hidden must be a tuple of positive ints, got {self.hidden!r}")

    @property
    def query_envs(self) -> int:
        return self.num_envs if self.query_num_envs is None else self.query_num_envs

    @property
    def query_steps(self) -> int:
        return self.num_steps if self.query_num_steps is None else self.query_num_steps


class NoCritic(nn.Module):
    """A critic without parameters: V ≡ 0 (the baseline is fitted per batch instead)."""

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return jnp.zeros(obs.shape[:-1], obs.dtype)


def make_maml_agent(family: TaskFamily, config: MAMLConfig) -> Agent:
    """The policy MLP of `config.hidden` and a `NoCritic`; no task one-hot (tasks are unknown)."""
    actor = (
        CategoricalMLP(num_actions=family.action_dim, hidden=config.hidden)
        if family.discrete
        else GaussianMLP(action_dim=family.action_dim, hidden=config.hidden)
    )
    return Agent(actor, NoCritic(), family.num_tasks, task_onehot=False)


@struct.dataclass
class PGBatch:
    """A policy-gradient batch of B = T·E samples (leaves may carry extra leading axes).

    Attributes:
      obs: f32[B, obs_dim] policy inputs.
      action: [B, ...] actions taken.
      advantage: f32[B] advantages, standardized over the valid samples, 0 where mask = 0.
      mask: f32[B] 1 for the steps of each env's first episode, 0 after it ended.
    """

    obs: jax.Array
    action: jax.Array
    advantage: jax.Array
    mask: jax.Array


def policy_gradient_loss(actor, params, batch: PGBatch) -> jax.Array:
    """The REINFORCE surrogate −Σ m·log π(a|s)·Â / Σ m: f32[]; params are the actor's."""
    log_prob = actor.log_prob(params, batch.obs, batch.action)
    return -jnp.sum(batch.mask * log_prob * batch.advantage) / jnp.maximum(jnp.sum(batch.mask), 1.0)


def baseline_features(obs: jax.Array) -> jax.Array:
    """φ(s, t) for obs f32[T, E, d] → f32[T, E, 2d + 4] (t = step index / T)."""
    num_steps = obs.shape[0]
    obs = jnp.clip(obs, -10.0, 10.0)
    t = jnp.broadcast_to((jnp.arange(num_steps, dtype=obs.dtype) / num_steps)[:, None, None],
                         obs.shape[:2] + (1,))
    return jnp.concatenate([obs, obs**2, t, t**2, t**3, jnp.ones_like(t)], -1)


def linear_baseline(obs: jax.Array, returns: jax.Array, mask: jax.Array, reg: float) -> jax.Array:
    """Ridge fit of `returns` on `baseline_features(obs)` over the masked samples: values f32[T, E].

    Solves (ΦᵀMΦ + reg·tr(ΦᵀMΦ)/k·I) w = ΦᵀM G; the ridge is relative so one `reg` suits any
    feature scale, and it keeps the system solvable when features are collinear (e.g. t, t², t³
    on a short batch, or a constant observation component).
    """
    phi = baseline_features(obs)
    weighted = phi * mask[..., None]
    gram = jnp.einsum("tek,tel->kl", weighted, phi)
    k = gram.shape[0]
    ridge = reg * jnp.trace(gram) / k + 1e-8
    w = jnp.linalg.solve(gram + ridge * jnp.eye(k, dtype=gram.dtype),
                         jnp.einsum("tek,te->k", weighted, returns))
    return phi @ w


def pg_batch(obs, action, reward, done, *, gamma: float, gae_lambda: float,
             baseline: str = "linear", baseline_reg: float = 1e-5):
    """A fixed-horizon rollout → (PGBatch with B = T·E, mean first-episode return f32[]).

    Args:
      obs: f32[T, E, obs_dim] policy inputs; action: [T, E, ...]; reward, done: f32[T, E].
        Every env must start a fresh episode at t = 0.
      gamma, gae_lambda: GAE parameters; the episode ends at its first `done` or at t = T
        (no bootstrap: the objective is the return within the horizon).
      baseline: "linear" (`linear_baseline`, fitted on the discounted return-to-go) or "none".
    """
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    zeros = jnp.zeros_like(reward)
    mask = (jnp.cumsum(done, axis=0) - done == 0).astype(reward.dtype)
    # Discounted return-to-go within the episode: GAE with V ≡ 0 and λ = 1.
    to_go, _ = gae(reward, zeros, zeros, done, done, gamma, 1.0)
    value = linear_baseline(obs, to_go, mask, baseline_reg) if baseline == "linear" else zeros
    # V(s_{t+1}) is the next row: no env resets before its first done, which ends the episode.
    next_value = jnp.concatenate([value[1:], zeros[:1]], axis=0)
    advantage, _ = gae(reward, value, next_value, done, done, gamma, gae_lambda)
    count = jnp.maximum(mask.sum(), 1.0)
    mean = jnp.sum(mask * advantage) / count
    std = jnp.sqrt(jnp.sum(mask * (advantage - mean) ** 2) / count)
    advantage = mask * (advantage - mean) / (std + 1e-8)
    flat = jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]),
                                  PGBatch(obs=obs, action=action, advantage=advantage, mask=mask))
    episode_return = jnp.sum(reward * mask, axis=0).mean()
    return flat, episode_return


def collect_batch(agent: Agent, config: MAMLConfig, env, env_params, task_id, params,
                  key: jax.Array, num_envs: int, num_steps: int):
    """Samples `num_envs` fresh episodes of horizon `num_steps` on one task with `params`.

    Args:
      env_params: the task's env parameters (no task axis); task_id: int[] its family id.
    Returns:
      (PGBatch with B = num_steps·num_envs, mean first-episode return f32[]). No gradient flows
      into `params`: the batch is data.
    """
    params = jax.lax.stop_gradient(params)
    stacked = jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf)[None], env_params)
    task = jnp.asarray(task_id, jnp.int32)[None]
    key_reset, key_run = jax.random.split(key)
    runner = reset_envs(env, stacked, key_reset, num_envs)
    _, trajectory, _ = rollout(agent, env, stacked, task, params, runner, key_run, num_steps)
    trajectory = jax.tree_util.tree_map(lambda x: x[:, 0], trajectory)  # [T, 1, E] → [T, E]
    return pg_batch(trajectory.obs, trajectory.action, trajectory.reward, trajectory.done,
                    gamma=config.gamma, gae_lambda=config.gae_lambda, baseline=config.baseline,
                    baseline_reg=config.baseline_reg)


def inner_update(agent: Agent, config: MAMLConfig, params, batch: PGBatch):
    """One inner step on a fixed batch: actor θ − α ∇L(θ); FOMAML stops the gradient of ∇L."""
    grads = jax.grad(partial(policy_gradient_loss, agent.actor))(params["actor"], batch)
    if config.first_order:
        grads = jax.lax.stop_gradient(grads)
    actor = jax.tree_util.tree_map(lambda p, g: p - config.inner_lr * g, params["actor"], grads)
    return {**params, "actor": actor}


def meta_loss(agent: Agent, config: MAMLConfig, params, support: PGBatch, query: PGBatch):
    """L_query(θ') with θ' = θ after one inner step per support batch: f32[].

    Args:
      support: PGBatch whose leaves have a leading axis of size K (one batch per inner step).
      query: PGBatch.
    """
    adapted, _ = jax.lax.scan(lambda p, batch: (inner_update(agent, config, p, batch), None),
                              params, support)
    return policy_gradient_loss(agent.actor, adapted["actor"], query)


def _adapt(agent, config, env, env_params, task_id, params, key, num_steps_inner):
    """`num_steps_inner` inner steps, each on a fresh support batch.

    Returns (adapted params, support batches [K, ...], returns of those batches f32[K]).
    """

    def step(params, step_key):
        batch, episode_return = collect_batch(agent, config, env, env_params, task_id, params,
                                              step_key, config.num_envs, config.num_steps)
        return inner_update(agent, config, params, batch), (batch, episode_return)

    params, (batches, returns) = jax.lax.scan(step, params,
                                              jax.random.split(key, num_steps_inner))
    return params, batches, returns


def adapt(agent: Agent, config: MAMLConfig, params, family: TaskFamily, task_id, key: jax.Array):
    """θ' after `config.inner_steps` inner steps on task `task_id` (int[], may be traced).

    Differentiable in `params` through the inner updates (the batches are data); jit it with
    `family` closed over (a TaskFamily holds arrays and is not a static argument).
    """
    if is_concrete(task_id):
        _check_ids(family, task_id)
    env_params = jax.tree_util.tree_map(lambda leaf: leaf[task_id], family.params)
    adapted, _, _ = _adapt(agent, config, family.env, env_params, task_id, params, key,
                           config.inner_steps)
    return adapted


def sample_task_batches(agent: Agent, config: MAMLConfig, env, env_params, task_id, params,
                        key: jax.Array):
    """The batches of one task's meta-objective, sampled without gradient.

    Returns:
      (support PGBatch [K, B_s, ...], query PGBatch [B_q, ...], pre-adaptation return f32[] of
      the first support batch, post-adaptation return f32[] of the query batch).
    """
    params = jax.lax.stop_gradient(params)
    key_support, key_query = jax.random.split(key)
    adapted, support, returns = _adapt(agent, config, env, env_params, task_id, params,
                                       key_support, config.inner_steps)
    query, post_return = collect_batch(agent, config, env, env_params, task_id, adapted,
                                       key_query, config.query_envs, config.query_steps)
    return support, query, returns[0], post_return


@struct.dataclass
class MetaState:
    params: Any
    opt_state: Any
    key: jax.Array


def _check_ids(family: TaskFamily, task_ids) -> np.ndarray:
    ids = np.asarray(task_ids)
    if ids.size == 0:
        raise ValueError("task_ids is empty")
    if ids.dtype.kind not in "iu":
        raise ValueError(f"task ids must be integers, got dtype {ids.dtype}")
    ids = ids.reshape(-1).astype(np.int32)
    if ids.min() < 0 or ids.max() >= family.num_tasks:
        raise ValueError(f"task_ids must lie in [0, {family.num_tasks}), got {ids.tolist()}")
    return ids


def make_meta_train(config: MAMLConfig, family: TaskFamily, task_ids=None, progress=None,
                    init_params=None):
    """Returns `train(key, task_ids=None, init_params=None) -> TrainResult`, pure and jittable.

    Args:
      config: MAML hyperparameters.
      family: the task family.
      task_ids: meta-train on these tasks (default: all).
      progress: optional `progress(outer_step, mean_post_adaptation_return)`, called from inside
        the jitted loop after every outer step (through `jax.debug.callback`).
      init_params: start from these agent params instead of a fresh init.

    `train`'s own `task_ids` (int[n_train]) and `init_params` override the factory's and may be
    traced: `jax.jit(train)` then compiles once per number of training tasks, so meta-training
    on several task sets of one size (or from several initializations) reuses one executable.

    TrainResult.params are agent params ({"actor": θ, "critic": {}}); TrainResult.metrics hold,
    per outer step (f32[S] each): pre_adaptation_return and post_adaptation_return (means over
    the meta batch of the first support batch's and the query batch's first-episode returns)
    and meta_loss (mean L_query(θ')).
    """
    default_ids = (np.arange(family.num_tasks, dtype=np.int32) if task_ids is None
                   else _check_ids(family, task_ids))
    default_init = init_params
    _meta_batch_size(config, len(default_ids))
    agent = make_maml_agent(family, config)
    tx = optax.adam(config.outer_lr)
    grad_fn = jax.value_and_grad(partial(meta_loss, agent, config))

    def task_gradient(params, task_id, env_params, key):
        support, query, pre, post = sample_task_batches(agent, config, family.env, env_params,
                                                        task_id, params, key)
        loss, grads = grad_fn(params, support, query)
        return loss, grads, pre, post

    def outer_step(ids, state: MetaState, step_index):
        meta_batch = _meta_batch_size(config, ids.shape[0])
        key, key_tasks, key_batches = jax.random.split(state.key, 3)
        tasks = ids if meta_batch == ids.shape[0] else jax.random.permutation(key_tasks, ids)[:meta_batch]
        env_params = jax.tree_util.tree_map(lambda leaf: leaf[tasks], family.params)
        loss, grads, pre, post = jax.vmap(task_gradient, in_axes=(None, 0, 0, 0))(
            state.params, tasks, env_params, jax.random.split(key_batches, meta_batch)
        )
        grads = jax.tree_util.tree_map(lambda g: g.mean(0), grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"pre_adaptation_return": pre.mean(), "post_adaptation_return": post.mean(),
                   "meta_loss": loss.mean()}
        if progress is not None:
            jax.debug.callback(progress, step_index, metrics["post_adaptation_return"])
        return MetaState(params=params, opt_state=opt_state, key=key), metrics

    def train(key: jax.Array, task_ids=None, init_params=None) -> TrainResult:
        if task_ids is None:
            ids = jnp.asarray(default_ids)
        else:
            ids = jnp.asarray(_check_ids(family, task_ids) if is_concrete(task_ids) else task_ids,
                              jnp.int32).reshape(-1)
        key_init, key_run = jax.random.split(key)
        if init_params is None:
            init_params = (agent.init(key_init, family.obs_dim) if default_init is None
                           else default_init)
        state = MetaState(params=init_params, opt_state=tx.init(init_params), key=key_run)
        state, metrics = jax.lax.scan(partial(outer_step, ids), state,
                                      jnp.arange(config.num_outer_steps))
        return TrainResult(params=state.params, metrics=metrics)

    return train


def _meta_batch_size(config: MAMLConfig, num_train_tasks: int) -> int:
    meta_batch = num_train_tasks if config.meta_batch_size is None else config.meta_batch_size
    if meta_batch > num_train_tasks:
        raise ValueError(f"meta_batch_size={meta_batch} exceeds the {num_train_tasks} training tasks")
    return meta_batch


def make_adapt_eval(config: MAMLConfig, family: TaskFamily):
    """Returns `evaluate(key, params, task_ids, adapt_steps) -> f32[n_sel, adapt_steps + 1]`.

    From `params`, every task of `task_ids` (int[n_sel]) is adapted on its own for `adapt_steps`
    steps; a step is one inner policy-gradient update (`inner_lr`) on a fresh support batch of
    `num_envs` episodes sampled with the current policy. Entry [i, k] is the mean first-episode
    return (stochastic policy, horizon `num_steps`) after k steps: the return of the batch sampled
    with the policy of step k (for k < adapt_steps, the batch that step k + 1 then learns from).

    `adapt_steps` is a Python int (static under `jit`: `jax.jit(evaluate, static_argnames=
    "adapt_steps")`); the function is pure and vmappable over key, params and task_ids.
    """
    agent = make_maml_agent(family, config)

    def evaluate(key: jax.Array, params, task_ids, adapt_steps: int) -> jax.Array:
        if isinstance(adapt_steps, bool) or not isinstance(adapt_steps, int) or adapt_steps < 0:
            raise ValueError(f"adapt_steps must be an int >= 0, got {adapt_steps!r}")
        if is_concrete(task_ids):
            task_ids = _check_ids(family, task_ids)
        task_ids = jnp.asarray(task_ids, jnp.int32).reshape(-1)
        env_params = jax.tree_util.tree_map(lambda leaf: leaf[task_ids], family.params)

        def one_task(task_id, task_env_params, task_key):
            # adapt_steps + 1 batches in one scan (one compiled rollout); the update after the
            # last batch is computed and dropped.
            _, _, returns = _adapt(agent, config, family.env, task_env_params, task_id, params,
                                   task_key, adapt_steps + 1)
            return returns

        keys = jax.random.split(key, task_ids.shape[0])
        return jax.vmap(one_task)(task_ids, env_params, keys)

    return evaluate
