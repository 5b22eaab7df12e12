"""Timing helpers shared by the benchmark scripts (each script imports them from here).

Every benchmark prints ratios against a reference measured in the same run; these helpers time
both sides the same way: compile excluded unless said, `jax.block_until_ready` on results.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np


def timed(fn):
    """(fn()'s result, made ready, and the seconds it took)."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def best_time(fn, repeats: int = 3) -> float:
    """Fastest of `repeats` timed calls of fn (its result made ready), in seconds."""
    return min(timed(fn)[1] for _ in range(repeats))


def matmul_rate(rows: int, inner: int, cols: int, repeats: int = 10, seed: int = 0) -> float:
    """GFLOP/s of a plain jitted f32 [rows, inner] × [inner, cols] matmul (compile excluded):
    the yardstick that "fraction of the matmul rate" divides by."""
    key_a, key_b = jax.random.split(jax.random.key(seed))
    a = jax.random.normal(key_a, (rows, inner))
    b = jax.random.normal(key_b, (inner, cols))
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, b))
    return 2.0 * rows * inner * cols / best_time(lambda: dot(a, b), repeats) / 1e9


def xla_flops(jitted, *args, **kwargs) -> float:
    """FLOPs of one call of a jitted function, as XLA's cost analysis of its compiled program
    counts them (transcendentals not included)."""
    return float(jitted.lower(*args, **kwargs).compile().cost_analysis()["flops"])


def jax_throughput(env, num_envs: int, steps: int, repeats: int, seed: int, params=None):
    """(best steps/s, median steps/s, compile + first-run seconds) of a gymnax env.

    `num_envs` envs take `steps` uniform random actions (discrete, or in a Box) in one jitted
    `lax.scan`; each of the `repeats` timed runs draws fresh keys. `params`: the env's default
    params (None), or params with a leading axis of size `num_envs` (one per env, e.g. a task
    family's params repeated per env).
    """
    per_env = params is not None
    params = env.default_params if params is None else params
    step = jax.vmap(env.step, in_axes=(0, 0, 0, 0 if per_env else None))
    space = env.action_space(None)

    def random_actions(key):
        if hasattr(space, "n"):
            return jax.random.randint(key, (steps, num_envs), 0, space.n)
        return jax.random.uniform(key, (steps, num_envs) + tuple(space.shape),
                                  minval=space.low, maxval=space.high)

    @jax.jit
    def run(key):
        key_reset, key_actions, key_steps = jax.random.split(key, 3)
        _, state = jax.vmap(env.reset, in_axes=(0, 0 if per_env else None))(
            jax.random.split(key_reset, num_envs), params
        )
        actions = random_actions(key_actions)
        keys = jax.random.split(key_steps, (steps, num_envs))

        def body(carry, inputs):
            state, total = carry
            action, step_keys = inputs
            _, state, reward, *_ = step(step_keys, state, action, params)
            return (state, total + reward.sum()), None

        # The summed reward depends on every step, so XLA cannot drop any of them.
        (_, total), _ = jax.lax.scan(body, (state, jnp.float32(0.0)), (actions, keys))
        return total

    start = time.perf_counter()
    jax.block_until_ready(run(jax.random.key(seed)))
    first = time.perf_counter() - start
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(jax.random.key(seed + 1 + r)))
        times.append(time.perf_counter() - start)
    rates = num_envs * steps / np.asarray(times)
    return float(rates.max()), float(np.median(rates)), first


def host_throughput(env, steps: int, rng: np.random.Generator):
    """(steps/s of `env.step` alone, steps/s with the resets included) of a Gymnasium env.

    Uniform random actions (discrete, or in a Box); the env is reset whenever an episode ends.
    """
    space = env.action_space
    discrete = hasattr(space, "n")
    actions = (rng.integers(space.n, size=steps) if discrete
               else rng.uniform(space.low, space.high, (steps,) + space.shape).astype(space.dtype))
    env.reset(seed=int(rng.integers(2**31)))
    stepping = resetting = 0.0
    for action in actions:
        start = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(int(action) if discrete else action)
        stepped = time.perf_counter()
        stepping += stepped - start
        if terminated or truncated:
            env.reset()
            resetting += time.perf_counter() - stepped
    return steps / stepping, steps / (stepping + resetting)
