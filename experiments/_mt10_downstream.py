"""Table 2's MT10 column: train each task group separately with multitask SAC and score success.

For every grouping (ours, random, gradient similarity; at k and at each `--sweep-k`), one SAC
policy per group is trained on that group's tasks; the baselines train one policy on all tasks
(a plain MLP multitask policy, Soft Modularization, PaCo and CARE; `pgx_jax.rl.networks`). Every task gets the same env-step
budget (`sac_steps_per_task`) in every method, so the total budget is the same. Each trained
policy is scored greedily on its own tasks; a grouping's score is the mean success over all
tasks.

All learners of one network (every group of every grouping and k, the baseline of that network,
every seed) train together (`pgx_jax.rl.host_sac`): one vmapped update per vector step, one
host vector env, the envs stepping while the update runs. A group that several groupings (or
several k) share is one learner per seed. Each learner's result is its own stage
(`sac.<network>.<tasks>.seed<s>`), so a rerun that adds seeds or a k trains only the new
learners (together); an interrupted training loses its whole batch. A learner's result depends
only on its tasks and seed, up to float rounding (vmapped matmuls round differently): its envs
are seeded by (family seed, stream + seed, task, env) and its PRNG key by (seed, task set), not
by which other learners train beside it.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

import pgx_jax as pgx
from experiments._pipeline import METHODS, group_lists
from experiments._runner import UpdateBar
from pgx_jax.rl.host_sac import LearnerLayout, evaluate_sac_on_host, train_sac_on_host
from pgx_jax.rl import sac as pgx_jax_sac
from pgx_jax.rl.sac import SACConfig, make_sac_agent

# The paper's Table 2, MT10 column (mean success % over 5 runs), and its k ablation.
PAPER_MT10 = {"ours": "94.0", "random": "58.2", "gradient_similarity": "69.6",
              "softmod_all": "82.0", "multitask": "71.3", "paco_all": "73.1", "care_all": "84.0"}
PAPER_K = {2: "89.5", 3: "94.0", 4: "95.1"}
PAPER_SAC_STEPS = 2_000_000  # per task, as our "paper" preset
# name → SAC network, all tasks (PaCo and CARE at their default K = 5 and 4 encoders × 50)
BASELINES = {"multitask": "mlp", "softmod_all": "softmod", "paco_all": "paco", "care_all": "care"}
# What a SAC training depends on, besides its network, task group and seed (`extra`): it trains
# from scratch, so neither θ* nor the estimate is an input.
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


def plan(config, num_tasks: int) -> dict:
    """{network: (learners, rows)} that `--downstream` trains, as if no group were shared by
    two groupings (an upper bound): each grouping at each k has k groups covering all tasks."""
    ks = (set(config.sweep_k) | {config.k}) - {0}
    out = {config.sac_network: (config.sac_seeds * len(METHODS) * sum(ks),
                                config.sac_seeds * len(METHODS) * len(ks) * num_tasks)}
    for network in BASELINES.values():
        learners, rows = out.get(network, (0, 0))
        out[network] = (learners + config.sac_seeds, rows + config.sac_seeds * num_tasks)
    return out


def update_seconds(config, family) -> dict:
    """{network: seconds per SAC update of one learner}, measured here, for each network of
    `plan` (compiles each update once: seconds, cached with the compile cache)."""
    out = {}
    for network in plan(config, family.num_tasks):
        sac = sac_config(config, network)
        out[network] = pgx_jax_sac.update_seconds(
            make_sac_agent(sac, family.num_tasks, family.action_dim), sac, family.obs_dim)
    return out


TRAIN_STREAM, EVALUATE_STREAM = 2_000_000, 3_000_000  # + seed: each seed its own episodes


def learner_key(config, group: tuple, seed: int, num_tasks: int) -> jax.Array:
    """Learner (group, seed)'s PRNG key: from its seed and its task set alone. The task set's
    bitmask is folded in 32 bits at a time (one fold for up to 32 tasks)."""
    key = jax.random.fold_in(jax.random.key(config.seed + 1000), seed)
    mask = sum(1 << t for t in group)
    for chunk in range(-(-num_tasks // 32)):
        key = jax.random.fold_in(key, (mask >> (32 * chunk)) & 0xFFFFFFFF)
    return key


def stage_name(network: str, group: tuple, seed: int, num_tasks: int) -> str:
    """'sac.softmod.0-4-7.seed1' ('all' for every task): one stored result per learner."""
    tasks = "all" if len(group) == num_tasks else "-".join(map(str, group))
    return f"sac.{network}.{tasks}.seed{seed}"


def train_learners(config, family, network: str, specs: list) -> list[dict]:
    """SAC for every (group, seed) of `specs` with `network`, together → one dict per learner:
    greedy success and return per task f32[n] (NaN for tasks outside its group), its training
    success per log interval f32[I, n], and the batch's env and wait seconds."""
    sac = sac_config(config, network)
    n = family.num_tasks
    agent = make_sac_agent(sac, n, family.action_dim)
    layout = LearnerLayout.of([group for group, _ in specs])
    seeds = np.asarray([seed for _, seed in specs])
    keys = jnp.stack([learner_key(config, group, seed, n) for group, seed in specs])
    row_seeds = np.repeat(seeds, layout.sizes)
    vector_steps = sac.total_steps // sac.num_envs
    log_every = max(1, min(500, vector_steps // 20))
    steps_per_log = log_every * len(layout.rows) * sac.num_envs
    bar = UpdateBar(-(-vector_steps // log_every), f"SAC, {len(specs)} {network} learners",
                    steps_per_log)
    with family.make_envs(TRAIN_STREAM + row_seeds, rows=layout.rows) as envs:
        result = train_sac_on_host(agent, sac, envs, layout, keys, log_every=log_every,
                                   progress=bar)
    bar.close()
    with family.make_envs(EVALUATE_STREAM + row_seeds, rows=layout.rows) as envs:
        success, returns = evaluate_sac_on_host(agent, result.state, envs, layout,
                                                episodes=config.eval_episodes)
    together = {"env_seconds": result.metrics["env_seconds"].sum(),
                "wait_seconds": result.metrics["wait_seconds"].sum(),
                "learners_together": len(specs)}
    return [{"success": success[index], "returns": returns[index],
             "training_success": result.metrics["success"][:, index], **together}
            for index in range(len(specs))]


def mean_over_tasks(curve) -> np.ndarray:
    """f32[I, n] training success → f32[I]: the mean over the tasks with an episode ended in the
    interval (NaN where none ended)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an interval where no episode ended
        return np.nanmean(curve, axis=1)


def run(config, stage, clusters: dict, executor, family) -> tuple[list[str], dict]:
    """Trains every grouping and baseline through `executor` (`pgx_jax.executor`: in-process,
    every learner of a network together; on Ray, --ray-chunk learners per task, each task
    stepping its own envs); returns (report lines, metrics)."""
    n = family.num_tasks
    by_k = groupings(stage, clusters, config, n)
    trained, curves, times = {}, {}, []  # (network, group, seed) → success f32[n], f32[I, n]
    for network, specs in learners(config, by_k, n).items():
        names = [stage_name(network, group, seed, n) for group, seed in specs]
        by_name = dict(zip(names, specs))

        def train(part, network=network, by_name=by_name):  # a closure: pickled by value
            return dict(zip(part, train_learners(config, family, network,
                                                 [by_name[name] for name in part])))

        before = len(stage.resumed)
        out = stage.batch(names, train, uses=SAC_USES, extras=[
            {"network": network, "group": list(group), "sac_seed": seed}
            for group, seed in specs], executor=executor)
        for name, spec in by_name.items():
            trained[(network, *spec)] = out[name]["success"]
            curves[(network, *spec)] = out[name]["training_success"]
        fresh = [name for name in names if name not in stage.resumed[before:]]
        times.append(
            f"{network}: {len(specs)} learners, all stored earlier" if not fresh else
            f"{network}: {len(fresh)} of {len(specs)} learners trained, "
            f"{int(out[fresh[0]]['learners_together'])} together (the first batch: "
            f"{float(out[fresh[0]]['env_seconds']):.0f} s stepping the envs, "
            f"{float(out[fresh[0]]['wait_seconds']):.0f} s waiting for the updates beyond that)")
    success, training = {}, {}  # (name, k) → f32[seeds, n] and f32[seeds, I] (mean over tasks)
    intervals = len(next(iter(curves.values())))  # log rows, the same for every learner
    for seed in range(config.sac_seeds):
        for k, methods in by_k.items():
            for method, labels in methods.items():
                per_task = np.full(n, np.nan)
                curve = np.full((intervals, n), np.nan)
                for group in group_lists(labels):
                    got = trained[(config.sac_network, tuple(group), seed)]
                    per_task[group] = got[group]
                    curve[:, group] = curves[(config.sac_network, tuple(group), seed)][:, group]
                success.setdefault((method, k), []).append(per_task)
                training.setdefault((method, k), []).append(mean_over_tasks(curve))
        for name, network in BASELINES.items():
            success.setdefault((name, None), []).append(trained[(network, tuple(range(n)), seed)])
            training.setdefault((name, None), []).append(
                mean_over_tasks(curves[(network, tuple(range(n)), seed)]))
    success = {key: np.stack(v) for key, v in success.items()}
    training = {key: np.stack(v) for key, v in training.items()}

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
               # training success per log interval (1/20 of the budget or 500 vector steps)
               "training_success": {name if k is None else f"{name}.k{k}": v
                                    for (name, k), v in training.items()},
               "budget_per_task": config.sac_steps_per_task}
    return lines, metrics
