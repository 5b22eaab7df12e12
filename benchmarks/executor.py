"""The executor seam's overhead: the same fine-tuning runs in-process and on a local Ray.

    python -m benchmarks.executor [--runs 16] [--chunk 4] [--finetune-steps 20480]

The runs are ground-truth fine-tunings of a CartPole θ* (`fine_tune_runs`, subsets of 2 tasks,
the validation's PPO settings). Prints, in one run, the wall time and runs/s of: all runs in one
vmapped call in this process; parts of --chunk runs one after the other in this process; the
same parts as Ray tasks on a local Ray with this machine's cores (started before the clock;
its start time is printed apart). Every part compiles its program (a new jit per call, in this
process as in a worker), so the two part-wise rows do the same work and their difference is the
executor's overhead: printed per part and as a fraction of one part's in-process time.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from pgx_jax.envs import cartpole_family
from pgx_jax.executor import InProcess, RayExecutor
from pgx_jax.rl.ground_truth import fine_tune_keys, fine_tune_runs
from pgx_jax.rl.ppo import PPOConfig, make_agent


class Runs:
    """fn(part) of the executors: fine-tunes the named runs (one vmapped call). Picklable by
    reference (this module is importable on the workers)."""

    def __init__(self, config: PPOConfig, half_lengths, runs: int, seed: int = 0):
        self.config, self.half_lengths = config, tuple(half_lengths)
        family = cartpole_family(self.half_lengths)
        self.star = make_agent(family, config).init(jax.random.key(seed), family.obs_dim)
        rng = np.random.default_rng(seed)
        self.members = np.stack([np.sort(rng.choice(family.num_tasks, 2, replace=False))
                                 for _ in range(runs)]).astype(np.int32)
        train_keys, eval_key = fine_tune_keys(jax.random.key(seed + 1), runs, 1)
        self.key_data = np.asarray(jax.random.key_data(train_keys))
        self.eval_key_data = np.asarray(jax.random.key_data(eval_key))
        self.names = [f"run{i}" for i in range(runs)]

    def __call__(self, names: list) -> dict:
        rows = np.asarray([self.names.index(name) for name in names])
        out = fine_tune_runs(self.config, cartpole_family(self.half_lengths), self.star,
                             self.members[rows], jax.random.wrap_key_data(self.key_data[rows]),
                             jax.random.wrap_key_data(self.eval_key_data), eval_envs=8)
        returns = np.asarray(out.returns)  # waits for the runs
        return {name: {"returns": returns[i]} for i, name in enumerate(names)}


def wall(executor, runs: Runs) -> tuple[float, dict]:
    start, results = time.perf_counter(), {}
    for part in executor.run(runs, runs.names):
        results.update(part)
    return time.perf_counter() - start, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=4)
    parser.add_argument("--finetune-steps", type=int, default=20_480, help="per task per run")
    args = parser.parse_args()
    config = PPOConfig(steps_per_task=args.finetune_steps, num_envs=8, num_steps=128,
                       lr=1e-4, hidden=(64, 64))
    runs = Runs(config, (0.3, 0.6, 1.2, 2.0, 3.0), args.runs)
    parts = -(-args.runs // args.chunk)
    print(f"{args.runs} CartPole fine-tuning runs of {args.finetune_steps:,} steps per task "
          f"(2 tasks each), {parts} parts of {args.chunk}; {os.cpu_count()} cores, "
          f"jax {jax.__version__}")
    whole, reference = wall(InProcess(), runs)
    in_parts, parted = wall(InProcess(chunk=args.chunk), runs)
    start = time.perf_counter()
    ray_executor = RayExecutor(chunk=args.chunk)
    ray_start = time.perf_counter() - start
    on_ray, remote = wall(ray_executor, runs)
    same = all(np.array_equal(parted[n]["returns"], remote[n]["returns"]) for n in runs.names)
    print(f"{'how':<34} {'wall s':>8} {'runs/s':>8}")
    for label, seconds in (("in-process, one vmapped call", whole),
                           (f"in-process, parts of {args.chunk}", in_parts),
                           (f"Ray (local), parts of {args.chunk}", on_ray)):
        print(f"{label:<34} {seconds:8.1f} {args.runs / seconds:8.2f}")
    overhead = (on_ray - in_parts) / parts
    print(f"Ray start {ray_start:.1f} s (once per driver). Ray's overhead per part: "
          f"{overhead:+.2f} s = {overhead / (in_parts / parts):+.2f} × a part's in-process time; "
          f"Ray / in-process parts: {on_ray / in_parts:.2f}×; parts / one call: "
          f"{in_parts / whole:.2f}×; Ray's returns equal the in-process parts' bit for bit: "
          f"{same}")


if __name__ == "__main__":
    main()
