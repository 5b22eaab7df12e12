"""Ground truth for the estimator: actually fine-tune θ* on every subset and measure it.

The estimate f̂(S) predicts how well θ* would do after fine-tuning on the tasks of S. The truth
it approximates is obtained here by doing that fine-tuning: PPO from θ* on the tasks of S for a
fixed budget, then the mean return over the tasks of S. All m × K runs (K seeds per subset) of
one subset size are `vmap`ped into one jitted call (they differ only in their task ids and keys);
`fine_tune_runs` trains any part of them with the keys they get together, so an executor can
spread the runs over processes or machines (`pgx_jax.executor`).

The truth is noisy, and the noise is the ceiling of any estimate's agreement with it: fine-tuning
PPO from the same θ* on the same tasks with two seeds can differ by more than two subsets do.
Three things reduce it: K seeds per subset, greedy evaluation, and common random numbers (every
policy is evaluated on task t from the same initial states, see `task_returns`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np
from flax import struct

from pgx_jax.envs.family import TaskFamily
from pgx_jax.rl.ppo import PPOConfig, episode_returns, make_agent, make_finetune


@struct.dataclass
class FineTuneResult:
    """The ground truth of m subsets of size α, each fine-tuned with K seeds.

    Attributes:
      members: int32[m, α] the task ids of each subset.
      returns: f32[m, K, α] return of each task after fine-tuning, per seed.
      start_returns: f32[m, α] return of θ* on the same tasks, from the same evaluation episodes.
      mean_return: f32[m] the true f(S): mean of `returns` over seeds and tasks.
      gain: f32[m] mean_return minus the mean of `start_returns`: what fine-tuning added.
      relative_distance: f32[m, K] ‖θ_S − θ*‖ / ‖θ*‖ of the actor parameters.
      params: the fine-tuned agent params, every leaf [m, K, ...].
    """

    members: jax.Array
    returns: jax.Array
    start_returns: jax.Array
    mean_return: jax.Array
    gain: jax.Array
    relative_distance: jax.Array
    params: object


def subset_members(subsets) -> np.ndarray:
    """int32[m, α]: the task ids of each subset; all subsets must have the same size α."""
    subsets = np.asarray(subsets, dtype=bool)
    sizes = subsets.sum(1)
    if subsets.ndim != 2 or sizes.min() < 1 or len(set(sizes.tolist())) != 1:
        raise ValueError(
            f"subsets must be a bool [m, n] mask of equal-size, non-empty subsets; sizes {sorted(set(sizes.tolist()))}"
        )
    return np.stack([np.flatnonzero(row) for row in subsets]).astype(np.int32)


def task_returns(agent, params, family: TaskFamily, ids, key, eval_envs, max_steps, greedy):
    """Mean return of `eval_envs` episodes on each task of ids (int32[α]): f32[α].

    The episodes of task t start from states drawn with `fold_in(key, t)`, whatever the policy
    and whichever subset t sits in: every policy evaluated on t faces the same initial states
    (common random numbers), so differences between policies are not evaluation noise.
    Pure and vmappable over params and ids.
    """

    def one_task(task):
        env_params = jax.tree_util.tree_map(lambda leaf: leaf[task][None], family.params)
        return episode_returns(agent, params, family.env, env_params, task[None],
                               jax.random.fold_in(key, task), eval_envs, max_steps, greedy)[0]

    return jax.vmap(one_task)(ids)


@struct.dataclass
class RunsResult:
    """B fine-tuning runs of θ*, each on its own tasks.

    Attributes:
      returns: f32[B, α] return of each of the run's tasks after fine-tuning.
      relative_distance: f32[B] ‖θ_run − θ*‖ / ‖θ*‖ of the actor parameters.
      params: the fine-tuned agent params, every leaf [B, ...].
    """

    returns: jax.Array
    relative_distance: jax.Array
    params: object


def _episode_cap(family: TaskFamily, max_steps: int) -> int:
    """Evaluation steps per episode: at most the family's `episode_limit` (only each env's
    first episode counts, so steps past the limit would be work for nothing)."""
    return max_steps if family.episode_limit is None else min(max_steps, family.episode_limit)


def fine_tune_keys(key: jax.Array, num_subsets: int, seeds: int) -> tuple[jax.Array, jax.Array]:
    """(train keys key[m·K], evaluation key) of `fine_tune_subsets(..., key, seeds=K)`.

    Runs are subset-major: run j·K + s is seed s of subset j. A run's key depends only on `key`,
    m, K and its index, so any subset of the runs can be trained apart (`fine_tune_runs`) with
    the keys they would get together.
    """
    key_train, key_eval = jax.random.split(key)
    return jax.random.split(key_train, num_subsets * seeds), key_eval


def fine_tune_runs(config: PPOConfig, family: TaskFamily, params, members, train_keys,
                   eval_key: jax.Array, *, eval_envs: int = 16, max_steps: int = 500,
                   greedy: bool = True, progress=None) -> RunsResult:
    """Fine-tunes `params` (θ*) with PPO once per row of `members`, vmapped, and evaluates each.

    Args:
      members: int32[B, α] the task ids of each run (`subset_members`).
      train_keys: key[B], one per run (`fine_tune_keys`).
      eval_key: the evaluation key: every run is evaluated on task t from the same episodes.
      The rest as in `fine_tune_subsets`.
    """
    members = jnp.asarray(members, jnp.int32)
    if members.ndim != 2 or train_keys.shape != members.shape[:1]:
        raise ValueError(f"members must be int[B, α] with one train key per row; got members "
                         f"{members.shape}, keys {train_keys.shape}")
    max_steps = _episode_cap(family, max_steps)
    agent = make_agent(family, config)
    run = make_finetune(config, family, progress)

    @jax.jit
    def runs(params, members, train_keys, eval_key) -> RunsResult:
        run_params = jax.vmap(run, in_axes=(0, 0, None))(train_keys, members, params).params
        returns = jax.vmap(lambda p, ids: task_returns(agent, p, family, ids, eval_key, eval_envs,
                                                       max_steps, greedy))(run_params, members)
        flat_start = ravel_pytree(params["actor"])[0]
        moved = jax.vmap(lambda p: ravel_pytree(p["actor"])[0])(run_params)
        distance = jnp.linalg.norm(moved - flat_start, axis=-1) / jnp.linalg.norm(flat_start)
        return RunsResult(returns=returns, relative_distance=distance, params=run_params)

    return runs(params, members, train_keys, eval_key)


def start_returns(config: PPOConfig, family: TaskFamily, params, eval_key: jax.Array, *,
                  eval_envs: int = 16, max_steps: int = 500, greedy: bool = True) -> jax.Array:
    """f32[n]: the return of θ* on every task, from the evaluation episodes of the runs."""
    max_steps = _episode_cap(family, max_steps)
    return task_returns(make_agent(family, config), params, family, jnp.arange(family.num_tasks),
                        eval_key, eval_envs, max_steps, greedy)


def fine_tune_subsets(config: PPOConfig, family: TaskFamily, params, subsets, key: jax.Array, *,
                      seeds: int = 1, eval_envs: int = 16, max_steps: int = 500,
                      greedy: bool = True, progress=None) -> FineTuneResult:
    """Fine-tunes `params` (θ*) with PPO on each subset, `seeds` times, and evaluates every run.

    Args:
      config: PPO settings of the fine-tuning runs (its `steps_per_task` is the budget).
      family: the task family.
      params: θ*, agent params as returned by `make_train`.
      subsets: bool[m, n], every subset of the same size α.
      key: PRNG key (one independent training stream per subset and seed, `fine_tune_keys`).
      seeds: K independent fine-tuning runs per subset; f(S) averages them.
      eval_envs, max_steps: evaluation episodes per task, and their step cap (lowered to the
        family's `episode_limit`: only each env's first episode counts, so steps past the limit
        would be work for nothing; highway's episodes last 30 steps).
      greedy: evaluate the mode action (default) rather than sampled actions; with the shared
        initial states of `task_returns` the evaluation of a policy is then deterministic.
      progress: see `make_finetune` (called once per update of each batched run).
    """
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive int, got {seeds!r}")
    members = subset_members(subsets)
    num_subsets = members.shape[0]
    train_keys, eval_key = fine_tune_keys(key, num_subsets, seeds)
    evaluation = dict(eval_envs=eval_envs, max_steps=max_steps, greedy=greedy)
    runs = fine_tune_runs(config, family, params, np.repeat(members, seeds, axis=0), train_keys,
                          eval_key, progress=progress, **evaluation)
    start = start_returns(config, family, params, eval_key, **evaluation)[members]
    return assemble(members, runs, start, seeds)


def assemble(members, runs: RunsResult, start, seeds: int) -> FineTuneResult:
    """The `FineTuneResult` of m subsets × K seeds from their m·K runs (subset-major) and the
    start returns f32[m, α]."""
    per_subset = partial(jax.tree_util.tree_map,
                         lambda x: x.reshape((len(members), seeds) + x.shape[1:]))
    returns = per_subset(runs.returns)
    mean_return = returns.mean(axis=(1, 2))
    return FineTuneResult(members=jnp.asarray(members), returns=returns, start_returns=start,
                          mean_return=mean_return, gain=mean_return - start.mean(-1),
                          relative_distance=per_subset(runs.relative_distance),
                          params=per_subset(runs.params))

