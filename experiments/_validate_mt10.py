"""The MetaWorld column of Table 3: `python -m experiments.validate --env mt10 [--preset ...]`.

The estimation pipeline of `experiments.mt10` (θ* by multitask PPO on the host-stepped MuJoCo
envs, its evaluation, features, m subset estimates, groups), then the ground truth it
approximates: PPO fine-tuning of θ* on every one of the m subsets, K seeds each, every run on its
own envs (the subset's tasks, E envs each) and evaluated greedily on the episodes θ* was
evaluated on (common random numbers: env e of a task replays the same goals and initial states
in any layout). The report is the JAX families' (`experiments.validate`): NMI of the estimated,
gradient-similarity and random groups against the true ones beside their chance levels, the
truth's agreement with itself, Spearman and relative affinity error, FLOPs and wall-clock per
truth seed against estimation.

Decisions (the paper does not say how its MT10 truth was fine-tuned):
  * The fine-tuning is the meta-training's PPO (same rollouts, epochs, minibatches), with its own
    step budget and lr, from θ*'s optimizer-free parameters.
  * The observation normalizer stays θ*'s (`pgx_jax.rl.host.fine_tune_on_host`): the fine-tuned
    policy is θ* + Δθ on the same inputs, the function the estimate linearizes. The reward
    scaler goes on from θ*'s statistics.
  * Truth = return gain (greedy return after − θ*'s, on the same episodes), as for the JAX
    families; the success rate is reported per task beside it (it is 0/1 per episode, too coarse
    to rank subsets with a few episodes).
  * Table 1, the ablations and Figure 2 of the JAX validation are not run here (their fine-tuning
    and Hessian passes are JAX-family code).

Each fine-tuning run is one stored stage (`stages/ground_truth.s<j>.seed<k>.npz`), written as it
finishes; a rerun trains only the missing ones. In-process the runs go one at a time (host
envs do not vmap); `--executor ray` spreads them over a Ray cluster (`--ray-chunk` runs per task).

Presets (every run prints its expected time before it starts):
  quick: θ* at 100k PPO steps per task, 20 subsets × 2 seeds fine-tuned for 5k steps per task —
    a smoke run of the whole validation (~30 min on 2 cores).
  medium: θ* at 400k steps per task, 30 subsets × 2 seeds fine-tuned for 20k steps per task —
    the issue's "within 2 hours on 2 cores" (README: measured time).
  paper: θ* at 2M steps per task, 100 subsets × 4 seeds fine-tuned for 100k steps per task —
    a cluster's budget (the expected time is printed for one process; divide by Ray's workers).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

import pgx_jax as pgx
from experiments import mt10, validate
from experiments._pipeline import (
    require,
    require_ppo_budget,
    start_run,
)
from experiments._runner import (
    atomic_write_bytes,
    tree_from_arrays,
    tree_to_arrays,
)
from pgx_jax.executor import InProcess
from pgx_jax.rl.ground_truth import fine_tune_keys, subset_members
from pgx_jax.rl.host import (
    RewardScaler,
    RunningMoments,
    _act,
    _learn_step,
    _value,
    evaluate_on_host,
    fine_tune_on_host,
    init_host_train,
)
from pgx_jax.rl.ppo import Trajectory, make_agent
from pgx_jax.types import Transitions

# Fine-tuning run i trains on env stream TRUTH_STREAM + i (its own episodes); every run is
# evaluated on θ*'s evaluation stream.
TRUTH_STREAM = 4_000_000


@dataclasses.dataclass(frozen=True)
class Config(mt10.Config, validate.TruthConfig):
    env: str = "mt10"  # `python -m experiments.validate --env mt10` lands here
    preset: str = "quick"
    subsets: int = 20
    finetune_steps: int = 5_000  # PPO steps per task of every fine-tuning run
    truth_seeds: int = 2
    bootstrap: int = 20
    out: str = "results/validate"

    PRESET_DEFAULTS = {
        "quick": {},
        "medium": {"steps_per_task": 400_000, "eval_episodes": 3, "subsets": 30,
                   "finetune_steps": 20_000},
        "paper": {"steps_per_task": 2_000_000, "eval_episodes": 5, "subsets": 100,
                  "finetune_steps": 100_000, "truth_seeds": 4, "bootstrap": 50},
    }
    STAGE_NAMES = mt10.Config.STAGE_NAMES[:-1] + (
        "ground_truth", "truth_cluster", "agreement", "choices", "treatments", "cost")

    def check(self) -> None:
        require(self.env == "mt10", f"--env must be mt10 here, got {self.env!r}")
        require(not self.downstream, "experiments.validate does not train the downstream table: "
                "run experiments.mt10 --downstream")
        super().check()
        self.check_truth()
        require_ppo_budget(self, "finetune_steps", "envs_per_task", self.finetune,
                           "num_minibatches")

    def finetune(self):
        return dataclasses.replace(self.ppo(), steps_per_task=self.finetune_steps,
                                   lr=self.finetune_lr)


STAGES = {
    **mt10.STAGES,
    "ground_truth.run": {"uses": ("finetune_steps", "finetune_lr", "truth_seeds",
                                  "eval_episodes"),
                         "inputs": ("train", "subsets")},
    "ground_truth": {"uses": ("collect_steps", "holdout")},  # inputs: evaluate and the runs
    "cost": {"uses": ("eval_episodes",), "inputs": ("cluster", "ground_truth")},
}


class HostTruthRuns(validate.TruthRunIndex):
    """The truth's m·K fine-tuning runs as an executor's batch: `runs(names)` fine-tunes and
    evaluates the named runs one after the other → {name: arrays}. Picklable (settings and
    arrays; the envs are opened inside), so a Ray worker can run it."""

    def __init__(self, config: Config, star: dict, members, train_keys):
        super().__init__(members, config.truth_seeds, train_keys)
        self.config, self.star = config, star  # star: θ*'s arrays (params, normalizers)

    def __call__(self, names: list[str]) -> dict:
        config, family = self.config, self.config.family()
        finetune = config.finetune()
        agent = make_agent(family, finetune)
        params, obs_moments, reward_scaler = restore_star(self.star, agent, config, family)
        flat_star = ravel_pytree(params["actor"])[0]
        out = {}
        for name in names:
            run = self.row[name]
            ids = self.run_members[run]
            with family.make_envs(TRUTH_STREAM + run, rows=ids) as envs:
                result = fine_tune_on_host(agent, finetune, envs, params, obs_moments,
                                           reward_scaler, jax.random.wrap_key_data(
                                               self.key_data[run]), task_ids=ids)
            with family.make_envs(mt10.EVALUATE_STREAM, rows=ids) as envs:
                success, returns = evaluate_on_host(
                    agent, result.params, obs_moments, envs, jax.random.key(0),
                    episodes=config.eval_episodes, max_episode_steps=family.max_episode_steps,
                    task_ids=ids)
            moved = ravel_pytree(result.params["actor"])[0]
            out[name] = {"returns": returns, "success": success,
                         "relative_distance": np.asarray(
                             np.linalg.norm(moved - flat_star) / np.linalg.norm(flat_star)),
                         **tree_to_arrays(result.params["actor"], "actor")}
        return out


def star_arrays(out: dict) -> dict:
    """θ*'s params and normalizers as flat arrays (what the runs ship to workers)."""
    return {**tree_to_arrays(out["params"], "param"),
            **tree_to_arrays(out["obs_moments"], "obs_moments"),
            **tree_to_arrays(out["reward_scaler"], "reward_scaler")}


def restore_star(arrays: dict, agent, config: Config, family):
    """(params, obs_moments, reward_scaler) of θ* from `star_arrays`."""
    template = init_host_train(agent, config.ppo(), family.num_tasks, family.obs_dim,
                               jax.random.key(0))
    return (tree_from_arrays(arrays, "param", template.params),
            tree_from_arrays(arrays, "obs_moments", template.obs_moments),
            tree_from_arrays(arrays, "reward_scaler", template.reward_scaler))


def truth_minutes(config: Config, family, agent, runs: int) -> float:
    """Minutes of `runs` fine-tuning runs in one process, from a probe on this machine: 3 PPO
    updates of a fine-tuning run from a fresh network on the first `subset_size` tasks (the last
    two timed: envs, policy and update), plus opening the envs and the greedy evaluation at the
    probe's seconds per vector step. (A subset's few envs run at another speed per env than the
    10 tasks' vector, and its policy calls cost as much per vector step: the 10-task env speed
    does not predict it.)"""

    finetune = config.finetune()
    probe = dataclasses.replace(finetune, steps_per_task=3 * finetune.num_steps
                                * config.envs_per_task)
    state = init_host_train(agent, probe, family.num_tasks, family.obs_dim, jax.random.key(0))
    ids = np.arange(config.subset_size)
    start = time.perf_counter()
    with family.make_envs(TRUTH_STREAM - 1, rows=ids) as envs:
        opened = time.perf_counter() - start
        result = fine_tune_on_host(agent, probe, envs, state.params, state.obs_moments,
                                   state.reward_scaler, jax.random.key(1), task_ids=ids)
    timed = {name: np.asarray(result.metrics[name])[1:] for name in (
        "env_seconds", "policy_seconds", "learn_seconds")}
    per_update = float(np.mean(sum(timed.values())))
    per_step = float(np.mean(timed["env_seconds"] + timed["policy_seconds"])) / probe.num_steps
    seconds = (finetune.num_updates * per_update + 2 * opened
               + config.eval_episodes * family.max_episode_steps * per_step)
    return runs * seconds / 60


def cost_flops(config: Config, agent, out: dict, family, features, subsets,
               solver_iterations: int) -> dict:
    """FLOPs of estimation (the policy's passes collecting at θ*, features, batched solve) and of
    the ground truth (per run: rollout passes, PPO updates, evaluation passes; × m·K runs), from
    `jaxpr_flops` of the jitted functions the runs call. MuJoCo's own work is not JAX and is
    counted on neither side; the wall-clock ratio includes it."""
    from pgx_jax.diagnostics.flops import jaxpr_flops

    params, moments = out["params"], out["obs_moments"]
    E, d, alpha = config.envs_per_task, family.obs_dim, config.subset_size
    finetune = config.finetune()

    def step_flops(rows: int) -> float:  # one vector step: the action pass and the next value
        obs = np.zeros((rows, E, d), np.float32)
        grid = np.zeros((rows, E), np.int32)
        return (jaxpr_flops(lambda o: _act(agent, params, moments, o, grid, jax.random.key(0)),
                            obs)
                + jaxpr_flops(lambda o: _value(agent, params, moments, o, grid), obs))

    state = init_host_train(agent, finetune, alpha, d, jax.random.key(0), init_params=params)
    state = state.replace(reward_scaler=RewardScaler(np.zeros((alpha, E), np.float32),
                                                     RunningMoments.create()))
    grid = (finetune.num_steps, alpha, E)
    policy_obs = d + family.num_tasks  # the task one-hot appended
    trajectory = Trajectory(obs=np.zeros(grid + (policy_obs,), np.float32),
                            action=np.zeros(grid + (family.action_dim,), np.float32),
                            **{name: np.zeros(grid, np.float32) for name in (
                                "log_prob", "value", "reward", "terminated", "done",
                                "next_value")})
    learn = jaxpr_flops(lambda s, t, o: _learn_step(agent, finetune, s, t, o,
                                                    jax.random.key(0), True)[1],
                        state, trajectory, np.zeros(grid + (d,), np.float32))
    run = (finetune.num_updates * (finetune.num_steps * step_flops(alpha) + learn)
           + config.eval_episodes * family.max_episode_steps * step_flops(alpha))
    feats = jax.tree_util.tree_map(jax.numpy.asarray, features)
    samples = family.num_tasks * config.collect_steps
    batch = Transitions(
        obs=np.zeros((samples, policy_obs), np.float32),
        action=np.zeros((samples, family.action_dim), np.float32),
        advantage=np.zeros(samples, np.float32), task=np.zeros(samples, np.int32))
    estimation = {
        "collect": config.collect_steps // E * step_flops(family.num_tasks),
        "features": jaxpr_flops(lambda: pgx.gradient_features(
            agent.actor.log_prob, params["actor"], batch, jax.random.key(0), dim=config.dim)),
        "solve": jaxpr_flops(lambda: pgx.solve_subsets(feats, jax.numpy.asarray(subsets)).theta,
                             while_trips=solver_iterations),
    }
    return {"estimation": sum(estimation.values()), "full": run * len(subsets) * config.truth_seeds,
            **{f"estimation_{k}": v for k, v in estimation.items()}}


def run(config: Config, run_dir) -> dict:
    """Validates the estimate against fine-tuning on MT10; returns the metrics.json dict (the
    JAX families' keys, plus θ*'s and the runs' success rates)."""
    config.check()
    executor = config.make_executor()  # before any work
    if isinstance(executor, InProcess):
        executor = InProcess(chunk=1)  # host runs go one by one: each stored as it finishes
    run_dir = Path(run_dir)
    family = config.family()
    agent = make_agent(family, config.ppo())
    speed = mt10.describe(config, family, f"pgx_jax validation (mt10, {config.preset} preset) "
                                          f"-> {run_dir}")
    num_runs = config.subsets * config.truth_seeds
    stored = sum((run_dir / "stages" / f"{name}.npz").exists()
                 for name in HostTruthRuns.run_names(config.subsets, config.truth_seeds))
    expected = {**mt10.expected_minutes(config, speed, family.max_episode_steps, {}),
                # the probe (~13 s) only when runs are left to train
                "ground truth": (truth_minutes(config, family, agent, num_runs - stored)
                                 if stored < num_runs else 0.0)}
    mt10.print_expected(expected, speed, config, f"; ground truth: {num_runs - stored} of "
                        f"{num_runs} fine-tuning runs left "
                        + ("in this process" if executor.name == "inprocess"
                           else "in one process (divide by the Ray workers)"))
    stage = start_run(run_dir, config)
    out = mt10.pipeline(config, stage, run_dir, family, agent)
    clusters, evaluated = out["clusters"], out["evaluated"]
    subsets, seeds = clusters["subsets"], config.truth_seeds
    members = subset_members(subsets)
    train_keys, _ = fine_tune_keys(jax.random.key(config.seed + 1), len(members), seeds)
    truth_runs = HostTruthRuns(config, star_arrays(out), members, train_keys)
    finetune = config.finetune()
    bar = validate.stored_runs_bar(executor.name, config.subset_size * config.envs_per_task
                                   * finetune.num_steps * finetune.num_updates)
    runs = stage.batch(truth_runs.names, truth_runs, progress=bar, executor=executor,
                       **STAGES["ground_truth.run"])
    star = out["params"]

    def assemble_truth():
        truth = validate.assemble_stored(
            runs, truth_runs.names, members, np.asarray(evaluated["returns"])[members], seeds,
            star, lambda params: validate.surrogate_loss_gain(
                agent, out["collect"](), config.holdout, family.num_tasks, star, params, members))
        success = np.stack([runs[name]["success"] for name in truth_runs.names])
        return {**truth, "success": success.reshape(len(members), seeds, -1),
                "start_success": np.asarray(evaluated["success"])[members]}

    truth = stage("ground_truth", assemble_truth, inputs=("evaluate", *truth_runs.names),
                  **STAGES["ground_truth"])
    stage.timings["ground_truth"] += sum(stage.timings.pop(name) for name in truth_runs.names)
    judged = validate.judge(config, stage, clusters, truth, out["features"], family.num_tasks)
    flops = stage("cost", lambda: cost_flops(config, agent, out, family, out["features"], subsets,
                                             int(np.max(clusters["iterations"]))),
                  **STAGES["cost"])
    names = list(family.names)
    metrics = {
        **validate.truth_metrics(config, names, clusters, truth, judged, None),
        "theta_star_success": evaluated["success"],
        "theta_star_returns": evaluated["returns"],
        "truth_success": truth["success"],
    }
    validate.write_metrics_and_plots(run_dir, stage, metrics, flops, clusters, truth,
                                     judged["truth_groups"], names)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    write_report(run_dir / "report.md", config, truth, judged["results"], flops, stage.timings,
                 metrics, clusters, expected)
    print("\n" + (run_dir / "report.md").read_text())
    return metrics


def per_task_lines(names, truth: dict, members, metrics: dict) -> list[str]:
    """θ* per task, and what fine-tuning did to each task across the subsets that hold it."""
    gain = np.asarray(truth["returns"]) - np.asarray(truth["start_returns"])[:, None, :]
    success = np.asarray(truth["success"]) - np.asarray(truth["start_success"])[:, None, :]
    lines = ["## Per task (θ*, and the change fine-tuning made where the task was trained)", "",
             "| task | θ* success | θ* return | runs | return gain: mean ± sd | success change |",
             "|---|---|---|---|---|---|"]
    for t, name in enumerate(names):
        where = np.asarray(members) == t  # [m, α]
        g = gain.transpose(0, 2, 1)[where].ravel()  # every run that trained t
        c = success.transpose(0, 2, 1)[where].ravel()
        lines.append(f"| {name} | {metrics['theta_star_success'][t]:.2f} | "
                     f"{metrics['theta_star_returns'][t]:.1f} | {g.size} | "
                     f"{g.mean():+.1f} ± {g.std():.1f} | {c.mean():+.2f} |")
    return lines + [""]


def write_report(path: Path, config: Config, truth: dict, results: dict, flops: dict,
                 timings: dict, metrics: dict, clusters: dict, expected: dict) -> None:
    K, names = config.truth_seeds, metrics["family"]
    members = subset_members(clusters["subsets"])
    spent = sum(timings.values()) / 60
    lines = [
        "# Validation on MT10 (Meta-World): estimate vs full training",
        "",
        f"Run `{config.run}` (`--preset {config.preset}`), seed {config.seed}; {len(names)} tasks, "
        f"m = {config.subsets} subsets of size {config.subset_size}, d = {config.dim}, l2 = "
        f"{config.l2}, k = {config.k}, {config.collect_steps:,} transitions per task at θ*; f̂ = "
        f"surrogate loss reduction scored on the {config.score_on} samples.",
        f"θ*: multitask PPO, {config.steps_per_task:,} steps per task; greedy success "
        f"{np.mean(metrics['theta_star_success']):.2f}, return "
        f"{np.mean(metrics['theta_star_returns']):.1f}. Ground truth: PPO fine-tuning from θ* "
        f"on each subset, {K} seeds, {config.finetune_steps:,} steps per task, lr "
        f"{config.finetune_lr}, θ*'s observation normalizer; greedy evaluation on θ*'s "
        f"evaluation episodes ({config.eval_episodes * config.envs_per_task} per task); "
        f"‖θ_S − θ*‖/‖θ*‖ median {np.median(truth['relative_distance']):.2%} "
        f"(max {np.max(truth['relative_distance']):.2%}).",
        "",
        *validate.estimate_lines(
            config, results, flops, timings, metrics["truth_degenerate"],
            "MuJoCo's own work is not JAX and is counted on neither side (the wall-clock ratio "
            "includes it); estimation FLOPs include the policy's passes collecting at θ*."),
        *validate.trust_lines(config, metrics),
        *validate.all_truths_lines(results),
        *per_task_lines(names, truth, members, metrics),
        *validate.groups_lines(truth, clusters, names),
        "Not run on MT10: Table 1, the ablations and Figure 2 (their fine-tuning and Hessian "
        "passes are JAX-family code; `experiments.validate --env lunarlander` has them).",
        "",
        "## Time",
        "",
        "Expected before this invocation (one process; the pipeline from scratch, the ground truth "
        "for its runs not stored yet): "
        + ", ".join(f"{stage} {minutes:.0f} min" for stage, minutes in expected.items())
        + f"; the stages took {spent:.0f} min (a resumed stage counts the time it took when it ran).",
        "",
        "| stage | seconds |", "|---|---|",
        *[f"| {name} | {seconds:.1f} |" for name, seconds in timings.items()],
        "",
        *validate.missed_line(config, results, flops),
    ]
    atomic_write_bytes(path, "\n".join(lines).encode())
