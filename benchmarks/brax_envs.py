"""Env-steps/s of the brax task families per backend, against Gymnasium's MuJoCo, in one run.

Ours: a 10-task `brax_family` (HalfCheetah: 10 target speeds; Ant: 10 directions), every task
with `--envs` envs, all n·E envs vmapped in one jitted `lax.scan` of uniform random actions
(automatic reset included), once per brax backend (generalized, positional, spring, mjx). Compile
(+ first run) is timed apart; rates are the median (and best) of `--repeats` runs with fresh keys.
Beside it, brax's own env vmapped over as many envs (`env.step` alone: no task parameters, no
automatic reset), which shows what the family's adapter costs (gymnax's auto-reset computes a
reset state every step). Reference, stepped on the host one env at a time: Gymnasium's
`HalfCheetah-v5` / `Ant-v5` (MuJoCo), `env.step` alone (resets timed apart), median of
`--repeats` passes. Ratio: ours (median) ÷ reference (median). Target: ≥ 10× for the backend the
families use by default.

The backends are different simulators (brax's positional and spring are approximations that
brax's own HalfCheetah runs with a smaller timestep and higher gears; generalized and mjx solve
MuJoCo's equations): the fastest is only a good default if its locomotion is sensible, which
`experiments.brax` checks by training θ* on it.

    pip install -e ".[bench]" && python -m benchmarks.brax_envs [--quick]
"""

from __future__ import annotations

import argparse
import os

import jax
import numpy as np

from benchmarks import require_bench_extra
from benchmarks.timing import host_throughput, jax_throughput, timed
from pgx_jax.envs.brax_family import BRAX_BACKENDS, brax_family

REFERENCES = {"halfcheetah": "HalfCheetah-v5", "ant": "Ant-v5"}


def family_of(env_name: str, backend: str, episode_length: int):
    """The benchmarked 10-task family of `env_name` on `backend`."""
    if env_name == "halfcheetah":
        return brax_family(env_name, backend=backend, target_speeds=np.linspace(0.2, 2.0, 10),
                           episode_length=episode_length)
    angles = np.linspace(0, 2 * np.pi, 10, endpoint=False)
    return brax_family(env_name, backend=backend, episode_length=episode_length,
                       directions=np.stack([np.cos(angles), np.sin(angles)], 1))


def brax_own_rate(env_name: str, backend: str, num_envs: int, steps: int, repeats: int,
                  seed: int) -> float:
    """Median env-steps/s of brax's own env, `num_envs` vmapped, `steps` uniform random actions
    in one jitted scan (compile excluded; no resets)."""
    from brax import envs as brax_envs

    env = brax_envs.get_environment(env_name, backend=backend)

    @jax.jit
    def run(key):
        key_reset, key_actions = jax.random.split(key)
        state = jax.vmap(env.reset)(jax.random.split(key_reset, num_envs))
        actions = jax.random.uniform(key_actions, (steps, num_envs, env.action_size),
                                     minval=-1.0, maxval=1.0)

        def body(state, action):
            state = jax.vmap(env.step)(state, action)
            return state, state.reward.sum()

        return jax.lax.scan(body, state, actions)[1].sum()

    timed(lambda: run(jax.random.key(seed)))  # compile
    times = [timed(lambda r=r: run(jax.random.key(seed + 1 + r)))[1] for r in range(repeats)]
    return float(np.median(num_envs * steps / np.asarray(times)))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32],
                        help="envs per task, comma-separated (default 1,32: 10 and 320 envs)")
    parser.add_argument("--steps", type=int, default=200, help="scan length of ours")
    parser.add_argument("--reference-steps", type=int, default=5_000,
                        help="steps of the Gymnasium MuJoCo reference")
    parser.add_argument("--backends", nargs="+", default=list(BRAX_BACKENDS),
                        choices=BRAX_BACKENDS)
    parser.add_argument("--bodies", nargs="+", default=list(REFERENCES), choices=list(REFERENCES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 8 envs per task, 50 steps, 1,000 reference steps, 2 "
                             "repeats, HalfCheetah on positional and generalized")
    args = parser.parse_args()
    if args.quick:
        args.envs, args.steps, args.reference_steps, args.repeats = [8], 50, 1_000, 2
        args.backends, args.bodies = ["positional", "generalized"], ["halfcheetah"]
    gymnasium = require_bench_extra("gymnasium")
    require_bench_extra("mujoco")
    require_bench_extra("brax")

    device = jax.devices()[0]
    print(f"jax {jax.__version__} on {device.platform} ({device.device_kind}); "
          f"{os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable; gymnasium "
          f"{gymnasium.__version__}")
    rng = np.random.default_rng(args.seed)
    rows = []
    for body in args.bodies:
        reference = gymnasium.make(REFERENCES[body])
        passes = [host_throughput(reference, args.reference_steps, rng)
                  for _ in range(args.repeats)]
        reference.close()
        step_rate, with_resets = np.median(passes, axis=0)
        print(f"{REFERENCES[body]} (Gymnasium MuJoCo, 1 env): {step_rate:,.0f} steps/s "
              f"({with_resets:,.0f} with resets)", flush=True)
        for backend in args.backends:
            family = family_of(body, backend, episode_length=1000)
            for per_task in args.envs:
                num_envs = family.num_tasks * per_task
                params = jax.tree_util.tree_map(lambda x: np.repeat(x, per_task, axis=0),
                                                family.params)
                best, median, first = jax_throughput(family.env, num_envs, args.steps,
                                                     args.repeats, args.seed, params=params)
                own = brax_own_rate(body, backend, num_envs, args.steps, args.repeats, args.seed)
                rows.append((body, backend, num_envs, median, best, own, first, step_rate))
                print(f"  {backend:<11} {num_envs:>5} envs: {median:>10,.0f} steps/s (best "
                      f"{best:,.0f}; brax's own env {own:,.0f}), compile + first run "
                      f"{first:.1f} s, {median / step_rate:.2f}× the reference", flush=True)

    print(f"\n{'body':<12} {'backend':<11} {'envs':>5} | {'ours median':>11} {'best':>9} | "
          f"{'brax own':>9} | {'reference':>9} | {'ratio':>6} | {'compile':>8}")
    for body, backend, num_envs, median, best, own, first, step_rate in rows:
        print(f"{body:<12} {backend:<11} {num_envs:>5} | {median:>11,.0f} {best:>9,.0f} | "
              f"{own:>9,.0f} | {step_rate:>9,.0f} | {median / step_rate:>5.2f}× | {first:>6.1f} s")
    print("\nreference: Gymnasium HalfCheetah-v5 / Ant-v5 (MuJoCo), one env, env.step only. "
          "Target: ≥ 10× for the default backend.")


if __name__ == "__main__":
    main()
