"""How fast multitask SAC runs at MT10 size: `python -m benchmarks.sac_update [--quick]`.

1. SAC update steps/s (critics, actor, temperatures, targets; updates scanned 10 per jitted
   call, each on a batch from a filled replay buffer) for the networks of `experiments.mt10
   --downstream`: Soft Modularization, the multi-head MLP, PaCo and CARE (at the downstream's
   widths and at their authors'; ratio to Soft-Mod's, target ≥ 0.5), at MT10 size (39 + 10
   inputs, 4 actions). Each row: XLA's FLOP count of one update (`cost_analysis` of a single-update jit;
   XLA counts a loop body once, so not of the scan), the achieved GFLOP/s, and its fraction of
   a plain 256³ matmul's rate measured in the same run (target ≥ 0.7). Stable-Baselines3's SAC
   (torch, CPU) on the plain MLP of the same size and batch gives its updates/s as a ratio.
2. SAC collection on MT10 (host-stepped envs, one update per vector step), in steady state
   (compiles excluded): env-steps/s when each update finishes before the envs step, and when
   the envs step while it runs (`overlap`, the default), as a ratio (target ≥ 1.3×), at 1 and 2
   envs per task.
3. All learners in one call: the learners of `experiments.mt10 --downstream` (3 groupings × 3
   groups + Soft-Mod on all 10, 2 envs per task) trained together — one vmapped update, one host
   vector env — against the same learners one after another, in env-steps/s of all learners;
   and what that predicts for the paper's budget.

    pip install -e ".[bench]" && python -m benchmarks.sac_update
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import require_bench_extra
from benchmarks.timing import matmul_rate, xla_flops
from pgx_jax.rl.host_sac import LearnerLayout
from pgx_jax.rl.sac import Batch, ReplayBuffer, SACConfig, init_sac, make_sac_agent, update

NUM_TASKS, OBS_DIM, ACTION_DIM = 10, 39, 4


def _random_rows(rng: np.random.Generator, count: int):
    """(policy inputs [count, 39 + 10] with a task one-hot, actions [count, 4]) of random data."""
    inputs = np.concatenate([rng.normal(size=(count, OBS_DIM)),
                             np.eye(NUM_TASKS)[rng.integers(NUM_TASKS, size=count)]], 1)
    return inputs.astype(np.float32), rng.uniform(-1, 1, (count, ACTION_DIM)).astype(np.float32)


def update_rate(config: SACConfig, updates: int, buffer_rows: int = 50_000,
                per_call: int = 10) -> tuple[float, float]:
    """(updates/s, XLA FLOPs of one update) of SAC updates scanned `per_call` per jitted call
    (buffer sampling included), compile excluded."""
    agent = make_sac_agent(config, NUM_TASKS, ACTION_DIM)
    state = init_sac(agent, config, OBS_DIM, jax.random.key(0))
    rng = np.random.default_rng(0)
    inputs, actions = _random_rows(rng, buffer_rows)
    rows = Batch(obs=jnp.asarray(inputs), action=jnp.asarray(actions),
                 reward=jnp.asarray(rng.uniform(0, 10, buffer_rows), jnp.float32),
                 next_obs=jnp.asarray(inputs), terminated=jnp.zeros(buffer_rows),
                 task=jnp.asarray(inputs[:, OBS_DIM:].argmax(1), jnp.int32))
    buffer = ReplayBuffer.create(buffer_rows, rows).add(rows)

    def one(state, key):
        key_batch, key_update = jax.random.split(key)
        return update(agent, config, state, buffer.sample(key_batch, config.batch_size),
                      key_update)[0]

    flops = xla_flops(jax.jit(one), state, jax.random.key(1))
    many = jax.jit(lambda state, key: jax.lax.scan(
        lambda s, k: (one(s, k), None), state, jax.random.split(key, per_call))[0])
    state = jax.block_until_ready(many(state, jax.random.key(1)))
    calls = max(updates // per_call, 1)
    start = time.perf_counter()
    for index in range(calls):
        state = many(state, jax.random.key(index + 2))
    jax.block_until_ready(state)
    return calls * per_call / (time.perf_counter() - start), flops


def sb3_update_rate(hidden: tuple[int, ...], batch_size: int, updates: int,
                    buffer_rows: int = 50_000) -> float:
    """Updates/s of Stable-Baselines3's SAC (`model.train`) on an MLP of the same size, inputs
    and batch, its replay buffer filled with random rows (torch on the CPU, its default
    threads)."""
    gymnasium = require_bench_extra("gymnasium")
    sb3 = require_bench_extra("stable_baselines3")
    from stable_baselines3.common.logger import configure

    box = gymnasium.spaces.Box
    env = gymnasium.make("Pendulum-v1")  # replaced spaces: only their shapes matter here
    env.observation_space = box(-np.inf, np.inf, (OBS_DIM + NUM_TASKS,), np.float32)
    env.action_space = box(-1.0, 1.0, (ACTION_DIM,), np.float32)
    model = sb3.SAC("MlpPolicy", env, batch_size=batch_size, buffer_size=buffer_rows,
                    policy_kwargs=dict(net_arch=list(hidden)), device="cpu", seed=0)
    model.set_logger(configure(None, []))
    rng = np.random.default_rng(0)
    inputs, actions = _random_rows(rng, buffer_rows)
    replay = model.replay_buffer
    replay.observations[:, 0], replay.next_observations[:, 0] = inputs, inputs
    replay.actions[:, 0] = actions
    replay.rewards[:, 0] = rng.uniform(0, 10, buffer_rows)
    replay.full = True
    model.train(gradient_steps=5, batch_size=batch_size)  # warm-up
    start = time.perf_counter()
    model.train(gradient_steps=updates, batch_size=batch_size)
    return updates / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--intervals", type=int, default=5,
                        help=f"timed intervals of {LOG_EVERY} vector steps per collection run")
    parser.add_argument("--paper-steps-per-task", type=int, default=2_000_000)
    parser.add_argument("--quick", action="store_true", help="30 updates, 1 timed interval")
    args = parser.parse_args()
    if args.quick:
        args.updates, args.intervals = 30, 1
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
        "PaCo (K = 5, 256, 256)": SACConfig(network="paco", hidden=(256, 256)),
        "PaCo (K = 5, 400 × 3, the authors')": SACConfig(network="paco", hidden=(400,) * 3),
        "CARE (4 encoders × 50, head 256, 256)": SACConfig(network="care", hidden=(256, 256)),
        "CARE (4 × 50, head 400 × 3, the authors')": SACConfig(network="care",
                                                               hidden=(400,) * 3),
    }
    reference = matmul_rate(256, 256, 256)
    print(f"\n1) SAC updates, batch 256, MT10 size ({args.updates} updates each); plain 256³ "
          f"matmul: {reference:.0f} GFLOP/s")
    print(f"   {'network':<44} {'updates/s':>9} {'MFLOP/update':>12} {'GFLOP/s':>8} "
          f"{'fraction':>8}")
    rates = {}
    for name, config in networks.items():
        rates[name], flops = update_rate(config, args.updates)
        gflops = rates[name] * flops / 1e9
        print(f"   {name:<44} {rates[name]:9.1f} {flops / 1e6:12.0f} {gflops:8.0f} "
              f"{gflops / reference:8.2f}", flush=True)
    sb3_rate = sb3_update_rate((256, 256), 256, max(args.updates // 3, 10))
    ours = rates["plain MLP (256, 256)"]
    print(f"   Stable-Baselines3 SAC, MLP (256, 256): {sb3_rate:.1f} updates/s; ours ÷ SB3: "
          f"{ours / sb3_rate:.1f}×   [targets: fraction ≥ 0.7, ≥ 1× SB3]")
    softmod = rates["Soft-Mod (2 layers × 2 modules, 128 wide)"]
    print("   updates/s ÷ Soft-Mod 2 × 2 × 128's (the downstream default): " + ", ".join(
        f"{name.split(' (')[0]} {name.split(' (')[1].rstrip(')')} {rates[name] / softmod:.2f}"
        for name in rates if name.startswith(("PaCo", "CARE")))
          + "   [target: ≥ 0.5]")

    require_bench_extra("metaworld")
    from pgx_jax.envs.metaworld import MetaWorldFamily

    print(f"\n2) SAC collection on MT10 (Soft-Mod 2 × 2 × 128, one update per vector step, "
          f"{args.intervals} × {LOG_EVERY} steps timed after the warm-up and the compile)")
    print(f"   {'envs per task':<14} {'wait (env-steps/s)':>18} {'overlap':>8} {'ratio':>6} "
          f"{'env share':>9}")
    config = SACConfig(network="softmod", softmod_width=128)
    for num_envs in (1, 2):
        family = MetaWorldFamily(envs_per_task=num_envs)
        layout = LearnerLayout.of([range(NUM_TASKS)])
        wait, _ = collection_rate(family, config, layout, args.intervals, overlap=False)
        overlap, env_share = collection_rate(family, config, layout, args.intervals)
        print(f"   {num_envs:<14} {wait:18,.0f} {overlap:8,.0f} {overlap / wait:5.2f}× "
              f"{env_share:9.0%}   [target ≥ 1.3×]", flush=True)

    family = MetaWorldFamily(envs_per_task=2)
    rng = np.random.default_rng(0)
    groups = [g for _ in range(3) for g in np.array_split(rng.permutation(NUM_TASKS), 3)]
    layout = LearnerLayout.of(groups + [range(NUM_TASKS)])
    together, _ = collection_rate(family, config, layout, args.intervals)
    seconds = sum(len(g) * 2 * LOG_EVERY * args.intervals / collection_rate(
        family, config, LearnerLayout.of([g]), args.intervals)[0] for g in layout.groups)
    alone = len(layout.rows) * 2 * LOG_EVERY * args.intervals / seconds
    print(f"\n3) {layout.num_learners} learners (3 random groupings × 3 groups + all 10 tasks), "
          f"2 envs per task: {together:,.0f} env-steps/s together vs {alone:,.0f} one after "
          f"another ({together / alone:.2f}×)")
    hours = len(layout.rows) * args.paper_steps_per_task / together / 3600
    print(f"   at that rate, {args.paper_steps_per_task:,} steps per task for all "
          f"{layout.num_learners} learners take ~{hours:,.0f} h (one seed)")


LOG_EVERY = 100  # vector steps per timed interval


def collection_rate(family, config: SACConfig, layout, intervals: int,
                    overlap: bool = True) -> tuple[float, float]:
    """(env-steps/s of all of `layout`'s learners, fraction of the time in the envs) of host SAC
    on `family`, timed over `intervals` intervals after one warm-up interval and the interval
    that compiles the update."""
    from pgx_jax.rl.host_sac import train_sac_on_host

    num_envs = family.envs_per_task
    config = dataclasses.replace(config, num_envs=num_envs,
                                 total_steps=(intervals + 2) * LOG_EVERY * num_envs,
                                 learning_starts=LOG_EVERY * num_envs)
    agent = make_sac_agent(config, NUM_TASKS, ACTION_DIM)
    stamps = []
    with family.make_envs(rows=layout.rows) as envs:
        result = train_sac_on_host(
            agent, config, envs, layout, jax.random.split(jax.random.key(0), layout.num_learners),
            log_every=LOG_EVERY, progress=lambda *_: stamps.append(time.perf_counter()),
            overlap=overlap)
    seconds = stamps[-1] - stamps[1]
    env_seconds = result.metrics["env_seconds"][2:].sum()
    return len(layout.rows) * num_envs * LOG_EVERY * intervals / seconds, env_seconds / seconds


if __name__ == "__main__":
    main()
