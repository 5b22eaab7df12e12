"""Env-steps/s of our JAX LunarLander and Highway against the originals, in one run.

Ours: N envs vmapped in one jitted `lax.scan` of uniform random actions (gymnax auto-reset
included), compile excluded; best and median of --repeats runs with fresh keys.
Originals, stepped on the host, one env, uniform random actions: Gymnasium's `LunarLander-v3`
(Box2D) and highway-env's `highway-fast-v0`. Their rate counts `env.step` alone; the resets after
an episode ends are timed apart and shown as a second rate (steps/s with resets included).
Ratios divide ours by the `env.step`-only rate (the smaller ratio). Target: ≥ 100×.

    pip install -e ".[bench]" && python -m benchmarks.control_envs [--quick]
"""

from __future__ import annotations

import argparse
import os

import jax
import numpy as np

from benchmarks import highway_reference, lunar_lander_reference, require_bench_extra
from benchmarks.timing import host_throughput, jax_throughput
from pgx_jax.envs import Highway, LunarLander


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lunar-envs", type=int, default=4096, help="our vmapped LunarLanders")
    parser.add_argument("--highway-envs", type=int, default=1024, help="our vmapped Highways")
    parser.add_argument("--lunar-steps", type=int, default=200, help="our LunarLander scan length")
    parser.add_argument("--highway-steps", type=int, default=30, help="our Highway scan length")
    parser.add_argument("--reference-steps", type=int, default=20_000,
                        help="Gymnasium LunarLander-v3 steps")
    parser.add_argument("--highway-reference-steps", type=int, default=300,
                        help="highway-env highway-fast-v0 steps")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of ours")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 256/64 envs, "
                        "50/10 steps, 2000/50 reference steps, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.lunar_envs, args.highway_envs = 256, 64
        args.lunar_steps, args.highway_steps = 50, 10
        args.reference_steps, args.highway_reference_steps = 2_000, 50
        args.repeats = 2
    gymnasium = require_bench_extra("gymnasium")
    box2d = require_bench_extra("Box2D")
    highway_env = require_bench_extra("highway_env")

    device = jax.devices()[0]
    print(f"jax {jax.__version__} on {device.platform} ({device.device_kind}); "
          f"{os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable")
    print(f"gymnasium {gymnasium.__version__}, Box2D {getattr(box2d, '__version__', '?')}, "
          f"highway-env {getattr(highway_env, '__version__', '?')}")

    rng = np.random.default_rng(args.seed)
    cases = [
        ("LunarLander", LunarLander(), args.lunar_envs, args.lunar_steps,
         lunar_lander_reference.make_reference(-10.0), args.reference_steps),
        ("Highway", Highway(), args.highway_envs, args.highway_steps,
         highway_reference.make_reference(1.0), args.highway_reference_steps),
    ]
    rows = []
    for name, ours, num_envs, steps, original, original_steps in cases:
        print(f"{name}: ours {num_envs} envs × {steps} steps × {args.repeats} repeats, "
              f"original {original_steps} steps …", flush=True)
        best, median, first = jax_throughput(ours, num_envs, steps, args.repeats, args.seed)
        step_rate, with_resets = host_throughput(original, original_steps, rng)
        original.close()
        rows.append((name, num_envs, best, median, first, step_rate, with_resets))

    print(f"\n{'env':<12} {'envs':>5} | {'ours steps/s':>25} | {'original steps/s':>23} | "
          f"{'ours ÷ original':>15} | {'compile':>7}")
    print(f"{'':<12} {'':>5} | {'best':>12} {'median':>12} | {'env.step':>10} "
          f"{'+ resets':>12} | {'best':>7} {'median':>7} | {'+ 1st run':>7}")
    for name, num_envs, best, median, first, step_rate, with_resets in rows:
        print(f"{name:<12} {num_envs:>5} | {best:>12,.0f} {median:>12,.0f} | {step_rate:>10,.0f} "
              f"{with_resets:>12,.0f} | {best / step_rate:>6.0f}× {median / step_rate:>6.0f}× | "
              f"{first:>7.1f} s")
    print("\noriginals: Gymnasium LunarLander-v3 (Box2D) and highway-env highway-fast-v0, one env "
          "each;\nratios use their env.step-only rate. Target: ours ≥ 100× the original.")


if __name__ == "__main__":
    main()
