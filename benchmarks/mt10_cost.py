"""Where MT10 meta-training spends its time: `python -m benchmarks.mt10_cost [--quick]`.

1. The host adapter's env-steps/s, sync vs async vector env, under random actions and with our
   jitted policy choosing the actions (the 4-layer MLP of `experiments.mt10`).
2. A few host PPO updates at `experiments.mt10`'s settings: the share of wall time spent stepping
   the envs vs in the policy's forward passes and the PPO update (compile excluded: the first
   update is dropped).

    pip install -e ".[bench]" && python -m benchmarks.mt10_cost
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from benchmarks import require_bench_extra
from experiments.mt10 import measure_env_speed
from pgx_jax.envs.metaworld import MT10_TASKS, MetaWorldFamily
from pgx_jax.rl.host import HostRunner, host_rollout, init_host_train, train_on_host
from pgx_jax.rl.ppo import PPOConfig, make_agent


def policy_rate(agent, state, envs, steps: int) -> float:
    """Env-steps/s of a rollout with the jitted policy (compiled by a first short rollout)."""
    runner = HostRunner.start(envs)
    host_rollout(agent, state.params, state.obs_moments, envs, runner, np.arange(envs.shape[0]),
                 jax.random.key(0), 2)
    start = time.perf_counter()
    host_rollout(agent, state.params, state.obs_moments, envs, runner, np.arange(envs.shape[0]),
                 jax.random.key(1), steps)
    return steps * envs.shape[0] * envs.shape[1] / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs-per-task", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300, help="vector steps per speed run")
    parser.add_argument("--updates", type=int, default=4, help="timed PPO updates (+1 compile)")
    parser.add_argument("--num-steps", type=int, default=250, help="rollout length per update")
    parser.add_argument("--quick", action="store_true", help="50 steps, 2 updates of 50 steps")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.updates, args.num_steps = 50, 2, 50
    require_bench_extra("metaworld")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {os.cpu_count()} CPUs, "
          f"{len(os.sched_getaffinity(0))} usable; MT10, {args.envs_per_task} envs per task")

    config = PPOConfig(steps_per_task=args.envs_per_task * args.num_steps * (args.updates + 1),
                       num_envs=args.envs_per_task, num_steps=args.num_steps, update_epochs=4,
                       num_minibatches=10 if args.num_steps % 10 == 0 else 2,
                       gae_lambda=0.97, ent_coef=0.0, hidden=(400, 400, 400), task_onehot=True)
    print("\n1) adapter speed (env-steps/s over all 10 tasks)")
    print(f"   {'strategy':<8} {'make (s)':>9} {'random actions':>15} {'with policy':>12}")
    rates = {}
    for strategy in ("sync", "async"):
        family = MetaWorldFamily(MT10_TASKS, envs_per_task=args.envs_per_task,
                                 vector_strategy=strategy)
        agent = make_agent(family, config)
        state = init_host_train(agent, config, family.num_tasks, family.obs_dim, jax.random.key(0))
        start = time.perf_counter()
        with family.make_envs() as envs:
            made = time.perf_counter() - start
            random_rate = measure_env_speed(envs, args.steps)
            with_policy = policy_rate(agent, state, envs, args.steps)
        print(f"   {strategy:<8} {made:>9.1f} {random_rate:>15,.0f} {with_policy:>12,.0f}",
              flush=True)
        rates[strategy] = with_policy
    print(f"   async ÷ sync with the policy: {rates['async'] / rates['sync']:.2f}×")

    print(f"\n2) meta-training time split (sync; {args.updates} PPO updates of "
          f"{10 * args.envs_per_task * args.num_steps} steps after one compile update)")
    family = MetaWorldFamily(MT10_TASKS, envs_per_task=args.envs_per_task)
    agent = make_agent(family, config)
    state = init_host_train(agent, config, family.num_tasks, family.obs_dim, jax.random.key(0))
    with family.make_envs() as envs:
        result = train_on_host(agent, config, envs, state)
    timed = {name: result.metrics[name][1:].sum()
             for name in ("env_seconds", "policy_seconds", "learn_seconds")}
    total = sum(timed.values())
    for name, seconds in timed.items():
        print(f"   {name.replace('_seconds', ''):<7} {seconds:7.1f} s  {seconds / total:6.1%}")
    steps = args.updates * 10 * args.envs_per_task * args.num_steps
    print(f"   PPO throughput: {steps / total:,.0f} env-steps/s including updates")


if __name__ == "__main__":
    main()
