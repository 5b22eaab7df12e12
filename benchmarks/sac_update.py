"""How fast multitask SAC runs at MT10 size: `python -m benchmarks.sac_update [--quick]`.

1. SAC update steps/s (critics, actor, temperatures, targets; one jitted call per update on a
   batch from a filled replay buffer) for the networks of `experiments.mt10 --downstream`:
   Soft Modularization and the multi-head MLP, at MT10 size (39 + 10 inputs, 4 actions).
2. Env-steps/s of SAC collection on MT10 (host-stepped envs, one update per vector step), so a
   user can predict how long `--preset paper` takes: the printed estimate multiplies it out.

    pip install -e ".[bench]" && python -m benchmarks.sac_update
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import require_bench_extra
from pgx_jax.rl.sac import Batch, ReplayBuffer, SACConfig, init_sac, make_sac_agent, update

NUM_TASKS, OBS_DIM, ACTION_DIM = 10, 39, 4


def update_rate(config: SACConfig, updates: int, buffer_rows: int = 50_000) -> float:
    """Updates/s of one jitted SAC update (buffer sampling included), compile excluded."""
    agent = make_sac_agent(config, NUM_TASKS, ACTION_DIM)
    state = init_sac(agent, config, OBS_DIM, jax.random.key(0))
    rng = np.random.default_rng(0)
    inputs = np.concatenate([rng.normal(size=(buffer_rows, OBS_DIM)),
                             np.eye(NUM_TASKS)[rng.integers(NUM_TASKS, size=buffer_rows)]], 1)
    rows = Batch(obs=jnp.asarray(inputs, jnp.float32),
                 action=jnp.asarray(rng.uniform(-1, 1, (buffer_rows, ACTION_DIM)), jnp.float32),
                 reward=jnp.asarray(rng.uniform(0, 10, buffer_rows), jnp.float32),
                 next_obs=jnp.asarray(inputs, jnp.float32), terminated=jnp.zeros(buffer_rows),
                 task=jnp.asarray(inputs[:, OBS_DIM:].argmax(1), jnp.int32))
    buffer = ReplayBuffer.create(buffer_rows, rows).add(rows)

    @jax.jit
    def step(state, key):
        key_batch, key_update = jax.random.split(key)
        return update(agent, config, state, buffer.sample(key_batch, config.batch_size),
                      key_update)[0]

    state = jax.block_until_ready(step(state, jax.random.key(1)))
    start = time.perf_counter()
    for index in range(updates):
        state = step(state, jax.random.key(index + 2))
    jax.block_until_ready(state)
    return updates / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--collect-steps", type=int, default=1500,
                        help="SAC env steps per task in the collection run")
    parser.add_argument("--paper-steps-per-task", type=int, default=2_000_000)
    parser.add_argument("--quick", action="store_true", help="30 updates, 300 collection steps")
    args = parser.parse_args()
    if args.quick:
        args.updates, args.collect_steps = 30, 300
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {os.cpu_count()} CPUs, "
          f"{len(os.sched_getaffinity(0))} usable")
    networks = {
        "Soft-Mod (2 layers × 2 modules, 128 wide)": SACConfig(network="softmod",
                                                               softmod_width=128),
        "Soft-Mod (2 × 4, 256 wide)": SACConfig(network="softmod", softmod_modules=4,
                                                softmod_width=256),
        "multi-head MLP (256, 256)": SACConfig(network="multihead", hidden=(256, 256)),
        "multi-head MLP (400, 400)": SACConfig(network="multihead", hidden=(400, 400)),
        "plain MLP (256, 256)": SACConfig(network="mlp", hidden=(256, 256)),
    }
    print(f"\n1) SAC updates/s, batch 256, MT10 size ({args.updates} updates each)")
    rates = {}
    for name, config in networks.items():
        rates[name] = update_rate(config, args.updates)
        print(f"   {name:<44} {rates[name]:8.1f} updates/s", flush=True)

    require_bench_extra("metaworld")
    from pgx_jax.envs.metaworld import MetaWorldFamily
    from pgx_jax.rl.host import train_sac_on_host

    config = SACConfig(network="softmod", softmod_width=128, hidden=(256, 256),
                       total_steps=args.collect_steps, learning_starts=args.collect_steps // 3)
    agent = make_sac_agent(config, NUM_TASKS, ACTION_DIM)
    with MetaWorldFamily().make_envs() as envs:
        start = time.perf_counter()
        result = train_sac_on_host(agent, config, envs, jax.random.key(0),
                                   log_every=args.collect_steps)
        seconds = time.perf_counter() - start
    env_seconds = float(result.metrics["env_seconds"].sum())
    rate = NUM_TASKS * args.collect_steps / seconds
    print(f"\n2) SAC on MT10 (Soft-Mod, 1 env per task, 1 update per vector step, "
          f"{args.collect_steps} steps per task, compile included): {rate:,.0f} env-steps/s; "
          f"{env_seconds / seconds:.0%} of the time in the envs")
    hours = NUM_TASKS * args.paper_steps_per_task / rate / 3600
    print(f"   at that rate, {args.paper_steps_per_task:,} steps per task on all 10 tasks take "
          f"~{hours:,.0f} h per policy (one grouping's groups together take about as long)")


if __name__ == "__main__":
    main()
