"""Our JAX highway (`pgx_jax.envs.highway`) against highway-env's `highway-fast-v0`.

Three parts, all printed as tables:
  1. agreement: highway-env's reset scene is copied into our state, then both envs take the same
     actions open-loop; we report how often the episode ends at the same step and the largest
     position difference before it ends (float32 vs float64);
  2. statistics: for densities 0.5, 1, 1.5, 2 and fixed policies (always IDLE, always FASTER,
     uniform random), the collision rate (episodes ending in a crash within 30 s) and the mean
     ego speed over all steps, highway-env (few episodes, it is slow) next to ours (1024 vmapped
     episodes), next to our dynamics run from highway-env's own reset scenes: the very scenes of
     its column (for IDLE/FASTER the numbers must then be identical) and 400 more (resets are
     cheap: a large-sample check of the reset distribution);
  3. throughput: env-steps/s of ours (1024 vmapped envs, jitted `lax.scan`, compile excluded,
     random actions, gymnax auto-reset included) vs highway-env's single env; target ≥ 100×.

    pip install -e ".[bench]" && python -m benchmarks.highway_reference [--episodes 25]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import require_bench_extra
from benchmarks.timing import jax_throughput
from pgx_jax.envs.highway import FASTER, IDLE, EnvState, Highway

POLICIES = ("IDLE", "FASTER", "random")


def make_reference(density: float):
    gymnasium = require_bench_extra("gymnasium")
    require_bench_extra("highway_env")  # registers highway-fast-v0
    return gymnasium.make("highway-fast-v0", config={"vehicles_density": density})


def state_from_highway_env(env) -> EnvState:
    """Our EnvState holding highway-env's current scene (ego first, as in its road.vehicles)."""
    base = env.unwrapped
    vehicles = base.road.vehicles
    if vehicles[0] is not base.vehicle:
        raise ValueError("expected the ego as the first vehicle of highway-env's road")

    def column(values, dtype=jnp.float32):
        return jnp.asarray(np.asarray(values), dtype)

    return EnvState(
        x=column([v.position[0] for v in vehicles]),
        y=column([v.position[1] for v in vehicles]),
        heading=column([v.heading for v in vehicles]),
        speed=column([v.speed for v in vehicles]),
        target_lane=column([v.target_lane_index[2] for v in vehicles], jnp.int32),
        target_speed=column([v.target_speed for v in vehicles]),
        delta=column([getattr(v, "DELTA", 4.0) for v in vehicles]),
        timer=column([getattr(v, "timer", 0.0) for v in vehicles]),
        crashed=column([v.crashed for v in vehicles], bool),
        impact=column([v.impact is not None for v in vehicles], bool),
        time=jnp.asarray(round(base.time * base.config["policy_frequency"]), jnp.int32),
    )


def policy_action(policy: str, rng: np.random.Generator) -> int:
    if policy == "random":
        return int(rng.integers(5))
    return {"IDLE": IDLE, "FASTER": FASTER}[policy]


def agreement(episodes: int, seed: int = 0):
    """Same scene, same actions: (fraction of equal end steps, max |Δposition| before the end)."""
    env, ours = make_reference(1.0), Highway()
    params = ours.default_params
    step = jax.jit(ours.step_env)
    rng = np.random.default_rng(seed)
    same, worst, rows = 0, 0.0, []
    for episode in range(episodes):
        policy = POLICIES[episode % 3]
        env.reset(seed=seed + episode)
        state = state_from_highway_env(env)
        end_ref = end_ours = None
        for t in range(params.max_steps_in_episode):
            action = policy_action(policy, rng)
            if end_ref is None:
                _, _, terminated, truncated, _ = env.step(action)
                end_ref = t if terminated or truncated else None
            if end_ours is None:
                _, state, _, terminated, _ = step(jax.random.key(0), state, action, params)
                end_ours = t if bool(terminated) or t + 1 >= params.max_steps_in_episode else None
            if end_ref is None and end_ours is None:
                ref = state_from_highway_env(env)
                worst = max(
                    worst,
                    float(jnp.max(jnp.abs(state.x - ref.x))),
                    float(jnp.max(jnp.abs(state.y - ref.y))),
                )
            if end_ref is not None and end_ours is not None:
                break
        same += end_ref == end_ours
        rows.append((policy, end_ref, end_ours))
    return same / episodes, worst, rows


def reference_cell(density: float, policy: str, episodes: int, seed: int = 0):
    """highway-env: (collision rate, mean speed, steps, seconds spent in env.step)."""
    env = make_reference(density)
    rng = np.random.default_rng(seed)
    crashes, speeds, stepping = 0, [], 0.0
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        done = False
        while not done:
            action = policy_action(policy, rng)
            start = time.perf_counter()
            _, _, terminated, truncated, info = env.step(action)
            stepping += time.perf_counter() - start
            speeds.append(info["speed"])
            done = terminated or truncated
        crashes += bool(terminated)
    return crashes / episodes, float(np.mean(speeds)), len(speeds), stepping


def episode_stats(env: Highway, params, state, policy, key):
    """Collision rate and mean ego speed of one full episode from each initial state (batch E).

    policy: 0 always IDLE, 1 always FASTER, 2 uniform random. Returns (rate f32[], speed f32[]).
    """
    num_envs = state.x.shape[0]
    horizon = env.default_params.max_steps_in_episode

    def one_step(carry, step_key):
        state, alive = carry
        key_action, key_env = jax.random.split(step_key)
        random_action = jax.random.randint(key_action, (num_envs,), 0, 5)
        action = jnp.where(policy == 0, IDLE, jnp.where(policy == 1, FASTER, random_action))
        _, state, _, terminated, truncated, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(key_env, num_envs), state, action, params
        )
        crashed = alive & terminated
        speed = jnp.where(alive, info["speed"], 0.0)
        return (state, alive & ~(terminated | truncated)), (crashed, speed, alive)

    _, (crashed, speed, alive) = jax.lax.scan(
        one_step, (state, jnp.ones(num_envs, bool)), jax.random.split(key, horizon)
    )
    return jnp.mean(jnp.any(crashed, 0)), jnp.sum(speed) / jnp.sum(alive)


def make_episodes(env: Highway, num_envs: int):
    """jit(density, policy id, key) → (collision rate, mean speed) over num_envs episodes."""

    def run(density, policy, key):
        params = env.default_params.replace(vehicles_density=density)
        key_reset, key_run = jax.random.split(key)
        _, state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(key_reset, num_envs), params
        )
        return episode_stats(env, params, state, policy, key_run)

    return jax.jit(run)


def reference_scenes(density: float, count: int, seed: int = 10_000) -> EnvState:
    """`count` highway-env reset scenes as one batched EnvState (resets are cheap, steps not)."""
    env = make_reference(density)
    states = []
    for episode in range(count):
        env.reset(seed=seed + episode)
        states.append(state_from_highway_env(env))
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=25, help="highway-env episodes per cell")
    parser.add_argument("--envs", type=int, default=1024, help="our vmapped episodes / envs")
    parser.add_argument("--densities", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0])
    parser.add_argument("--agreement-episodes", type=int, default=30)
    parser.add_argument("--scenes", type=int, default=400,
                        help="highway-env reset scenes per density run with our dynamics")
    args = parser.parse_args()
    total_start = time.perf_counter()

    print("1) agreement: highway-env's scene copied into ours, same actions open-loop "
          f"(density 1, {args.agreement_episodes} episodes, IDLE/FASTER/random in turn)",
          flush=True)
    fraction, worst, rows = agreement(args.agreement_episodes)
    print(f"   same end step: {fraction:.0%}; max |Δx|, |Δy| before the end: {worst:.2e} m")
    differing = [r for r in rows if r[1] != r[2]]
    for policy, end_ref, end_ours in differing:
        print(f"   differs: {policy}: highway-env ends at step {end_ref}, ours at {end_ours}")

    print(f"\n2) statistics: highway-env {args.episodes} episodes/cell vs ours {args.envs} "
          "episodes/cell", flush=True)
    ours_env = Highway()
    episodes = make_episodes(ours_env, args.envs)
    from_scenes = jax.jit(partial(episode_stats, ours_env))
    results, ref_steps, ref_seconds = [], 0, 0.0
    for density in args.densities:
        same_scenes = reference_scenes(density, args.episodes, seed=0)  # reference_cell's seeds
        scenes = reference_scenes(density, args.scenes)
        params = ours_env.default_params.replace(vehicles_density=jnp.float32(density))
        for p, policy in enumerate(POLICIES):
            start = time.perf_counter()
            ref_crash, ref_speed, steps, seconds = reference_cell(density, policy, args.episodes)
            ref_steps, ref_seconds = ref_steps + steps, ref_seconds + seconds
            key = jax.random.key(int(density * 100) + p)
            crash, speed = episodes(jnp.float32(density), p, key)
            same_crash, same_speed = from_scenes(params, same_scenes, p, key)
            scene_crash, scene_speed = from_scenes(params, scenes, p, key)
            results.append((density, policy, ref_crash, float(crash), float(same_crash),
                            float(scene_crash), ref_speed, float(speed), float(same_speed),
                            float(scene_speed)))
            elapsed = time.perf_counter() - start
            print(f"   density {density:g} {policy:>6}: done in {elapsed:.0f} s "
                  f"({steps} highway-env steps)", flush=True)
    print()
    print(f"   ours: {args.envs} episodes from our own resets\n"
          f"   same: our dynamics from the very {args.episodes} highway-env reset scenes of the "
          "highway-env column\n         (equal to it for IDLE/FASTER when the dynamics agree)\n"
          f"   ref-{args.scenes}: our dynamics from {args.scenes} other highway-env reset scenes "
          "(a large-sample check of the reset distribution)")
    head = f"{'ours':>6} {'same':>6} {'ref-' + str(args.scenes):>8}"
    print(f"   {'density':>7} {'policy':>7} | {'collision rate':^41} | "
          f"{'mean ego speed [m/s]':^35}")
    print(f"   {'':>7} {'':>7} | {'highway-env ± s.e.':>18} {head} | {'highway-env':>11} {head}")
    for row in results:
        density, policy, ref_crash, crash, same_crash, scene_crash = row[:6]
        ref_speed, speed, same_speed, scene_speed = row[6:]
        se = np.sqrt(ref_crash * (1 - ref_crash) / args.episodes)
        print(f"   {density:>7g} {policy:>7} | {ref_crash:>11.2f} ± {se:.2f} {crash:>6.2f}"
              f" {same_crash:>6.2f} {scene_crash:>8.2f} | {ref_speed:>11.2f} {speed:>6.2f}"
              f" {same_speed:>6.2f} {scene_speed:>8.2f}")

    print("\n3) throughput", flush=True)
    ours_rate, _, _ = jax_throughput(ours_env, args.envs, steps=30, repeats=3, seed=0)
    ref_rate = ref_steps / ref_seconds
    print(f"   highway-env (1 env, env.step only): {ref_rate:>10.1f} steps/s")
    print(f"   ours ({args.envs} vmapped envs, jit scan): {ours_rate:>10.0f} steps/s "
          f"({jax.devices()[0].platform})")
    print(f"   ratio: {ours_rate / ref_rate:.0f}× (target ≥ 100×)")
    print(f"\ntotal {time.perf_counter() - total_start:.0f} s")


if __name__ == "__main__":
    main()
