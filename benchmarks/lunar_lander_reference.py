"""Our JAX lunar lander (`pgx_jax.envs.lunar_lander`) against Gymnasium's Box2D LunarLander-v3.

Three tables:
  1. Gymnasium's heuristic controller (`heuristic`, ours is `heuristic_action`) per gravity:
     landing rate (episodes ending with the +100 rest bonus) and return mean ± std;
  2. a uniform random policy per gravity: return mean ± std (and landing rate);
  3. throughput: env-steps/s of ours (N vmapped envs at default gravity, random actions, one
     jitted `lax.scan`, gymnax auto-reset included, compile excluded, best of a few runs) vs
     Gymnasium's single env (`env.step` loop with resets) and its synchronous vector env.
Episodes: Gymnasium seeds 0, 1, …; ours keys split from --seed. Each env runs until its first
episode ends (at most 1000 steps).

    pip install -e ".[bench]" && python -m benchmarks.lunar_lander_reference [--quick]

Target: ≥ 100× Gymnasium's single-env steps/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import require_bench_extra
from benchmarks.timing import host_throughput, jax_throughput
from pgx_jax.envs.lunar_lander import MAX_STEPS, EnvParams, LunarLander, heuristic_action

ENV = LunarLander()


def make_reference(gravity: float):
    gymnasium = require_bench_extra("gymnasium")
    require_bench_extra("Box2D")
    return gymnasium.make("LunarLander-v3", gravity=gravity)


def reference_episodes(gravity: float, episodes: int, policy: str, seed: int):
    """Gymnasium: (returns f64[episodes], landed bool[episodes])."""
    from gymnasium.envs.box2d.lunar_lander import heuristic

    env = make_reference(gravity)
    rng = np.random.default_rng(seed)
    returns, landed = np.zeros(episodes), np.zeros(episodes, bool)
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        while True:
            action = heuristic(env, obs) if policy == "heuristic" else int(rng.integers(4))
            obs, reward, terminated, truncated, _ = env.step(action)
            returns[episode] += reward
            if terminated or truncated:
                landed[episode] = terminated and reward == 100
                break
    env.close()
    return returns, landed


def make_our_episodes(policy: str):
    """Jitted (key, gravity, n) → (returns f32[n], landed bool[n]) over each env's first episode."""

    def episode(key, gravity):
        params = EnvParams(gravity=gravity)
        key_reset, key_steps = jax.random.split(key)
        obs, state = ENV.reset(key_reset, params)

        def body(carry, step_key):
            obs, state, total, done, landed = carry
            key_action, key_env = jax.random.split(step_key)
            action = (
                heuristic_action(obs) if policy == "heuristic" else jax.random.randint(key_action, (), 0, 4)
            )
            obs, state, reward, terminated, truncated, _ = ENV.step(key_env, state, action, params)
            total = total + jnp.where(done, 0.0, reward)
            landed = landed | (~done & terminated & (reward == 100.0))
            return (obs, state, total, done | terminated | truncated, landed), None

        init = (obs, state, jnp.float32(0.0), jnp.bool_(False), jnp.bool_(False))
        (_, _, total, _, landed), _ = jax.lax.scan(body, init, jax.random.split(key_steps, MAX_STEPS))
        return total, landed

    batched = jax.jit(jax.vmap(episode, in_axes=(0, None)))
    return lambda key, gravity, n: batched(jax.random.split(key, n), jnp.float32(gravity))


def reference_vector_throughput(num_envs: int, steps: int, seed: int) -> float:
    gymnasium = require_bench_extra("gymnasium")
    envs = gymnasium.make_vec("LunarLander-v3", num_envs=num_envs, vectorization_mode="sync")
    envs.reset(seed=seed)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for _ in range(steps):
        envs.step(rng.integers(4, size=num_envs))  # autoreset by the vector env
    rate = num_envs * steps / (time.perf_counter() - start)
    envs.close()
    return rate


def fmt(returns) -> str:
    return f"{np.mean(returns):8.1f} ± {np.std(returns):6.1f}"


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gravities", type=float, nargs="+", default=[-11.5, -10.0, -6.0, -2.0])
    parser.add_argument("--heuristic-episodes", type=int, default=100)
    parser.add_argument("--random-episodes", type=int, default=200)
    parser.add_argument("--num-envs", type=int, default=4096)
    parser.add_argument("--timing-steps", type=int, default=200, help="scan length of our timing run")
    parser.add_argument("--reference-steps", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="10/40 episodes, 1024 envs, 5k reference steps")
    args = parser.parse_args()
    if args.quick:
        args.heuristic_episodes, args.random_episodes = 10, 40
        args.num_envs, args.reference_steps = 1024, 5_000
    gymnasium = require_bench_extra("gymnasium")
    box2d = require_bench_extra("Box2D")

    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} CPU cores, "
          f"{platform.processor() or platform.machine()}); gymnasium {gymnasium.__version__}, "
          f"Box2D {getattr(box2d, '__version__', '?')}")

    key = jax.random.key(args.seed)
    for policy, episodes in (("heuristic", args.heuristic_episodes), ("random", args.random_episodes)):
        ours_fn = make_our_episodes(policy)
        print(f"\n{policy} policy, {episodes} episodes per gravity and env")
        print(f"{'gravity':>8} | {'Gymnasium return':>18} {'landed':>7} | {'ours return':>18} {'landed':>7}")
        for index, gravity in enumerate(args.gravities):
            ref_returns, ref_landed = reference_episodes(gravity, episodes, policy, args.seed)
            returns, landed = ours_fn(jax.random.fold_in(key, index), gravity, episodes)
            returns, landed = np.asarray(returns), np.asarray(landed)
            print(f"{gravity:8.2f} | {fmt(ref_returns):>18} {ref_landed.mean():7.0%} | "
                  f"{fmt(returns):>18} {landed.mean():7.0%}")

    print("\nthroughput at gravity -10 (random actions, auto-reset included)")
    best, median, first = jax_throughput(ENV, args.num_envs, args.timing_steps, args.repeats, args.seed)
    reference = make_reference(-10.0)
    _, single = host_throughput(reference, args.reference_steps, np.random.default_rng(args.seed))
    reference.close()
    vector_envs = 16
    vector_steps = max(args.reference_steps // vector_envs, 100)
    vector = reference_vector_throughput(vector_envs, vector_steps, args.seed)
    print(f"{'':40} {'steps/s':>12} {'ours ÷ it':>10}")
    print(f"{f'ours, {args.num_envs} envs vmapped (best of {args.repeats})':40} {best:12,.0f}")
    print(f"{f'ours, median of {args.repeats}':40} {median:12,.0f}")
    print(f"{'Gymnasium, single env':40} {single:12,.0f} {best / single:9.0f}×")
    print(f"{f'Gymnasium, SyncVectorEnv x{vector_envs}':40} {vector:12,.0f} {best / vector:9.0f}×")
    print(f"(ours: compile + first run {first:.1f} s; median ratio to the single env "
          f"{median / single:.0f}×; target ≥ 100×)")


if __name__ == "__main__":
    main()
