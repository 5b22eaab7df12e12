"""Keyed Gaussian random projection P ∈ R^{p×d}, generated block by block, never whole.

The paper projects each gradient g ∈ R^p to Pᵀg ∈ R^d with P_ij ~ N(0, 1/d) (Johnson–Lindenstrauss).
Here P is defined over a parameter *pytree*: the rows of P that belong to leaf ℓ of the pytree
(in `jax.tree_util` order, i.e. the order of `jax.flatten_util.ravel_pytree`) are split into blocks
of `BLOCK_ROWS` rows, and block j of leaf ℓ is

    normal(fold_in(fold_in(key, ℓ), j), (BLOCK_ROWS, d)) / sqrt(d)      (the last block truncated)

so P is a pure function of (key, the leaves' sizes, d): the same key gives the same P in
`project`, `unproject` and `gradient_features`, and θ̂ = θ* + P θ̂_d can be formed after the fact.
A plain [N, p] array is a pytree with one leaf.

Only one [BLOCK_ROWS, d] block exists at a time (13 MB at d = 400), so memory does not grow with p.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from pgx_jax._validate import as_array, check_finite

BLOCK_ROWS = 8192


def projection_block(key: jax.Array, leaf: int, block: int, dim: int) -> jax.Array:
    """Block `block` of the rows of P that belong to leaf `leaf`: f32[BLOCK_ROWS, dim]."""
    block_key = jax.random.fold_in(jax.random.fold_in(key, leaf), block)
    return jax.random.normal(block_key, (BLOCK_ROWS, dim), jnp.float32) / jnp.sqrt(
        jnp.float32(dim)
    )


def _project_leaf(key: jax.Array, leaf: int, x: jax.Array, dim: int) -> jax.Array:
    """x: f32[B, q] rows of one leaf → f32[B, dim] = x @ P_leaf."""
    batch, size = x.shape
    num_full, rest = divmod(size, BLOCK_ROWS)

    def add_block(acc, j):
        rows = jax.lax.dynamic_slice(x, (0, j * BLOCK_ROWS), (batch, BLOCK_ROWS))
        return acc + rows @ projection_block(key, leaf, j, dim), None

    acc = jnp.zeros((batch, dim), jnp.float32)
    if num_full:
        acc, _ = jax.lax.scan(add_block, acc, jnp.arange(num_full))
    if rest:
        last = projection_block(key, leaf, num_full, dim)[:rest]
        acc = acc + x[:, num_full * BLOCK_ROWS :] @ last
    return acc


def leaf_projection(key: jax.Array, leaf: int, size: int, dim: int) -> jax.Array:
    """All rows of P that belong to leaf `leaf` (of `size` entries) at once: f32[size, dim],
    equal to its blocks stacked. For reuse over many batches: P_leaf is then generated once."""
    num_blocks = -(-size // BLOCK_ROWS)
    # One block at a time (lax.map), so that only P itself, not its random bits, is ever whole.
    blocks = jax.lax.map(lambda j: projection_block(key, leaf, j, dim), jnp.arange(num_blocks))
    return blocks.reshape(num_blocks * BLOCK_ROWS, dim)[:size]


def project_leaves(key: jax.Array, leaves: list[jax.Array], dim: int) -> jax.Array:
    """Projects a batch given as a list of leaves, each f32[B, ...], to f32[B, dim]."""
    batch = leaves[0].shape[0]
    out = jnp.zeros((batch, dim), jnp.float32)
    for index, leaf in enumerate(leaves):
        out = out + _project_leaf(key, index, leaf.reshape(batch, -1).astype(jnp.float32), dim)
    return out


@partial(jax.jit, static_argnames=("dim",))
def _project(key, batch, dim):
    return project_leaves(key, jax.tree_util.tree_leaves(batch), dim)


def project(key: jax.Array, batch, dim: int = 400) -> jax.Array:
    """Random projection Pᵀx of every sample of a batch.

    Args:
      key: PRNG key that defines P.
      batch: f32[N, p] array, or a pytree whose leaves all have the leading batch axis N
        (e.g. per-sample gradients with the structure of the policy parameters).
      dim: projection dimension d.

    Returns:
      f32[N, d]: row i is Pᵀ x_i, with P_ij ~ N(0, 1/d) defined blockwise from `key`.
    """
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves:
        raise ValueError("batch has no array leaves")
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    leaves = [as_array("batch leaf", leaf, kind="f") for leaf in leaves]
    sizes = {leaf.shape[0] if leaf.ndim else None for leaf in leaves}
    if None in sizes or len(sizes) != 1:
        raise ValueError("every leaf of batch needs the same leading batch axis N")
    for leaf in leaves:
        check_finite("batch", leaf)
    return _project(key, jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(batch), leaves), dim)


@jax.jit
def _unproject(key, coeffs, like):
    dim = coeffs.shape[-1]
    leaves, treedef = jax.tree_util.tree_flatten(like)
    out = []
    for index, leaf in enumerate(leaves):
        size = math.prod(leaf.shape)
        num_blocks = -(-size // BLOCK_ROWS)
        blocks = jax.lax.map(
            lambda j, index=index: projection_block(key, index, j, dim) @ coeffs.T,
            jnp.arange(num_blocks),
        )  # [num_blocks, BLOCK_ROWS, ...]
        flat = blocks.reshape(num_blocks * BLOCK_ROWS, -1)[:size].T
        out.append(flat.reshape(coeffs.shape[:-1] + leaf.shape).astype(leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def unproject(key: jax.Array, coeffs: jax.Array, like):
    """P·c: maps coefficients in the projected space back to parameter space.

    Used to form the adapted policy θ̂ = θ* + P θ̂_d (Algorithm 1, line 13).

    Args:
      key: the key that defined P (the one given to `project` / `gradient_features`).
      coeffs: f32[d] or f32[k, d].
      like: a pytree of arrays with the structure and shapes of ONE sample (e.g. the params).

    Returns:
      A pytree like `like` (with a leading k axis on every leaf if coeffs is [k, d]).
    """
    coeffs = as_array("coeffs", coeffs, kind="f")
    if coeffs.ndim not in (1, 2):
        raise ValueError(f"coeffs must be [d] or [k, d], got shape {tuple(coeffs.shape)}")
    check_finite("coeffs", coeffs)
    if not jax.tree_util.tree_leaves(like):
        raise ValueError("like has no array leaves")
    return _unproject(key, coeffs.astype(jnp.float32), like)
