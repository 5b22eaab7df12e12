"""Which form of PaCo's layer is fastest here: `python -m benchmarks.paco_layer [--quick]`.

PaCo's task-τ layer has kernel Σ_k w_τk W_k. On a batch that mixes tasks there are four ways
to compute it; each row times the gradient (w.r.t. the kernels, biases, task weights and the
input, as inside a SAC update) of one layer on the same 10 tasks × `rows_per_task` rows:

- K outputs mixed per sample (ours, `pgx_jax.rl.networks.CompositionalDense`): x·W_k for every
  k, then Σ_k w_τk (·). K× a dense layer's FLOPs, in K-wide matmuls.
- per-task kernels on task-stratified rows: mix the n kernels first (n·K·i·o), then one batched
  matmul [n, b, i] × [n, i, o]. A dense layer's FLOPs, but it needs every batch to hold the same
  number of rows of every task, in task order (a replay buffer per task).
- `lax.ragged_dot` on task-sorted rows: the same, for unequal task counts.
- per-sample gathered kernels: each row's own kernel [B, i, o]; B·i·o memory.

A plain dense layer of the same width (one kernel) is the yardstick; every time is also given as
a ratio to ours. This is the evidence for keeping the K-output form (README, "PaCo's layer").
"""

from __future__ import annotations

import argparse
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import best_time
from pgx_jax.rl.networks import CompositionalDense

NUM_TASKS, NUM_SETS = 10, 5
OURS = "K outputs mixed per sample (ours)"
YARDSTICK = "plain dense layer (1 kernel; yardstick)"


def layer_forms(num_tasks: int, num_sets: int, rows_per_task: int, width: int):
    """{name: loss(params, x)} for each form, on rows sorted by task, `rows_per_task` each."""
    task = jnp.repeat(jnp.arange(num_tasks), rows_per_task)  # int[B], task-sorted
    onehot = jax.nn.one_hot(task, num_tasks)
    dense = CompositionalDense(width, num_sets)

    def mixed(params):
        return jnp.einsum("nk,kio->nio", params["w"], params["kernel"]), params["w"] @ params["bias"]

    def ours(params, x):
        variables = {"params": {"kernel": params["kernel"], "bias": params["bias"]}}
        return dense.apply(variables, x, onehot @ params["w"])

    def stratified(params, x):
        kernel, bias = mixed(params)
        grouped = x.reshape(num_tasks, rows_per_task, -1)
        out = jnp.einsum("nbi,nio->nbo", grouped, kernel) + bias[:, None]
        return out.reshape(x.shape[0], -1)

    def ragged(params, x):
        kernel, bias = mixed(params)
        sizes = jnp.full(num_tasks, rows_per_task, jnp.int32)
        return jax.lax.ragged_dot(x, kernel, sizes) + bias[task]

    def gathered(params, x):
        kernel, bias = mixed(params)
        return jnp.einsum("bi,bio->bo", x, kernel[task]) + bias[task]

    def plain(params, x):
        return x @ params["kernel"][0] + params["bias"][0]

    forms = {OURS: ours,
             "per-task kernels, task-stratified rows": stratified,
             "lax.ragged_dot, task-sorted rows": ragged,
             "per-sample gathered kernels": gathered,
             YARDSTICK: plain}
    return {name: _scalar_loss(form) for name, form in forms.items()}


def _scalar_loss(form):
    """A scalar of the form's output, so that one gradient call is one backward pass."""
    return lambda params, x: jnp.sum(jnp.tanh(form(params, x)))


def time_forms(width: int, rows_per_task: int, repeats: int, seed: int = 0) -> dict:
    """Milliseconds per gradient of each form (best of `repeats` calls of 20 gradients), after
    checking that every form but the yardstick has ours' gradients."""
    keys = jax.random.split(jax.random.key(seed), 4)
    params = {"kernel": jax.random.normal(keys[0], (NUM_SETS, width, width)) * width ** -0.5,
              "bias": jax.random.normal(keys[1], (NUM_SETS, width)) * 0.1,
              "w": jax.random.normal(keys[2], (NUM_TASKS, NUM_SETS)) * NUM_SETS ** -0.5}
    x = jax.random.normal(keys[3], (NUM_TASKS * rows_per_task, width))
    grads = {name: jax.jit(jax.grad(loss, argnums=(0, 1)))
             for name, loss in layer_forms(NUM_TASKS, NUM_SETS, rows_per_task, width).items()}
    values = {name: jax.block_until_ready(grad(params, x)) for name, grad in grads.items()}
    for name, value in values.items():
        if name != YARDSTICK:
            jax.tree_util.tree_map(partial(np.testing.assert_allclose, rtol=1e-3, atol=1e-4,
                                           err_msg=name), value, values[OURS])

    def twenty(grad):
        return [grad(params, x) for _ in range(20)][-1]

    return {name: best_time(partial(twenty, grad), repeats) / 20 * 1e3
            for name, grad in grads.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="width 256 only, fewer repeats")
    parser.add_argument("--rows-per-task", type=int, default=26,
                        help="rows of each of the 10 tasks (26: a batch of 260, SAC's ~256)")
    args = parser.parse_args(argv)
    if args.rows_per_task < 1:
        parser.error("--rows-per-task must be >= 1")
    widths = (256,) if args.quick else (256, 400)
    print(f"PaCo layer, K = {NUM_SETS}, {NUM_TASKS} tasks × {args.rows_per_task} rows; "
          f"gradient of one layer (jax {jax.__version__} on {jax.default_backend()})")
    for width in widths:
        times = time_forms(width, args.rows_per_task, repeats=3 if args.quick else 5)
        ours = times[OURS]
        print(f"\nwidth {width}:")
        print(f"  {'form':42s} {'ms':>7s}  {'ours / form':>11s}")
        for name, ms in times.items():
            print(f"  {name:42s} {ms:7.2f}  {ours / ms:10.2f}×")


if __name__ == "__main__":
    main()
