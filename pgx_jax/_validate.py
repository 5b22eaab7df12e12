"""Input checks shared by the public functions.

Shape and dtype checks always run (shapes are static under `jit`). Value checks (NaN/inf, ranges)
run only on concrete arrays: inside a user's `jit` the values are tracers and cannot be inspected,
so they are skipped there rather than failing.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when `x` holds values we can read on the host: no tracer in it (lists included)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def as_array(name: str, x, *, ndim: int | None = None, kind: str | None = None) -> jax.Array:
    """Converts `x` to an array and checks its rank and dtype kind.

    Args:
      name: the argument's name, used in error messages.
      x: array-like.
      ndim: required number of dimensions, or None.
      kind: 'f' (floating), 'i' (integer), 'b' (bool), 'fi' (float or int), ... or None.
    """
    if x is None:
        raise ValueError(f"{name} is None; expected an array")
    arr = x if isinstance(x, (jax.Array, jax.core.Tracer)) else jnp.asarray(x)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(arr.shape)}")
    if kind is not None and np.dtype(arr.dtype).kind not in kind.replace("i", "iu"):
        raise ValueError(f"{name} must have a dtype of kind {kind!r}, got {arr.dtype}")
    return arr


def check_finite(name: str, x) -> None:
    """Raises ValueError if a concrete array holds NaN or inf."""
    if is_concrete(x) and np.dtype(x.dtype).kind == "f":
        bad = ~np.isfinite(np.asarray(x))
        if bad.any():
            raise ValueError(f"{name} contains {int(bad.sum())} NaN/inf value(s)")


def check_leading(names: Sequence[str], arrays: Sequence, what: str = "samples") -> int:
    """Checks that all arrays share the same leading dimension; returns it."""
    sizes = {n: a.shape[0] for n, a in zip(names, arrays)}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"inconsistent number of {what}: {sizes}")
    return next(iter(sizes.values()))


def check_task_ids(task, n_tasks: int | None = None) -> None:
    """Checks integer task ids lie in [0, n_tasks) (value check only on concrete arrays)."""
    if not is_concrete(task) or task.size == 0:
        return
    t = np.asarray(task)
    if t.min() < 0:
        raise ValueError(f"task ids must be >= 0, got min {t.min()}")
    if n_tasks is not None and t.max() >= n_tasks:
        raise ValueError(f"task ids must be < n_tasks={n_tasks}, got max {t.max()}")


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """Returns `value` as a Python int after checking it is an integer in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_key(name: str, key) -> jax.Array:
    """Checks that `key` is a JAX PRNG key (typed, or a raw uint32 key array)."""
    if not isinstance(key, (jax.Array, jax.core.Tracer)):
        raise ValueError(f"{name} must be a jax.random key, got {type(key).__name__}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{name} must be a single key, got a key array of shape {key.shape}")
    elif key.dtype != jnp.uint32 or key.ndim != 1:
        raise ValueError(
            f"{name} must be a jax.random key (jax.random.key or PRNGKey), "
            f"got dtype {key.dtype} and shape {key.shape}"
        )
    return key
