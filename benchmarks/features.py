"""Speed and memory of `gradient_features` against a plain matmul of the same FLOP count.

The workload is the paper's MT10 policy size: a 4-layer MLP Gaussian policy 39 → 400 → 400 → 400
→ 8 (4 action means, 4 log-stds; 340,008 parameters), N = 20480 transitions (10 tasks × 2048),
projected to d = 400. The per-sample gradient matrix would be N × p × 4 B = 28 GB.

The projection matmul (2·N·p·d FLOPs) dominates the cost, so the reference is a jitted
`jnp.dot` of [chunk, p] × [p, d], repeated N / chunk times (the same FLOP count), in the same
process. Peak RSS is read after the features run, before the reference allocates anything.

    python -m benchmarks.features [--samples 20480] [--dim 400] [--chunk 1024]

Targets (issue 19): time ratio ≥ 0.8 of the matmul rate; peak RSS ≤ 2 GB (issue 2: 0.5, 4 GB).
"""

from __future__ import annotations

import argparse
import resource
import time

import jax
import jax.numpy as jnp

from benchmarks.timing import matmul_rate
from pgx_jax import Transitions, gradient_features
from pgx_jax.rl.policies import GaussianMLP


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=20480)
    parser.add_argument("--dim", type=int, default=400)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--tasks", type=int, default=10)
    args = parser.parse_args()

    key = jax.random.key(0)
    policy = GaussianMLP(action_dim=4, hidden=(400, 400, 400))
    params = policy.init(key, jnp.zeros(39))
    num_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
    keys = jax.random.split(jax.random.key(1), 3)
    batch = Transitions(
        obs=jax.random.normal(keys[0], (args.samples, 39)),
        action=jnp.tanh(jax.random.normal(keys[1], (args.samples, 4))),
        advantage=jax.random.normal(keys[2], (args.samples,)),
        task=jnp.arange(args.samples, dtype=jnp.int32) % args.tasks,
    )
    flops = 2.0 * args.samples * num_params * args.dim
    print(f"policy: {num_params:,} params; N = {args.samples}, d = {args.dim}, chunk = {args.chunk}")
    print(f"projection FLOPs: {flops / 1e12:.2f} TFLOP; dense [N, p] would be "
          f"{args.samples * num_params * 4 / 1e9:.1f} GB")

    run = lambda: gradient_features(  # noqa: E731
        policy.log_prob, params, batch, jax.random.key(2), dim=args.dim, chunk=args.chunk
    ).z.block_until_ready()
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    start = time.perf_counter()
    run()
    ours = time.perf_counter() - start
    rss = peak_rss_gb()

    # The same FLOPs as plain [chunk, p] × [p, d] matmuls, the shape of one projected chunk.
    ref = flops / (matmul_rate(min(args.chunk, args.samples), num_params, args.dim) * 1e9)

    print(f"gradient_features: {ours:.2f} s ({first:.2f} s with compile), "
          f"{flops / ours / 1e9:.0f} GFLOP/s, peak RSS {rss:.2f} GB")
    print(f"plain jnp.dot, same FLOPs: {ref:.2f} s, {flops / ref / 1e9:.0f} GFLOP/s")
    print(f"ratio (our rate / matmul rate): {ref / ours:.2f}   [target >= 0.8]")
    print(f"peak RSS: {rss:.2f} GB   [target <= 2 GB]")


if __name__ == "__main__":
    main()
