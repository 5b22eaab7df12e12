"""Table 2's MT10 column: train each task group separately with multitask SAC and score success.

For every grouping (ours, random, gradient similarity; at k and at each `--sweep-k`), one SAC
policy per group is trained on that group's tasks; the baselines train one policy on all tasks
(a plain MLP multitask policy, and Soft Modularization). Every task gets the same env-step
budget (`sac_steps_per_task`) in every method, so the total budget is the same. Each trained
policy is scored greedily on its own tasks; a grouping's score is the mean success over all
tasks.

All learners of one network (every group of every grouping and k, the baseline of that network,
every seed) train together (`pgx_jax.rl.host_sac`): one vmapped update per vector step, one
host vector env, the envs stepping while the update runs; one stage per network. A group that
several groupings (or several k) share is one learner per seed. A learner's result depends only
on its tasks and seed: its envs are seeded by (seed, task, env) and its PRNG key by (seed, task
set), not by which other learners train beside it.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

import pgx_jax as pgx
from experiments._pipeline import METHODS, group_lists
from experiments._runner import UpdateBar
from pgx_jax.rl.host_sac import LearnerLayout, evaluate_sac_on_host, train_sac_on_host
from pgx_jax.rl.sac import SACConfig, make_sac_agent

# The paper's Table 2, MT10 column (mean success % over 5 runs), and its k ablation.
PAPER_MT10 = {"ours": "94.0", "random": "58.2", "gradient_similarity": "69.6",
              "softmod_all": "82.0", "multitask": "71.3"}
PAPER_K = {2: "89.5", 3: "94.0", 4: "95.1"}
PAPER_SAC_STEPS = 2_000_000  # per task, as our "paper" preset
BASELINES = {"multitask": "mlp", "softmod_all": "softmod"}  # name → SAC network, all tasks
# What a SAC training depends on, besides its tasks (in the stage's name) and network (`extra`):
# it trains from scratch, so neither θ* nor the estimate is an input.
SAC_USES = ("seed", "tasks", "envs_per_task", "eval_episodes", "sac_steps_per_task",
            "sac_learning_starts", "sac_hidden", "softmod_layers", "softmod_modules",
            "softmod_width", "sac_batch_size", "sac_buffer_size")


def sac_config(config, network: str) -> SACConfig:
    return SACConfig(network=network, hidden=config.sac_hidden,
                     softmod_layers=config.softmod_layers, softmod_modules=config.softmod_modules,
                     softmod_width=config.softmod_width, batch_size=config.sac_batch_size,
                     num_envs=config.envs_per_task, total_steps=config.sac_steps_per_task,
                     learning_starts=config.sac_learning_starts,
                     buffer_size=config.sac_buffer_size)


def groupings(stage, clusters: dict, config, num_tasks: int) -> dict:
    """{k: {method: labels int[n]}} for k and every --sweep-k (one stage per extra k)."""
    out = {config.k: {m: np.asarray(clusters[m]) for m in METHODS}}
    for k in sorted(set(config.sweep_k) - {0, config.k}):
        def cluster(k=k):
            return {"ours": pgx.cluster_tasks(clusters["U"], k),
                    "gradient_similarity": pgx.cluster_tasks(clusters["U_gradient"], k),
                    "random": pgx.random_groups(jax.random.key(config.seed + 17 + k), num_tasks,
                                                k)}

        out[k] = {m: np.asarray(v) for m, v in stage(f"groups.k{k}", cluster,
                                                     inputs=("cluster",)).items()}
    return out


def learners(config, by_k: dict, num_tasks: int) -> dict:
    """{network: [(task group, seed), ...]}: every group of every grouping and k with
    `--sac-network`, and the baselines on all tasks with theirs; each (network, group, seed)
    once, in a fixed order."""
    out = {}
    everything = tuple(range(num_tasks))
    for seed in range(config.sac_seeds):
        for methods in by_k.values():
            for labels in methods.values():
                for group in group_lists(labels):
                    out.setdefault(config.sac_network, {})[(tuple(group), seed)] = None
        for network in BASELINES.values():
            out.setdefault(network, {})[(everything, seed)] = None
    return {network: list(specs) for network, specs in out.items()}


TRAIN_STREAM, EVALUATE_STREAM = 2_000_000, 3_000_000  # + seed: each seed its own episodes


def train_learners(config, family, network: str, specs: list) -> dict:
    """SAC for every (group, seed) of `specs` with `network`, together → success and return
    per learner and task (greedy; NaN for tasks outside the group) f32[L, n]."""
    sac = sac_config(config, network)
    agent = make_sac_agent(sac, family.num_tasks, family.action_dim)
    layout = LearnerLayout.of([group for group, _ in specs])
    seeds = np.asarray([seed for _, seed in specs])
    # A learner's key comes from its seed and its task set alone.
    base = jax.random.key(config.seed + 1000)
    keys = jnp.stack([jax.random.fold_in(jax.random.fold_in(base, seed),
                                         sum(1 << t for t in group)) for group, seed in specs])
    row_seeds = np.repeat(seeds, layout.sizes)
    log_every = max(1, min(500, sac.total_steps // sac.num_envs // 20))
    steps_per_log = log_every * len(layout.rows) * sac.num_envs
    bar = UpdateBar(-(-sac.total_steps // sac.num_envs // log_every),
                    f"SAC, {len(specs)} {network} learners", steps_per_log)
    with family.make_envs(TRAIN_STREAM + row_seeds, rows=layout.rows) as envs:
        result = train_sac_on_host(agent, sac, envs, layout, keys, log_every=log_every,
                                   progress=bar)
    bar.close()
    with family.make_envs(EVALUATE_STREAM + row_seeds, rows=layout.rows) as envs:
        success, returns = evaluate_sac_on_host(agent, result.state, envs, layout,
                                                episodes=config.eval_episodes,
                                                max_episode_steps=family.max_episode_steps)
    return {"groups": np.stack([np.isin(np.arange(family.num_tasks), g) for g, _ in specs]),
            "seeds": seeds, "success": success, "returns": returns,
            "training_success": result.metrics["success"],
            "env_seconds": result.metrics["env_seconds"].sum(),
            "wait_seconds": result.metrics["wait_seconds"].sum()}


def run(config, stage, clusters: dict, family) -> tuple[list[str], dict]:
    """Trains every grouping and baseline; returns (report lines, metrics)."""
    n = family.num_tasks
    by_k = groupings(stage, clusters, config, n)
    trained, times = {}, []  # (network, group, seed) → success f32[n]
    for network, specs in learners(config, by_k, n).items():
        out = stage(f"sac.{network}", lambda network=network, specs=specs: train_learners(
            config, family, network, specs), uses=SAC_USES,
            extra={"network": network, "learners": [[list(g), s] for g, s in specs]})
        for index, (group, seed) in enumerate(specs):
            trained[(network, group, seed)] = out["success"][index]
        times.append(f"{network}: {len(specs)} learners together, {float(out['env_seconds']):.0f} s "
                     f"stepping the envs, {float(out['wait_seconds']):.0f} s waiting for the "
                     "updates beyond that")
    success = {}  # (name, k) → f32[seeds, n]
    for seed in range(config.sac_seeds):
        for k, methods in by_k.items():
            for method, labels in methods.items():
                per_task = np.full(n, np.nan)
                for group in group_lists(labels):
                    got = trained[(config.sac_network, tuple(group), seed)]
                    per_task[group] = got[group]
                success.setdefault((method, k), []).append(per_task)
        for name, network in BASELINES.items():
            success.setdefault((name, None), []).append(trained[(network, tuple(range(n)), seed)])
    success = {key: np.stack(v) for key, v in success.items()}

    def cell(values):  # mean ± std over seeds of the mean success over tasks, in %
        per_seed = 100 * values.mean(1)
        return f"{per_seed.mean():.1f} ± {per_seed.std():.1f}"

    budget = (f"{config.sac_steps_per_task:,} SAC env steps per task "
              f"({config.sac_network} per group; {config.sac_seeds} seed(s))")
    lines = [
        "## Downstream: train the groups (Table 2, MT10 column)",
        "",
        f"Budget: {budget}. Success = greedy policy, "
        f"{config.eval_episodes * config.envs_per_task} episode(s) per task. Training: "
        + "; ".join(times) + ".",
        "" if config.sac_steps_per_task >= PAPER_SAC_STEPS else
        f"**Below the paper's budget** ({config.sac_steps_per_task:,} of its "
        f"{PAPER_SAC_STEPS:,} SAC steps per task): what the groupings score here is this "
        "budget's result, not a test of the paper's numbers.",
        "",
        "| method | mean success (%) | paper (%) |",
        "|---|---|---|",
        *[f"| {m} groups (k = {config.k}) | {cell(success[(m, config.k)])} | {PAPER_MT10[m]} |"
          for m in METHODS],
        *[f"| {name} | {cell(success[(name, None)])} | {PAPER_MT10[name]} |" for name in BASELINES],
        "",
    ]
    if len(by_k) > 1:
        lines += ["| k | ours | random | gradient similarity | paper, ours |", "|---|---|---|---|---|",
                  *[f"| {k} | " + " | ".join(cell(success[(m, k)]) for m in METHODS)
                    + f" | {PAPER_K.get(k, '—')} |" for k in sorted(by_k)], ""]
    lines += ["Per-task success (first seed): " + "; ".join(
        f"{name if k is None else f'{name} k={k}'}: "
        + ", ".join(f"{family.names[i]} {values[0, i]:.2f}" for i in range(n))
        for (name, k), values in success.items())]
    metrics = {"groups_by_k": {str(k): {m: v for m, v in methods.items()} for k, methods in by_k.items()},
               "success": {name if k is None else f"{name}.k{k}": v for (name, k), v in success.items()},
               "budget_per_task": config.sac_steps_per_task}
    return lines, metrics
