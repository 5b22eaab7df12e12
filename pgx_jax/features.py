"""Per-sample policy-gradient features of the surrogate model (paper, Algorithm 1, lines 3–10)."""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp

from pgx_jax._validate import as_array, check_finite, check_leading, check_task_ids
from pgx_jax.projection import leaf_projection, project_leaves
from pgx_jax.types import Features, Transitions

LogProbFn = Callable[[object, jax.Array, jax.Array], jax.Array]


def labels_and_weights(advantage: jax.Array) -> tuple[jax.Array, jax.Array]:
    """y = sign(Â) in {-1, +1} and w = |Â|.

    Â = 0 gets the label +1; its weight is 0, so the sample does not enter any loss.

    Args:
      advantage: f32[N].
    Returns:
      (y: f32[N], w: f32[N]).
    """
    advantage = advantage.astype(jnp.float32)
    return jnp.where(advantage >= 0, 1.0, -1.0), jnp.abs(advantage)


# Up to this size P is generated once per call and kept whole (544 MB for a 340k-parameter
# policy at d = 400) instead of block by block for every chunk, which doubled the projection's cost.
WHOLE_PROJECTION_BYTES = 1 << 30


@partial(jax.jit, static_argnames=("log_prob_fn", "dim", "chunk"))
def _projected_gradients(log_prob_fn, params, obs, action, key, dim, chunk):
    num = obs.shape[0]
    num_chunks = -(-num // chunk)
    pad = num_chunks * chunk - num
    # Pad by repeating the last sample (a zero observation could make log π non-finite); the
    # padded rows are dropped below.
    obs, action = (
        jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]) if pad else x for x in (obs, action)
    )
    per_sample_grad = jax.vmap(jax.grad(log_prob_fn), in_axes=(None, 0, 0))
    sizes = [leaf.size for leaf in jax.tree_util.tree_leaves(params)]
    if 4 * sum(sizes) * dim <= WHOLE_PROJECTION_BYTES:
        whole = [leaf_projection(key, i, size, dim) for i, size in enumerate(sizes)]

        def project(leaves):
            return sum(x.reshape(chunk, -1) @ p for x, p in zip(leaves, whole))
    else:
        project = partial(project_leaves, key, dim=dim)

    def chunk_features(inputs):
        grads = per_sample_grad(params, *inputs)  # pytree of [chunk, *leaf.shape]
        return project(jax.tree_util.tree_leaves(grads))

    chunks = jax.tree_util.tree_map(
        lambda x: x.reshape((num_chunks, chunk) + x.shape[1:]), (obs, action)
    )
    z = jax.lax.map(chunk_features, chunks)
    return z.reshape(num_chunks * chunk, dim)[:num]


def gradient_features(
    log_prob_fn: LogProbFn,
    params,
    batch: Transitions,
    key: jax.Array,
    dim: int = 400,
    chunk: int = 1024,
) -> Features:
    """Projected per-sample gradients z_t = Pᵀ ∇θ log π_θ(a_t|s_t) at θ = params, labels, weights.

    The per-sample gradients are computed with `vmap(grad(log_prob_fn))` over chunks of `chunk`
    samples, so the [N, p] gradient matrix never exists. The projection P (see
    `pgx_jax.projection`) is generated once per call and kept whole when it takes at most
    `WHOLE_PROJECTION_BYTES` (1 GiB: p·d·4 bytes), else block by block for every chunk (its
    generation then costs about as much as the projection itself). Peak memory: `chunk × p`
    floats for one chunk's gradients, plus P when whole, plus the [N, d] output — independent
    of N beyond the output.

    Args:
      log_prob_fn: `log_prob_fn(params, obs, action) -> f32[]`, log π(a|s) of ONE sample.
        Must be hashable (a module-level function or a `functools.partial` of one), since it is a
        static argument of the jitted computation.
      params: the meta-policy θ*, any pytree of float arrays.
      batch: `Transitions` with obs [N, ...], action [N, ...], advantage f32[N], task int[N].
      key: PRNG key defining the projection P (keep it to form θ* + P θ̂_d later).
      dim: projection dimension d.
      chunk: samples per chunk; trades memory (chunk × p floats) for speed. Results do not
        depend on it.

    Returns:
      `Features(z: f32[N, d], y: f32[N], w: f32[N], task: int32[N])` with y = sign(Â), w = |Â|.
    """
    if not isinstance(batch, Transitions):
        raise ValueError(f"batch must be a pgx_jax.Transitions, got {type(batch).__name__}")
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    obs = as_array("batch.obs", batch.obs)
    action = as_array("batch.action", batch.action)
    advantage = as_array("batch.advantage", batch.advantage, ndim=1, kind="f")
    task = as_array("batch.task", batch.task, ndim=1, kind="i")
    num = check_leading(
        ("obs", "action", "advantage", "task"), (obs, action, advantage, task), "transitions"
    )
    if num == 0:
        raise ValueError("batch is empty (N = 0)")
    if not jax.tree_util.tree_leaves(params):
        raise ValueError("params has no array leaves")
    for name, x in (("batch.obs", obs), ("batch.action", action), ("batch.advantage", advantage)):
        check_finite(name, x)
    check_task_ids(task)
    z = _projected_gradients(log_prob_fn, params, obs, action, key, dim, min(chunk, num))
    check_finite("per-sample gradients of log_prob_fn (projected)", z)
    y, w = labels_and_weights(advantage)
    return Features(z=z, y=y, w=w, task=task.astype(jnp.int32))
