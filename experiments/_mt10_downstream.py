"""Table 2's MT10 column: train each task group separately with multitask SAC and score success.

For every grouping (ours, random, gradient similarity; at k and at each `--sweep-k`), one SAC
policy per group is trained on that group's tasks; the baselines train one policy on all tasks
(a plain MLP multitask policy, and Soft Modularization). Every task gets the same env-step
budget (`sac_steps_per_task`) in every method, so the total budget is the same. Each trained
policy is scored greedily on its own tasks; a grouping's score is the mean success over all
tasks. One stage per (group, seed) and per (baseline, seed): resumable, and a group that several
groupings share is trained once.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

import pgx_jax as pgx
from experiments._pipeline import METHODS, group_lists
from experiments._runner import UpdateBar
from pgx_jax.rl.host import evaluate_sac_on_host, train_sac_on_host
from pgx_jax.rl.sac import SACConfig, make_sac_agent

# The paper's Table 2, MT10 column (mean success % over 5 runs), and its k ablation.
PAPER_MT10 = {"ours": "94.0", "random": "58.2", "gradient_similarity": "69.6",
              "softmod_all": "82.0", "multitask": "71.3"}
PAPER_K = {2: "89.5", 3: "94.0", 4: "95.1"}
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


def train_group(config, family, task_ids, network: str, seed: int, label: str) -> dict:
    """SAC on the tasks `task_ids` of `family` → success and return per task (greedy)."""
    sac = sac_config(config, network)
    agent = make_sac_agent(sac, family.num_tasks, family.action_dim)
    group = dataclasses.replace(family.subset(task_ids), envs_per_task=config.envs_per_task)
    steps_per_log = 500
    bar = UpdateBar(-(-sac.total_steps // sac.num_envs // steps_per_log), f"SAC {label}",
                    steps_per_log * len(task_ids) * sac.num_envs)
    key = jax.random.fold_in(jax.random.key(config.seed + 1000), seed)
    with group.make_envs(stream=2_000_000 + seed) as envs:
        result = train_sac_on_host(agent, sac, envs, key, task_ids=task_ids,
                                   log_every=steps_per_log, progress=bar)
    bar.close()
    with group.make_envs(stream=3_000_000 + seed) as envs:
        success, returns = evaluate_sac_on_host(agent, result.state, envs,
                                                episodes=config.eval_episodes,
                                                max_episode_steps=family.max_episode_steps,
                                                task_ids=task_ids)
    return {"task_ids": np.asarray(task_ids), "success": success, "returns": returns,
            "training_success": result.metrics["success"],
            "env_seconds": result.metrics["env_seconds"].sum(),
            "compute_seconds": result.metrics["compute_seconds"].sum()}


def run(config, stage, clusters: dict, family) -> tuple[list[str], dict]:
    """Trains every grouping and baseline; returns (report lines, metrics)."""
    n = family.num_tasks
    by_k = groupings(stage, clusters, config, n)
    success = {}  # (name, k) → f32[seeds, n]
    for seed in range(config.sac_seeds):
        for k, methods in by_k.items():
            for method, labels in methods.items():
                per_task = np.full(n, np.nan)
                for group in group_lists(labels):
                    # Stages are named by the group's tasks: a group that several groupings (or
                    # several k) share is trained once per seed.
                    name = "sac.tasks_" + "_".join(map(str, group)) + f".seed{seed}"
                    out = stage(name, lambda group=group: train_group(
                        config, family, group, config.sac_network, seed,
                        f"{[family.names[i] for i in group]} seed {seed}"),
                        uses=SAC_USES, extra={"network": config.sac_network})
                    per_task[out["task_ids"]] = out["success"]
                success.setdefault((method, k), []).append(per_task)
        for name, network in BASELINES.items():
            out = stage(f"sac.{name}.seed{seed}", lambda network=network, name=name: train_group(
                config, family, list(range(n)), network, seed, f"{name} (all tasks) seed {seed}"),
                uses=SAC_USES, extra={"network": network})
            success.setdefault((name, None), []).append(out["success"])
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
        f"{config.eval_episodes * config.envs_per_task} episode(s) per task.",
        "" if config.preset != "quick" else
        "**Smoke run**: this budget is far below the paper's; the numbers test the pipeline, "
        "not the claim.",
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
