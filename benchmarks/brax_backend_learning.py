"""Does a brax backend give sensible locomotion? Train per backend, score on every backend.

For each backend and seed: PPO trains a policy on `--speeds` (HalfCheetah target speeds, the
`halfcheetah-vel` family's reward and PPO settings from the registry, `--steps` per task), then
its greedy return per task is scored on every backend, beside a uniformly random policy's. A
backend is a sensible default when its policies learn at least as much per sample and keep their
return on the others; a gait that exploits one simulator's approximation (spring resolves contacts
with springs) collapses on the other backends.

    pip install -e ".[brax]" && python -m benchmarks.brax_backend_learning
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np

from pgx_jax.envs.brax_family import brax_family
from pgx_jax.envs.registry import BRAX_CTRL_WEIGHT, BRAX_EPISODE, FAMILIES
from pgx_jax.rl.ppo import PPOConfig, evaluate, make_agent, make_train, random_policy_returns


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["positional", "spring"])
    parser.add_argument("--speeds", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--steps", type=int, default=100_000, help="PPO env steps per task")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--eval-envs", type=int, default=16)
    args = parser.parse_args(argv)

    families = {backend: brax_family("halfcheetah", backend=backend, target_speeds=args.speeds,
                                     episode_length=BRAX_EPISODE,
                                     weights=[[1.0, BRAX_CTRL_WEIGHT]] * len(args.speeds))
                for backend in args.backends}
    settings = {name: value for name, value in FAMILIES["halfcheetah-vel"].defaults.items()
                if name in {field.name for field in dataclasses.fields(PPOConfig)}}
    config = PPOConfig(**{**settings, "steps_per_task": args.steps})
    random = {backend: np.asarray(random_policy_returns(
        family, jax.random.key(2), num_envs=args.eval_envs, max_steps=BRAX_EPISODE))
        for backend, family in families.items()}
    print(f"HalfCheetah target speeds {args.speeds}, {args.steps:,} PPO steps per task; greedy "
          "return per task (a uniformly random policy's in brackets)")
    print("| seed | trained on | train s | " + " | ".join(f"on {b}" for b in families) + " |")
    print("|---" * (3 + len(families)) + "|")
    for seed in range(args.seeds):
        for trained_on, family in families.items():
            start = time.perf_counter()
            params = jax.block_until_ready(
                jax.jit(make_train(config, family))(jax.random.key(seed)).params)
            seconds = time.perf_counter() - start
            agent = make_agent(family, config)
            cells = []
            for backend, scored_on in families.items():
                greedy = np.asarray(evaluate(agent, params, scored_on, jax.random.key(1),
                                             num_envs=args.eval_envs, max_steps=BRAX_EPISODE,
                                             greedy=True))
                cells.append(" ".join(f"{g:.0f} ({r:.0f})" for g, r in zip(greedy, random[backend])))
            print(f"| {seed} | {trained_on} | {seconds:.0f} | " + " | ".join(cells) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
