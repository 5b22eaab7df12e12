"""Multitask SAC (Haarnoja et al. 2018; Meta-World's MT-SAC), with a replay buffer in JAX arrays.

Twin critics with target networks (Polyak τ), a tanh-Gaussian actor, and one learned entropy
temperature per task (MT-SAC: α_t = exp(log α[task]), target entropy −action_dim). Every
network reads the policy input [obs, task one-hot] (critics: [obs, action, one-hot]), so the torso
can be a plain MLP, a multi-head MLP, Soft Modularization, PaCo or CARE (`pgx_jax.rl.networks`).

PaCo's stability measures (Sun et al. 2022, as in the authors' code): a task whose mean loss in the
batch exceeds `paco_loss_threshold` (3e3) has its samples masked out of that update (the critic's
and the actor's loss each, by its own per-task mean: the authors sum the losses first), and after
the update its w_τ, in the actor, the critics and the target critics, is reset to a random convex
combination of the other tasks' (the authors' "interpolate"; the task weights are
`task_weights` in every PaCo network).

One update (`update`, jit it) on a batch of transitions:
  critic:  y = r + γ(1 − terminated)(min_k Q'_k(s', a') − α_t log π(a'|s')),  a' ~ π(·|s');
           L_Q = Σ_k mean (Q_k(s, a) − y)²
  actor:   L_π = mean(α_t log π(ã|s) − min_k Q_k(s, ã)),  ã ~ π(·|s) (reparametrized)
  alpha:   L_α = −mean(log α_t · (log π(ã|s) + H̄))      (moves α_t toward entropy H̄)
  target:  θ' ← (1 − τ) θ' + τ θ
`make_train(config, family)` runs SAC on a JAX task family in one jitted scan (tests, and the
host-stepped MT10 trainer shares `update`, the buffer and the networks).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from pgx_jax._validate import check_int
from pgx_jax.envs.family import TaskFamily
from pgx_jax.rl.networks import CARENetwork, MultiHeadMLP, PaCoNetwork, SoftModularNetwork
from pgx_jax.rl.ppo import env_map, reset_envs

NETWORKS = ("mlp", "multihead", "softmod", "paco", "care")
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


@dataclasses.dataclass(frozen=True)
class SACConfig:
    """SAC hyperparameters.

    Attributes:
      network: "mlp" (ReLU MLP on [obs, one-hot]), "multihead" (one output head per task),
        "softmod" (Soft Modularization), "paco" or "care", for the actor and both critics.
      hidden: hidden layers of "mlp", "multihead", "paco" and CARE's head.
      softmod_layers, softmod_modules, softmod_width: L, m and the module width of "softmod".
      paco_sets: K, PaCo's shared parameter sets; paco_loss_threshold: the per-task loss above
        which a task is masked out of an update and its w_τ reset.
      care_encoders, care_width: k encoders and their width (and the context's) of "care".
      gamma, tau: discount and target-network Polyak rate.
      actor_lr, critic_lr, alpha_lr: Adam step sizes.
      init_alpha: initial temperature of every task.
      target_entropy: H̄; None = −action_dim.
      batch_size: transitions per update.
      buffer_size: replay capacity (transitions).
      num_envs: parallel envs per task (`make_train`, `host_sac.train_sac_on_host`).
      total_steps: env steps per task (both).
      learning_starts: env steps per task of uniform random actions before updates start.
      updates_per_step: gradient updates per vector env step (after `learning_starts`).
    """

    network: str = "mlp"
    hidden: tuple[int, ...] = (400, 400)
    softmod_layers: int = 2
    softmod_modules: int = 2
    softmod_width: int = 256
    paco_sets: int = 5
    paco_loss_threshold: float = 3e3
    care_encoders: int = 4
    care_width: int = 50
    gamma: float = 0.99
    tau: float = 5e-3
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    init_alpha: float = 1.0
    target_entropy: float | None = None
    batch_size: int = 256
    buffer_size: int = 1_000_000
    num_envs: int = 1
    total_steps: int = 100_000
    learning_starts: int = 1_000
    updates_per_step: int = 1

    def __post_init__(self):
        if self.network not in NETWORKS:
            raise ValueError(f"SACConfig.network must be one of {NETWORKS}, got {self.network!r}")
        for name in ("batch_size", "buffer_size", "num_envs", "total_steps", "updates_per_step",
                     "softmod_layers", "softmod_modules", "softmod_width", "paco_sets",
                     "care_encoders", "care_width"):
            check_int(f"SACConfig.{name}", getattr(self, name), minimum=1)
        if not 0 <= self.learning_starts <= self.total_steps:
            raise ValueError("SACConfig.learning_starts must lie in [0, total_steps]")
        if not (0 <= self.gamma <= 1 and 0 < self.tau <= 1 and self.init_alpha > 0):
            raise ValueError("SACConfig needs 0 <= gamma <= 1, 0 < tau <= 1, init_alpha > 0")
        for name in ("actor_lr", "critic_lr", "alpha_lr", "paco_loss_threshold"):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) > 0):
                raise ValueError(f"SACConfig.{name} must be > 0")


def make_torso(config: SACConfig, output_dim: int, num_tasks: int) -> nn.Module:
    if config.network == "softmod":
        return SoftModularNetwork(output_dim=output_dim, num_tasks=num_tasks,
                                  num_layers=config.softmod_layers,
                                  num_modules=config.softmod_modules,
                                  module_dim=config.softmod_width)
    if config.network == "multihead":
        return MultiHeadMLP(output_dim=output_dim, num_tasks=num_tasks, hidden=config.hidden)
    if config.network == "paco":
        return PaCoNetwork(output_dim=output_dim, num_tasks=num_tasks, hidden=config.hidden,
                           num_sets=config.paco_sets)
    if config.network == "care":
        return CARENetwork(output_dim=output_dim, num_tasks=num_tasks,
                           num_encoders=config.care_encoders, encoder_width=config.care_width,
                           hidden=config.hidden)
    return ReluMLP(features=config.hidden + (output_dim,))


class ReluMLP(nn.Module):
    features: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for index, width in enumerate(self.features):
            x = nn.Dense(width)(x)
            if index < len(self.features) - 1:
                x = nn.relu(x)
        return x


def tanh_gaussian_log_prob(mean: jax.Array, log_std: jax.Array, pre_tanh: jax.Array) -> jax.Array:
    """log π(tanh(u)) for u ~ N(mean, std²): f32[..., A] each → f32[...].

    Change of variables: log N(u) − Σ log(1 − tanh(u)²), with the stable form
    log(1 − tanh(u)²) = 2(log 2 − u − softplus(−2u)).
    """
    z = (pre_tanh - mean) * jnp.exp(-log_std)
    gaussian = -0.5 * jnp.sum(z**2 + 2 * log_std + math.log(2 * math.pi), -1)
    return gaussian - jnp.sum(2 * (math.log(2.0) - pre_tanh - jax.nn.softplus(-2 * pre_tanh)), -1)


class TanhGaussianActor(nn.Module):
    """inputs f32[..., d + n] → (mean, log_std) f32[..., A] of the pre-tanh Gaussian."""

    action_dim: int
    torso: nn.Module

    @nn.compact
    def __call__(self, inputs: jax.Array):
        mean, log_std = jnp.split(self.torso(inputs), 2, axis=-1)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, params, inputs: jax.Array, key: jax.Array):
        """(action f32[..., A] in (−1, 1), log π(action) f32[...]), reparametrized."""
        mean, log_std = self.apply(params, inputs)
        pre_tanh = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
        return jnp.tanh(pre_tanh), tanh_gaussian_log_prob(mean, log_std, pre_tanh)

    def mode(self, params, inputs: jax.Array) -> jax.Array:
        return jnp.tanh(self.apply(params, inputs)[0])


class TwinCritic(nn.Module):
    """(policy inputs f32[..., d + n], action f32[..., A]) → Q-values f32[2, ...]."""

    torso_a: nn.Module
    torso_b: nn.Module
    num_tasks: int

    @nn.compact
    def __call__(self, inputs: jax.Array, action: jax.Array) -> jax.Array:
        features, task = inputs[..., :-self.num_tasks], inputs[..., -self.num_tasks:]
        joint = jnp.concatenate([features, action, task], -1)  # the one-hot stays last
        return jnp.stack([self.torso_a(joint)[..., 0], self.torso_b(joint)[..., 0]])


@dataclasses.dataclass(frozen=True)
class SACAgent:
    """The actor and critic modules (hashable: a static jit argument)."""

    actor: TanhGaussianActor
    critic: TwinCritic
    num_tasks: int
    action_dim: int

    def observe(self, obs: jax.Array, task: jax.Array) -> jax.Array:
        return jnp.concatenate([obs, jax.nn.one_hot(task, self.num_tasks)], -1)


def make_sac_agent(config: SACConfig, num_tasks: int, action_dim: int) -> SACAgent:
    actor = TanhGaussianActor(action_dim, make_torso(config, 2 * action_dim, num_tasks))
    critic = TwinCritic(make_torso(config, 1, num_tasks), make_torso(config, 1, num_tasks),
                        num_tasks)
    return SACAgent(actor, critic, num_tasks, action_dim)


@struct.dataclass
class Batch:
    """Transitions [B, ...]: policy inputs obs/next_obs (one-hot included), action in [−1, 1],
    reward, terminated (1 = no bootstrap), task ids."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    terminated: jax.Array
    task: jax.Array

    @classmethod
    def example(cls, inputs: int, action_dim: int) -> "Batch":
        """One zero row [1, ...] of policy-input width `inputs` (obs + one-hot): a buffer's
        template."""
        return cls(obs=jnp.zeros((1, inputs)), action=jnp.zeros((1, action_dim)),
                   reward=jnp.zeros(1), next_obs=jnp.zeros((1, inputs)),
                   terminated=jnp.zeros(1), task=jnp.zeros(1, jnp.int32))


@struct.dataclass
class ReplayBuffer:
    """A ring buffer of `Batch` rows in JAX arrays (capacity C); `size` rows are valid."""

    data: Batch
    position: jax.Array
    size: jax.Array

    @classmethod
    def create(cls, capacity: int, example: Batch) -> "ReplayBuffer":
        """An empty buffer shaped like the rows of `example` (a Batch with one leading axis)."""
        data = jax.tree_util.tree_map(
            lambda x: jnp.zeros((capacity,) + x.shape[1:], x.dtype), example)
        return cls(data=data, position=jnp.int32(0), size=jnp.int32(0))

    @property
    def capacity(self) -> int:
        return self.data.reward.shape[0]

    def add(self, rows: Batch, count=None) -> "ReplayBuffer":
        """Writes the first `count` (default: all k) rows of `rows` after the last ones, wrapping
        around (oldest overwritten); rows past `count` are padding and are dropped. `count` may
        be traced (learners of different group sizes vmapped over one padded width; then it must lie
        in [0, k], unchecked)."""
        width = rows.reward.shape[0]
        if width > self.capacity:  # two rows of one add would share a slot
            raise ValueError(f"ReplayBuffer.add: {width} rows at once exceed the capacity "
                             f"{self.capacity}")
        if isinstance(count, int) and not 0 <= count <= width:
            raise ValueError(f"ReplayBuffer.add: count must lie in [0, {width}], got {count}")
        count = width if count is None else count
        offsets = jnp.arange(width)
        # Padding rows aim past the end, where a "drop" scatter ignores them.
        index = jnp.where(offsets < count, (self.position + offsets) % self.capacity,
                          self.capacity)
        data = jax.tree_util.tree_map(lambda buffer, x: buffer.at[index].set(x, mode="drop"),
                                      self.data, rows)
        return ReplayBuffer(data=data, position=(self.position + count) % self.capacity,
                            size=jnp.minimum(self.size + count, self.capacity))

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        """`batch_size` rows drawn uniformly with replacement from the valid ones."""
        index = jax.random.randint(key, (batch_size,), 0, jnp.maximum(self.size, 1))
        return jax.tree_util.tree_map(lambda x: x[index], self.data)


@struct.dataclass
class SACState:
    actor: Any
    critic: Any
    target_critic: Any
    log_alpha: jax.Array  # f32[n]
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any


def _optimizers(config: SACConfig):
    return optax.adam(config.actor_lr), optax.adam(config.critic_lr), optax.adam(config.alpha_lr)


def init_sac(agent: SACAgent, config: SACConfig, obs_dim: int, key: jax.Array) -> SACState:
    """Fresh networks (targets = critics) and log α = log init_alpha for every task."""
    key_actor, key_critic = jax.random.split(key)
    inputs = jnp.zeros((1, obs_dim + agent.num_tasks))
    actor = agent.actor.init(key_actor, inputs)
    critic = agent.critic.init(key_critic, inputs, jnp.zeros((1, agent.action_dim)))
    log_alpha = jnp.full((agent.num_tasks,), math.log(config.init_alpha), jnp.float32)
    actor_tx, critic_tx, alpha_tx = _optimizers(config)
    # The targets are copies, not the same buffers (callers may donate the state to jit).
    target_critic = jax.tree_util.tree_map(jnp.copy, critic)
    return SACState(actor=actor, critic=critic, target_critic=target_critic, log_alpha=log_alpha,
                    actor_opt=actor_tx.init(actor), critic_opt=critic_tx.init(critic),
                    alpha_opt=alpha_tx.init(log_alpha))


def critic_target(agent: SACAgent, config: SACConfig, state: SACState, batch: Batch,
                  key: jax.Array) -> jax.Array:
    """y = r + γ(1 − terminated)(min_k Q'_k(s', a') − α_t log π(a'|s')): f32[B], no gradient."""
    next_action, next_log_prob = agent.actor.sample(state.actor, batch.next_obs, key)
    next_q = agent.critic.apply(state.target_critic, batch.next_obs, next_action).min(0)
    alpha = jnp.exp(state.log_alpha)[batch.task]
    target = batch.reward + config.gamma * (1.0 - batch.terminated) * (
        next_q - alpha * next_log_prob)
    return jax.lax.stop_gradient(target)


def target_entropy(config: SACConfig, agent: SACAgent) -> float:
    return -float(agent.action_dim) if config.target_entropy is None else config.target_entropy


def task_loss_mask(loss: jax.Array, task: jax.Array, num_tasks: int, threshold: float):
    """PaCo's loss maskout: (keep f32[B], 0 for the samples of a task whose mean loss over its
    samples exceeds `threshold`, else 1; flagged bool[n]) from per-sample losses f32[B]."""
    count = jax.ops.segment_sum(jnp.ones_like(loss), task, num_tasks)
    mean = jax.ops.segment_sum(loss, task, num_tasks) / jnp.maximum(count, 1.0)
    flagged = jax.lax.stop_gradient(mean > threshold)
    return 1.0 - flagged[task].astype(loss.dtype), flagged


def reset_task_weights(params, flagged: jax.Array, key: jax.Array):
    """PaCo's w-reset: every `task_weights` kernel f32[n, K] in `params` gets, in the rows of the
    flagged tasks, a random convex combination of the unflagged rows (unchanged if every task is
    flagged). One draw of the combinations serves every network."""
    n = flagged.shape[0]
    mix = jax.random.uniform(key, (n, n)) * (~flagged)[None, :]
    mix = mix / jnp.maximum(mix.sum(1, keepdims=True), 1e-12)
    apply = flagged & ~jnp.all(flagged)

    def reset(path, leaf):
        if any(getattr(entry, "key", None) == "task_weights" for entry in path):
            return jnp.where(apply[:, None], mix @ leaf, leaf)
        return leaf

    return jax.tree_util.tree_map_with_path(reset, params)


def update(agent: SACAgent, config: SACConfig, state: SACState, batch: Batch, key: jax.Array):
    """One SAC update (critics, then actor and temperatures, then targets): (state, metrics).
    With PaCo, its loss maskout and w-reset (module docstring)."""
    key_target, key_actor = jax.random.split(key)
    actor_tx, critic_tx, alpha_tx = _optimizers(config)
    target = critic_target(agent, config, state, batch, key_target)
    paco = config.network == "paco"

    def masked_mean(per_sample):
        """(mean over the batch with PaCo's maskout, flagged tasks or None)."""
        if not paco:
            return jnp.mean(per_sample), None
        keep, flagged = task_loss_mask(jax.lax.stop_gradient(per_sample), batch.task,
                                       agent.num_tasks, config.paco_loss_threshold)
        return jnp.mean(keep * per_sample), flagged

    def critic_loss(params):
        q = agent.critic.apply(params, batch.obs, batch.action)
        if not paco:
            return jnp.sum(jnp.mean((q - target) ** 2, axis=-1)), (q.mean(), None)
        loss, flagged = masked_mean(jnp.sum((q - target) ** 2, axis=0))
        return loss, (q.mean(), flagged)

    (q_loss, (q_mean, critic_flagged)), grads = jax.value_and_grad(
        critic_loss, has_aux=True)(state.critic)
    updates, critic_opt = critic_tx.update(grads, state.critic_opt, state.critic)
    critic = optax.apply_updates(state.critic, updates)

    alpha = jnp.exp(state.log_alpha)[batch.task]

    def actor_loss(params):
        action, log_prob = agent.actor.sample(params, batch.obs, key_actor)
        q = agent.critic.apply(critic, batch.obs, action).min(0)
        loss, flagged = masked_mean(alpha * log_prob - q)
        return loss, (log_prob, flagged)

    (pi_loss, (log_prob, actor_flagged)), grads = jax.value_and_grad(
        actor_loss, has_aux=True)(state.actor)
    updates, actor_opt = actor_tx.update(grads, state.actor_opt, state.actor)
    actor = optax.apply_updates(state.actor, updates)

    entropy_gap = jax.lax.stop_gradient(log_prob + target_entropy(config, agent))

    def alpha_loss(log_alpha):
        return -jnp.mean(log_alpha[batch.task] * entropy_gap)

    a_loss, grads = jax.value_and_grad(alpha_loss)(state.log_alpha)
    updates, alpha_opt = alpha_tx.update(grads, state.alpha_opt, state.log_alpha)
    log_alpha = optax.apply_updates(state.log_alpha, updates)

    target_critic = optax.incremental_update(critic, state.target_critic, config.tau)
    extra = {}
    if paco:
        flagged = critic_flagged | actor_flagged
        actor, critic, target_critic = reset_task_weights(
            (actor, critic, target_critic), flagged, jax.random.fold_in(key, 1))
        extra["masked_tasks"] = flagged.sum().astype(jnp.float32)
    state = SACState(actor=actor, critic=critic, target_critic=target_critic,
                     log_alpha=log_alpha, actor_opt=actor_opt, critic_opt=critic_opt,
                     alpha_opt=alpha_opt)
    metrics = {"critic_loss": q_loss, "actor_loss": pi_loss, "alpha_loss": a_loss,
               "q_mean": q_mean, "entropy": -log_prob.mean(),
               "alpha_mean": jnp.exp(log_alpha).mean(), **extra}
    return state, metrics


@struct.dataclass
class SACTrainResult:
    """state: the final SACState; metrics per env step: episode_return f32[S, n] (NaN where no
    episode ended), and the update metrics f32[S]."""

    state: SACState
    metrics: dict


def update_seconds(agent: SACAgent, config: SACConfig, obs_dim: int, updates: int = 20) -> float:
    """Seconds per SAC update of one learner on this machine (`updates` timed after the compile,
    on a fixed random batch of `config.batch_size`): for time estimates."""
    state = init_sac(agent, config, obs_dim, jax.random.key(0))
    rows = jax.random.normal(jax.random.key(1), (config.batch_size, obs_dim))
    task = jnp.arange(config.batch_size) % agent.num_tasks
    batch = Batch(obs=agent.observe(rows, task), action=jnp.zeros((config.batch_size,
                                                                   agent.action_dim)),
                  reward=jnp.ones(config.batch_size), next_obs=agent.observe(rows, task),
                  terminated=jnp.zeros(config.batch_size), task=task)
    step = jax.jit(lambda state, key: update(agent, config, state, batch, key)[0])
    state = jax.block_until_ready(step(state, jax.random.key(2)))
    start = time.perf_counter()
    for index in range(updates):
        state = step(state, jax.random.key(index + 3))
    jax.block_until_ready(state)
    return (time.perf_counter() - start) / updates


def make_train(config: SACConfig, family: TaskFamily, action_scale: float = 1.0, progress=None):
    """Returns `train(key) -> SACTrainResult`: SAC on all tasks of a JAX family, one jitted scan.

    Every scan step takes one step in all [n, E] envs (actions a ∈ (−1, 1) reach the env as
    `action_scale`·a), writes the n·E transitions to the buffer, and (after `learning_starts`
    steps) does `updates_per_step` updates on batches of `batch_size`.
    `progress(step, mean finished return)` is called every 100 steps, if given.
    """
    if family.discrete:
        raise ValueError("SAC needs a continuous action space")
    agent = make_sac_agent(config, family.num_tasks, family.action_dim)
    num_tasks, num_envs = family.num_tasks, config.num_envs
    steps = config.total_steps // num_envs
    warmup = config.learning_starts // num_envs
    step_env = env_map(family.env.step)
    task_grid = jnp.broadcast_to(jnp.arange(num_tasks)[:, None], (num_tasks, num_envs))

    def env_step(carry, step_index):
        sac, buffer, env_state, obs, episode_return, key = carry
        key, key_action, key_env, key_update = jax.random.split(key, 4)
        inputs = agent.observe(obs, task_grid)
        policy_action, _ = agent.actor.sample(sac.actor, inputs, key_action)
        random_action = jax.random.uniform(key_action, policy_action.shape, minval=-1, maxval=1)
        action = jnp.where(step_index < warmup, random_action, policy_action)
        next_obs, env_state, reward, terminated, truncated, info = step_env(
            jax.random.split(key_env, (num_tasks, num_envs)), env_state,
            action_scale * action, family.params)
        final_obs = info["final_observation"]
        rows = Batch(obs=inputs, action=action, reward=reward,
                     next_obs=agent.observe(final_obs, task_grid),
                     terminated=terminated.astype(jnp.float32), task=task_grid)
        buffer = buffer.add(jax.tree_util.tree_map(
            lambda x: x.reshape((-1,) + x.shape[2:]), rows))

        def updates(sac):
            def one(sac, update_key):
                key_batch, key_sac = jax.random.split(update_key)
                return update(agent, config, sac, buffer.sample(key_batch, config.batch_size),
                              key_sac)

            sac, metrics = jax.lax.scan(one, sac, jax.random.split(key_update,
                                                                   config.updates_per_step))
            return sac, jax.tree_util.tree_map(jnp.mean, metrics)

        def no_updates(sac):
            return sac, jax.tree_util.tree_map(
                lambda x: jnp.zeros((), x.dtype), jax.eval_shape(updates, sac)[1])

        sac, metrics = jax.lax.cond(step_index >= warmup, updates, no_updates, sac)
        done = jnp.logical_or(terminated, truncated)
        episode_return = episode_return + reward
        finished = jnp.where(done, episode_return, jnp.nan)
        metrics["episode_return"] = jnp.nanmean(finished, axis=1)
        if progress is not None:
            jax.lax.cond(step_index % 100 == 99,
                         lambda: jax.debug.callback(progress, step_index,
                                                    jnp.nanmean(metrics["episode_return"])),
                         lambda: None)
        carry = (sac, buffer, env_state, next_obs, jnp.where(done, 0.0, episode_return), key)
        return carry, metrics

    def train(key: jax.Array) -> SACTrainResult:
        key_init, key_reset, key_run = jax.random.split(key, 3)
        sac = init_sac(agent, config, family.obs_dim, key_init)
        runner = reset_envs(family.env, family.params, key_reset, num_envs)
        buffer = ReplayBuffer.create(min(config.buffer_size, config.total_steps * num_tasks),
                                     Batch.example(family.obs_dim + num_tasks, family.action_dim))
        carry = (sac, buffer, runner.state, runner.obs, runner.episode_return, key_run)
        carry, metrics = jax.lax.scan(env_step, carry, jnp.arange(steps))
        return SACTrainResult(state=carry[0], metrics=metrics)

    return train


def evaluate(agent: SACAgent, state: SACState, family: TaskFamily, key: jax.Array, *,
             num_envs: int = 8, max_steps: int = 200, action_scale: float = 1.0) -> jax.Array:
    """Mean return of the first episode of `num_envs` fresh envs per task, greedy (tanh of the
    mean): f32[n]."""
    num_tasks = family.num_tasks
    step_env = env_map(family.env.step)
    task_grid = jnp.broadcast_to(jnp.arange(num_tasks)[:, None], (num_tasks, num_envs))
    key_reset, key_run = jax.random.split(key)
    runner = reset_envs(family.env, family.params, key_reset, num_envs)

    def one_step(carry, step_key):
        env_state, obs, total, alive = carry
        action = agent.actor.mode(state.actor, agent.observe(obs, task_grid))
        obs, env_state, reward, terminated, truncated, _ = step_env(
            jax.random.split(step_key, (num_tasks, num_envs)), env_state, action_scale * action,
            family.params)
        total = total + alive * reward
        alive = alive * (1.0 - jnp.logical_or(terminated, truncated))
        return (env_state, obs, total, alive), None

    zeros = jnp.zeros((num_tasks, num_envs))
    (_, _, total, _), _ = jax.lax.scan(one_step, (runner.state, runner.obs, zeros, zeros + 1.0),
                                       jax.random.split(key_run, max_steps))
    return total.mean(1)

