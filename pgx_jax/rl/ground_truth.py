"""Ground truth for the estimator: actually fine-tune θ* on every subset and measure it.

The estimate f̂(S) predicts how well θ* would do after fine-tuning on the tasks of S. The truth
it approximates is obtained here by doing that fine-tuning: PPO from θ* on the tasks of S for a
fixed budget, then the mean return over the tasks of S. All m runs of one subset size are
`vmap`ped into one jitted call (they differ only in their task ids and keys).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np
from flax import struct

from pgx_jax.envs.family import TaskFamily
from pgx_jax.rl.ppo import PPOConfig, episode_returns, make_agent, make_finetune


@struct.dataclass
class FineTuneResult:
    """Per subset: returns f32[m, α] of its tasks after fine-tuning (members int32[m, α] says
    which), mean_return f32[m] (the true f(S)), relative_distance f32[m] = ‖θ_S − θ*‖ / ‖θ*‖ of
    the actor parameters, and params: the fine-tuned agent params, every leaf [m, ...]."""

    members: jax.Array
    returns: jax.Array
    mean_return: jax.Array
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


def fine_tune_subsets(config: PPOConfig, family: TaskFamily, params, subsets, key: jax.Array, *,
                      eval_envs: int = 16, max_steps: int = 500, progress=None) -> FineTuneResult:
    """Fine-tunes `params` (θ*) with PPO on each subset, then evaluates every fine-tuned policy.

    Args:
      config: PPO settings of the fine-tuning runs (its `steps_per_task` is the budget).
      family: the task family.
      params: θ*, agent params as returned by `make_train`.
      subsets: bool[m, n], every subset of the same size α.
      key: PRNG key (one independent stream per subset).
      eval_envs, max_steps: evaluation episodes per task, and their step cap.
      progress: see `make_finetune` (called once per update of the batched runs).
    """
    members = jnp.asarray(subset_members(subsets))
    agent = make_agent(family, config)
    run = make_finetune(config, family, progress)
    key_train, key_eval = jax.random.split(key)
    return _fine_tune(agent, run, family, params, members, key_train, key_eval, eval_envs, max_steps)


def _fine_tune(agent, run, family, params, members, key_train, key_eval, eval_envs, max_steps):
    num_subsets = members.shape[0]

    @jax.jit
    def batched(params, members, key_train, key_eval):
        train_keys = jax.random.split(key_train, num_subsets)
        results = jax.vmap(run, in_axes=(0, 0, None))(train_keys, members, params)

        def score(run_params, ids, key):
            env_params = jax.tree_util.tree_map(lambda leaf: leaf[ids], family.params)
            return episode_returns(agent, run_params, family.env, env_params, ids, key, eval_envs,
                                   max_steps)

        returns = jax.vmap(score)(results.params, members, jax.random.split(key_eval, num_subsets))
        start = ravel_pytree(params["actor"])[0]
        moved = jax.vmap(lambda p: ravel_pytree(p["actor"])[0])(results.params)
        distance = jnp.linalg.norm(moved - start, axis=-1) / jnp.linalg.norm(start)
        return FineTuneResult(members=members, returns=returns, mean_return=returns.mean(-1),
                              relative_distance=distance, params=results.params)

    return batched(params, members, key_train, key_eval)
