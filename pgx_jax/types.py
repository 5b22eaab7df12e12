"""Data containers passed between the pipeline stages (all are JAX pytrees)."""

from __future__ import annotations

import jax
from flax import struct


@struct.dataclass
class Transitions:
    """A batch of N transitions collected at the meta-policy θ*.

    Attributes:
      obs: f32[N, ...] observations (one-hot task input included if the policy takes it).
      action: [N, ...] actions (int for discrete policies, float for continuous ones).
      advantage: f32[N] advantage estimates Â_t (e.g. GAE).
      task: int[N] task index in [0, n) of every transition.
    """

    obs: jax.Array
    action: jax.Array
    advantage: jax.Array
    task: jax.Array


@struct.dataclass
class Features:
    """Per-sample inputs of the surrogate logistic regression (paper, Algorithm 1, lines 4–10).

    Attributes:
      z: f32[N, d] projected gradients Pᵀ ∇θ log π_θ*(a_t | s_t).
      y: f32[N] labels sign(Â_t) in {-1, +1} (Â_t = 0 is labelled +1; its weight is 0 anyway).
      w: f32[N] weights |Â_t| >= 0.
      task: int32[N] task index of every sample.
    """

    z: jax.Array
    y: jax.Array
    w: jax.Array
    task: jax.Array


@struct.dataclass
class SubsetSolution:
    """Result of solving the surrogate problem (eq. 4) for m subsets in one batched call.

    Attributes:
      theta: f32[m, d] the minimizers θ̂_d (the adapted policy is θ* + P θ̂_d).
      train_loss: f32[m] L̂_S(θ̂) on the samples the fit used (the paper's eq. 3; includes no L2 term).
      heldout_loss: f32[m] the same loss on the held-out samples of the tasks in S
        (NaN when no sample was held out).
      train_loss_at_zero, heldout_loss_at_zero: f32[m] the same two losses at θ = 0, i.e. of the
        unadapted θ* (log 2 · mean weight of each split).
      grad_norm: f32[m] ‖∇ objective‖₂ at θ̂ (objective = train loss + l2/2 ‖θ‖²).
      iterations: int32[] number of solver iterations of the batched solve.
      task_train_loss: f32[m, n] each member task's own train loss under θ̂_S, the mean over its
        fitted samples (NaN for tasks outside S): the per-task (directed) scores of
        `member_gains` and `directed_affinity`.
      task_train_loss_at_zero: f32[m, n] the same at θ = 0 (NaN outside S).
    """

    theta: jax.Array
    train_loss: jax.Array
    heldout_loss: jax.Array
    train_loss_at_zero: jax.Array
    heldout_loss_at_zero: jax.Array
    grad_norm: jax.Array
    iterations: jax.Array
    task_train_loss: jax.Array
    task_train_loss_at_zero: jax.Array
