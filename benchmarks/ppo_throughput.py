"""Our jitted PPO vs Stable-Baselines3 PPO on CartPole-v1, same hyperparameters, same machine.

Ours runs on gymnax CartPole-v1 (one task of `cartpole_family((0.5,))`, the default pole);
SB3 (CPU torch) on Gymnasium CartPole-v1 with `make_vec_env`. Shared settings: 8 envs × 128
steps per rollout, 4 epochs of 4 minibatches, γ 0.99, λ 0.95, clip 0.2, entropy 0.01, value
0.5, grad-norm 0.5, Adam lr 1e-3 linearly annealed to 0, separate 64×64 tanh actor and critic
(SB3's default MlpPolicy; both use orthogonal init).

"Solved" is the usual criterion: the mean return of the last 100 finished training episodes
≥ 475. SB3 is stopped by a callback the moment it gets there; ours trains its whole budget in
one jitted `lax.scan` (compile excluded, measured on a second call; the compile time is shown
cold and with a warm persistent compilation cache), and its time to solve is
the time of the updates up to the first one that meets the criterion (updates cost the same).

    pip install -e ".[bench]" && python -m benchmarks.ppo_throughput [--steps 300000]

Target (issue 3): ≥ 20× faster to solve.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import numpy as np

from benchmarks import require_bench_extra
from benchmarks.timing import timed
from pgx_jax.envs import cartpole_family
from pgx_jax.rl.ppo import PPOConfig, make_train

SOLVED = 475.0


def first_solved_update(returns: np.ndarray, episodes: np.ndarray, window: int = 100) -> int | None:
    """First update whose last `window` finished episodes average ≥ SOLVED (from per-update means)."""
    for u in range(len(returns)):
        total, count, v = 0.0, 0, u
        while v >= 0 and count < window:
            total += returns[v] * episodes[v] if episodes[v] else 0.0  # NaN where none ended
            count += episodes[v]
            v -= 1
        if count >= window and total / count >= SOLVED:
            return u
    return None


def run_ours(steps: int, seed: int):
    """(env-steps/s, time to solve, steps to solve, compile seconds cold, compile seconds with
    a warm persistent compilation cache). The cache lives in a fresh temporary directory: the
    first call compiles and writes it; after `jax.clear_caches()` the next call loads it, as a
    second run of an experiment would."""
    config = PPOConfig(steps_per_task=steps, num_envs=8, num_steps=128, lr=1e-3)
    with tempfile.TemporaryDirectory() as cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        try:
            train = jax.jit(make_train(config, cartpole_family((0.5,))))
            _, compile_and_run = timed(lambda: train(jax.random.key(seed)))
            result, run = timed(lambda: train(jax.random.key(seed)))
            jax.clear_caches()
            _, warm_compile_and_run = timed(lambda: train(jax.random.key(seed)))
        finally:
            jax.config.update("jax_compilation_cache_dir", None)
    returns = np.asarray(result.metrics["episode_return"])[:, 0]
    episodes = np.asarray(result.metrics["episodes"])[:, 0]
    solved = first_solved_update(returns, episodes)
    steps_done = config.num_updates * config.num_envs * config.num_steps
    time_to_solve = None if solved is None else run * (solved + 1) / config.num_updates
    steps_to_solve = None if solved is None else (solved + 1) * config.num_envs * config.num_steps
    return (steps_done / run, time_to_solve, steps_to_solve, compile_and_run - run,
            max(warm_compile_and_run - run, 0.0))


def run_sb3(steps: int, seed: int):
    torch = require_bench_extra("torch")
    PPO = require_bench_extra("stable_baselines3").PPO
    BaseCallback = require_bench_extra("stable_baselines3.common.callbacks").BaseCallback
    make_vec_env = require_bench_extra("stable_baselines3.common.env_util").make_vec_env

    torch.set_num_threads(1)  # the fastest setting for tiny MLPs on this 2-core CPU

    class StopWhenSolved(BaseCallback):
        def __init__(self):
            super().__init__()
            self.solved_at = None

        def _on_step(self) -> bool:
            buffer = self.model.ep_info_buffer
            if len(buffer) >= 100 and np.mean([e["r"] for e in buffer]) >= SOLVED:
                self.solved_at = (time.perf_counter() - self.start, self.num_timesteps)
                return False
            return True

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO(
        "MlpPolicy", env, n_steps=128, batch_size=256, n_epochs=4, gamma=0.99, gae_lambda=0.95,
        clip_range=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5,
        learning_rate=lambda progress: 1e-3 * progress, seed=seed, device="cpu", verbose=0,
    )
    callback = StopWhenSolved()
    callback.start = time.perf_counter()
    model.learn(total_timesteps=steps, callback=callback)
    elapsed = time.perf_counter() - callback.start
    if callback.solved_at is None:
        return model.num_timesteps / elapsed, None, None
    return model.num_timesteps / elapsed, *callback.solved_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300_000, help="budget for each library")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    ours_rate, ours_solve, ours_steps, compile_time, warm_compile = run_ours(args.steps, args.seed)
    print(f"ours: {ours_rate:,.0f} env-steps/s (training incl. updates; compile {compile_time:.1f} s, "
          f"{warm_compile:.1f} s with a warm compilation cache, excluded); solved after "
          f"{ours_steps} steps in {ours_solve} s")
    sb3_rate, sb3_solve, sb3_steps = run_sb3(args.steps, args.seed)
    print(f"SB3:  {sb3_rate:,.0f} env-steps/s; solved after {sb3_steps} steps in {sb3_solve} s")
    print(f"throughput ratio (env-steps/s): {ours_rate / sb3_rate:.1f}x")
    if ours_solve is not None and sb3_solve is not None:
        print(f"time-to-solve ratio: {sb3_solve / ours_solve:.1f}x   [target >= 20x]; "
              f"including our compile: {sb3_solve / (ours_solve + compile_time):.1f}x cold, "
              f"{sb3_solve / (ours_solve + warm_compile):.1f}x with a warm cache")
    else:
        print("time-to-solve ratio: n/a (one of them did not reach mean return 475 within "
              f"{args.steps} steps; raise --steps)")


if __name__ == "__main__":
    main()
