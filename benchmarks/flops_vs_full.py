"""Cost of estimating vs cost of full training, in FLOPs and seconds: the paper's 26× claim.

Estimation = transitions at θ* + gradient features + the batched solve of all m subsets
(+ the SDP, a few cvxpy milliseconds at n = 10, not counted in FLOPs). Full training = PPO
fine-tuning of θ* on each of the m subsets plus evaluating each result (what the ground truth of
`experiments.validate` runs). θ* itself is shared by both and not counted.

FLOPs come from `pgx_jax.diagnostics.jaxpr_flops`, which multiplies loop bodies by their trip
counts (XLA's `cost_analysis` counts a loop body once; tests/test_flops.py checks the two agree on
loop-free programs). Wall-clock is printed twice: first calls on both
sides (compilation included, which dominates the few seconds of estimation), and the estimation
again once compiled (the steady state a user re-running it with new data sees) against the
full training's single call (its compilation is a few seconds of its total).

    python -m benchmarks.flops_vs_full --env cartpole [--subsets 200]

Target (issue 4): ≥ 50× in FLOPs and in wall-clock.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

import pgx_jax as pgx
from experiments._pipeline import cost_flops
from benchmarks.timing import timed
from pgx_jax.envs import cartpole_family
from pgx_jax.rl.ground_truth import fine_tune_subsets
from pgx_jax.rl.ppo import PPOConfig, collect_transitions, make_agent, make_train
from pgx_jax.surrogate import subset_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="cartpole", choices=("cartpole",))
    parser.add_argument("--meta-steps", type=int, default=100_000, help="θ* budget per task")
    parser.add_argument("--finetune-steps", type=int, default=20_480, help="per task per subset")
    parser.add_argument("--collect-steps", type=int, default=10_000)
    parser.add_argument("--subsets", type=int, default=200)
    parser.add_argument("--subset-size", type=int, default=3)
    parser.add_argument("--dim", type=int, default=400)
    parser.add_argument("--eval-envs", type=int, default=64)
    args = parser.parse_args()

    family = cartpole_family()
    meta = PPOConfig(steps_per_task=args.meta_steps)
    agent = make_agent(family, meta)
    params = jax.block_until_ready(jax.jit(make_train(meta, family))(jax.random.key(0)).params)
    subsets = pgx.sample_subsets(jax.random.key(1), family.num_tasks, args.subsets, args.subset_size)
    keys = jax.random.split(jax.random.key(2), 3)

    def collect():
        return collect_transitions(agent, params, family, keys[0], steps_per_task=args.collect_steps)

    batch, t_collect = timed(collect)

    def features():
        return pgx.gradient_features(agent.actor.log_prob, params["actor"], batch, keys[1], dim=args.dim)

    feats, t_features = timed(features)
    solution, t_solve = timed(lambda: pgx.solve_subsets(feats, subsets))
    iterations = int(np.max(solution.iterations))
    _, t_cluster = timed(lambda: pgx.cluster_tasks(pgx.affinity_matrix(subsets, subset_scores(solution)), 3))
    finetune = PPOConfig(steps_per_task=args.finetune_steps, lr=1e-4)

    def full():
        return fine_tune_subsets(finetune, family, params, subsets, keys[2],
                                 eval_envs=args.eval_envs).mean_return

    _, t_full = timed(full)
    # Steady state of the estimation (second calls: compiled programs are cached).
    warm = sum(timed(fn)[1] for fn in (collect, features, lambda: pgx.solve_subsets(feats, subsets),
                                         lambda: pgx.cluster_tasks(pgx.affinity_matrix(
                                             subsets, subset_scores(solution)), 3)))

    counts = cost_flops(agent, params, family, collect_steps=args.collect_steps, dim=args.dim,
                        subsets=subsets, features=feats, solver_iterations=iterations,
                        finetune=finetune, eval_envs=args.eval_envs)
    flops, full_flops, estimate_flops = counts["estimation"], counts["full"], counts["estimation_total"]
    estimate_seconds = t_collect + t_features + t_solve + t_cluster
    print(f"{args.env}: n = {family.num_tasks}, m = {args.subsets}, alpha = {args.subset_size}, "
          f"d = {args.dim}; fine-tuning {args.finetune_steps:,} steps/task/subset; "
          f"solver iterations {iterations}")
    print("estimation FLOPs: " + ", ".join(f"{k} {v / 1e9:.2f} G" for k, v in flops.items())
          + f"; full training FLOPs: {full_flops / 1e9:.1f} G")
    print(f"estimation seconds: collect {t_collect:.1f}, features {t_features:.1f}, solve {t_solve:.1f}, "
          f"cluster {t_cluster:.1f}; full training {t_full:.1f} s (compile included on both sides)")
    print(f"FLOPs ratio (full / estimate): {full_flops / estimate_flops:.1f}x   [target >= 50x; paper 26x]")
    print(f"wall-clock ratio (full / estimate), compile included on both sides: "
          f"{t_full / estimate_seconds:.1f}x; estimation warm ({warm:.2f} s) vs full training "
          f"(one call, compile included): {t_full / warm:.1f}x   [target >= 50x]")


if __name__ == "__main__":
    main()
