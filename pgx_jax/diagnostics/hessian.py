"""Hessian-trace sharpness of a loss and the paper's generalization bound (Theorem 1, eq. 6).

The paper bounds the test loss of a fine-tuned policy by its training loss plus a term that grows
with the trace of the loss Hessian at the solution:

    L ≤ (1 + ε) L̂ + (1 + ε) sqrt(C · H / n) + ε,    ε = O(n^{-3/4} log 1/δ),

with C a bound on the loss, H the Hessian-trace measure and n the number of samples. Forming the
Hessian costs p² memory (p = number of parameters), so its trace is estimated from
Hessian-vector products instead: each product is one forward-over-reverse pass
(`jax.jvp` of `jax.grad`) and costs a small constant times one gradient.

Two randomized estimators are offered:

- Hutchinson: tr(H) ≈ mean_i v_iᵀ H v_i over Rademacher v_i. Unbiased; one sample has variance
  2(‖H‖_F² − Σ_i H_ii²).
- Hutch++ (Meyer, Musco, Musco & Woodruff, 2021): spends a third of the products on a sketch
  Q = orth(H S) of the dominant eigenspace, takes tr(QᵀHQ) exactly and runs Hutchinson only on the
  deflated remainder (I − QQᵀ) H (I − QQᵀ). Unbiased for any symmetric H; when the spectrum decays
  it has far lower variance than Hutchinson at the same number of products.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from pgx_jax._validate import check_int, check_key, is_concrete

LossFn = Callable[[object], jax.Array]

_METHODS = ("hutchinson", "hutch++")


def _flat_loss(loss_fn: LossFn, params):
    """Returns (flat_loss: f32[p] -> f32[], θ: f32[p]) after checking params and the loss."""
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("params has no leaves (p = 0); nothing to differentiate")
    for leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(
                "every params leaf must be floating point, got a leaf of dtype "
                f"{jnp.result_type(leaf)}"
            )
    out = jax.eval_shape(loss_fn, params)
    if getattr(out, "shape", None) != () or not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(
            "loss_fn(params) must return a floating scalar, got "
            f"shape {getattr(out, 'shape', None)} and dtype {getattr(out, 'dtype', None)}"
        )
    theta, unravel = ravel_pytree(params)
    return (lambda flat: loss_fn(unravel(flat))), theta


def hessian_vector_product(loss_fn: LossFn, params) -> Callable[[jax.Array], jax.Array]:
    """Returns `hvp(v) = ∇²loss(params) · v` on the flattened parameters; H is never formed.

    The flat order is that of `jax.flatten_util.ravel_pytree(params)`. The product is computed
    forward-over-reverse, `jax.jvp(jax.grad(flat_loss), (θ,), (v,))`, which costs about as much as
    two gradients and needs no p×p memory.

    Args:
      loss_fn: `loss_fn(params) -> f32[]`.
      params: any pytree of floating arrays with p entries in all.
    Returns:
      hvp: `v: f32[p] -> f32[p]` (traceable: it can be jitted or vmapped).
    """
    flat_loss, theta = _flat_loss(loss_fn, params)
    grad = jax.grad(flat_loss)

    def hvp(v: jax.Array) -> jax.Array:
        v = jnp.asarray(v)
        if v.shape != theta.shape:
            raise ValueError(f"v must have shape {theta.shape} (p = {theta.size}), got {v.shape}")
        return jax.jvp(grad, (theta,), (v.astype(theta.dtype),))[1]

    return hvp


def _quadratic_forms(hvp, vectors: jax.Array) -> jax.Array:
    """vᵀ H v for every row v of `vectors: f32[k, p]`, with one vmapped batch of HVPs: f32[k]."""
    return jnp.sum(vectors * jax.vmap(hvp)(vectors), axis=1)


@partial(jax.jit, static_argnames=("loss_fn", "num_products", "method"))
def _trace(loss_fn, params, key, num_products, method):
    hvp = hessian_vector_product(loss_fn, params)
    theta, _ = ravel_pytree(params)
    p, dtype = theta.shape[0], theta.dtype
    if method == "hutchinson":
        v = jax.random.rademacher(key, (num_products, p), dtype=dtype)  # rows are v_i: f32[m, p]
        return jnp.mean(_quadratic_forms(hvp, v))

    # Hutch++ with k = m/3 products per stage. Vectors are stored as rows, so S, G: f32[k, p].
    k = num_products // 3
    key_s, key_g = jax.random.split(key)
    sketch = jax.random.rademacher(key_s, (k, p), dtype=dtype)
    hs = jax.vmap(hvp)(sketch)  # (H S)ᵀ: f32[k, p]
    # Householder QR returns orthonormal columns even when H S is rank deficient, which is all
    # unbiasedness needs: tr(H) = tr(QᵀHQ) + tr((I−QQᵀ)H(I−QQᵀ)) for any orthonormal Q.
    q, _ = jnp.linalg.qr(hs.T, mode="reduced")  # f32[p, min(p, k)]
    head = jnp.sum(_quadratic_forms(hvp, q.T))  # tr(Qᵀ H Q)
    g = jax.random.rademacher(key_g, (k, p), dtype=dtype)
    g_perp = g - (g @ q) @ q.T  # rows of (I − QQᵀ) G
    tail = jnp.sum(_quadratic_forms(hvp, g_perp)) / k  # (3/m) tr(Gᵀ(I−QQᵀ)H(I−QQᵀ)G)
    return head + tail


def hessian_trace(
    loss_fn: LossFn, params, key: jax.Array, num_products: int = 60, method: str = "hutch++"
) -> jax.Array:
    """Randomized estimate of tr(∇²loss(params)) from Hessian-vector products: f32[].

    Methods (m = num_products Hessian-vector products in both):

    - "hutchinson": (1/m) Σ_i v_iᵀ H v_i with Rademacher v_i ∈ {±1}^p. Unbiased; variance
      2(‖H‖_F² − Σ_i H_ii²) / m.
    - "hutch++" (Meyer, Musco, Musco & Woodruff 2021): S, G ∈ {±1}^{p×m/3}, Q = orth(H S),
      estimate tr(QᵀHQ) + (3/m) tr(Gᵀ(I−QQᵀ)H(I−QQᵀ)G). Uses m/3 products each for HS, HQ and
      H(I−QQᵀ)G (fewer for HQ when m/3 > p). Unbiased for any symmetric H. Its guarantee
      (relative error ε with O(1/ε) products, versus O(1/ε²) for Hutchinson) holds for PSD H
      only: the Hessian of a policy-gradient loss is in general indefinite, where the estimate
      stays unbiased and still gains whenever the spectrum's magnitudes decay, but Meyer et al.'s
      variance bound no longer applies. With a flat spectrum and few products it can be worse
      than Hutchinson (by ~2× at m = 6 on a random 20×20 symmetric matrix): only m/3 products
      go to the residual.

    Args:
      loss_fn: `loss_fn(params) -> f32[]`; must be hashable (it is a static argument of `jit`,
        so pass the same object across calls: a new lambda each call recompiles).
      params: any pytree of floating arrays.
      key: a JAX PRNG key.
      num_products: m, a positive int; for "hutch++" a multiple of 3.
      method: "hutch++" (default) or "hutchinson".
    Returns:
      f32[] estimate of the trace.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    num_products = check_int("num_products", num_products, minimum=1)
    if method == "hutch++" and num_products % 3:
        raise ValueError(
            "num_products must be a multiple of 3 for method='hutch++' (a third each for the "
            f"sketch, its projection and the residual), got {num_products}"
        )
    check_key("key", key)
    try:
        hash(loss_fn)
    except TypeError as err:
        raise ValueError(
            "loss_fn must be hashable (it is a static argument of jit); wrap it in a function "
            "or functools.partial"
        ) from err
    _flat_loss(loss_fn, params)  # checks params and the loss's output before tracing
    return _trace(loss_fn, params, key, num_products, method)


def _check_positive(name: str, value) -> None:
    if is_concrete(value) and not np.all(np.asarray(value) > 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")


def generalization_bound(train_loss, hessian_trace, num_samples, loss_bound):
    """Leading-order generalization bound of the paper's Theorem 1 (eq. 6).

    Theorem 1 reads L ≤ (1+ε) L̂ + (1+ε) sqrt(C·H/n) + ε with ε = O(n^{-3/4} log 1/δ). Dropping the
    ε terms leaves

        L̂ + sqrt(C · max(H, 0) / n).

    A negative Hessian trace (possible for an indefinite Hessian, or from a noisy estimate) is
    clipped to 0, so the bound never falls below the training loss. Broadcasts over arrays
    (numpy or JAX) as well as scalars.

    Args:
      train_loss: L̂, the training loss.
      hessian_trace: H, the Hessian-trace measure (e.g. from `hessian_trace`).
      num_samples: n > 0, the number of training samples.
      loss_bound: C > 0, a bound on the loss.
    Returns:
      The bound, with the broadcast shape of the inputs.
    """
    _check_positive("num_samples", num_samples)
    _check_positive("loss_bound", loss_bound)
    trace = jnp.maximum(jnp.asarray(hessian_trace), 0.0)  # an indefinite H can give tr < 0
    return jnp.asarray(train_loss) + jnp.sqrt(
        jnp.asarray(loss_bound) * trace / jnp.asarray(num_samples)
    )
