"""PolicyGradEx on Meta-World MT10: `python -m experiments.mt10 [--preset quick|medium|paper]`.

The real Meta-World (metaworld 3.1.1, MuJoCo 3.3.0), stepped on the host
(`pgx_jax.envs.metaworld`): multitask PPO meta-trains θ* on all 10 tasks (the paper's 4-layer
MLP, 39 → 400 → 400 → 400, Gaussian head, task one-hot input) → success and return of θ* per
task → 2048 transitions per task at θ* → projected gradient features → m random subsets →
batched surrogate estimates → affinity matrix → k groups (SDP), next to the random and
gradient-similarity groupings.

PPO settings a Meta-World user expects: observation normalization (running mean/std, clip ±10),
reward scaling by the running std of the discounted return, γ 0.99, GAE λ 0.97, lr 3e-4 (linear
decay), clip 0.2, 4 epochs of 10 minibatches, entropy 0, gradient-norm clip 0.5; rollouts of
250 steps in 2 envs per task (5000 steps per update).

Presets (every run prints its expected time, from the env speed it measures, before it starts):
  quick (default): 100k PPO steps per task (1M in all). A smoke run of the pipeline that
    fits in ~10 minutes on a 2-core CPU; θ* is far from trained, and the report says so.
  medium: θ* at 400k PPO steps per task, 3 greedy episodes per env, and the downstream table
    (30k SAC steps per task, 2 seeds) — the whole comparison within ~2 hours on 2 cores.
  paper: 2M PPO steps per task; downstream at 2M SAC steps per task, 5 seeds (days here).
Any flag overrides its preset value.

Writes results/mt10/<run>/: report.md, metrics.json, affinity.png (task names), learning.png,
theta_star.msgpack (params and normalizer), stages/*.npz. Rerunning with the same --run resumes:
finished stages load from disk and meta-training resumes from its last checkpoint
(checkpoints/train.msgpack, every --checkpoint-every updates; episodes restart fresh). Each
stage steps its own freshly seeded envs, so a resumed run evaluates and collects on the same
episodes as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from pathlib import Path

import jax
import numpy as np
from flax import serialization

import pgx_jax as pgx
from experiments import _mt10_downstream
from experiments._pipeline import (
    ESTIMATION_STAGES,
    METHODS,
    EstimationConfig,
    ExecutorConfig,
    as_setting_error,
    estimate_and_group,
    finish_run,
    group_lists,
    parse_config,
    plot_curves,
    plot_affinity,
    require,
    require_ints,
    require_numbers,
    require_ppo_budget,
    require_widths,
    start_run,
)
from experiments._runner import (
    SettingError,
    StaleStageError,
    UpdateBar,
    atomic_write_bytes,
    atomic_write_json,
    describe_changes,
    run_cli,
    tree_from_arrays,
    tree_to_arrays,
)
from pgx_jax.envs.metaworld import MT10_TASKS, MetaWorldFamily
from pgx_jax.rl.host import (
    HostTrainState,
    collect_transitions_on_host,
    evaluate_on_host,
    init_host_train,
    train_on_host,
)
from pgx_jax.rl.ppo import PPOConfig, make_agent

@dataclasses.dataclass(frozen=True)
class Config(EstimationConfig, ExecutorConfig):  # ExecutorConfig: the downstream learners
    # "quick" (the defaults below), "medium" or "paper" (PRESET_DEFAULTS); on the command line a
    # preset replaces the defaults and flags still win; in Python pass the settings themselves
    preset: str = "quick"
    tasks: tuple = MT10_TASKS
    # meta-training (PPO, per task)
    steps_per_task: int = 100_000
    envs_per_task: int = 2
    num_steps: int = 250
    update_epochs: int = 4
    num_minibatches: int = 10
    lr: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.97
    ent_coef: float = 0.0
    hidden: tuple = (400, 400, 400)
    vector_strategy: str = "sync"
    checkpoint_every: int = 10
    # evaluation and estimation
    eval_episodes: int = 1  # greedy episodes per env (E per task) for θ*'s success
    collect_steps: int = 2048  # per task, the paper's
    # downstream (issue 7): train the groups with multitask SAC. SAC env steps per task, random
    # steps before updates start (per task), seeds
    downstream: bool = False
    sac_steps_per_task: int = 3_000
    sac_learning_starts: int = 1_000
    sac_seeds: int = 1
    sac_network: str = "softmod"  # per group: one of pgx_jax.rl.sac.NETWORKS (paco, care too)
    sac_hidden: tuple = (256, 256)
    softmod_layers: int = 2
    softmod_modules: int = 2
    softmod_width: int = 128
    sac_batch_size: int = 256
    sac_buffer_size: int = 1_000_000
    sweep_k: tuple = (0,)  # e.g. --sweep-k 1 2 3 4 (the paper's k ablation); 0 = none
    out: str = "results/mt10"

    def ppo(self) -> PPOConfig:
        return PPOConfig(steps_per_task=self.steps_per_task, num_envs=self.envs_per_task,
                         num_steps=self.num_steps, update_epochs=self.update_epochs,
                         num_minibatches=self.num_minibatches, lr=self.lr, gamma=self.gamma,
                         gae_lambda=self.gae_lambda, ent_coef=self.ent_coef, hidden=self.hidden,
                         task_onehot=True)

    def family(self) -> MetaWorldFamily:
        return MetaWorldFamily(names=self.tasks, envs_per_task=self.envs_per_task, seed=self.seed,
                               vector_strategy=self.vector_strategy)

    # medium: the whole comparison within ~2 hours on 2 cores (README: budget and results).
    PRESET_DEFAULTS = {
        "quick": {},
        "medium": {"steps_per_task": 400_000, "eval_episodes": 3, "downstream": True,
                   "sac_steps_per_task": 30_000, "sac_learning_starts": 2_000, "sac_seeds": 2},
        "paper": {"steps_per_task": 2_000_000, "eval_episodes": 5, "downstream": True,
                  "sac_steps_per_task": 2_000_000, "sac_learning_starts": 10_000, "sac_seeds": 5},
    }

    # Flags that steer the run without changing a stage's result (sync and async step the same
    # episodes; checkpoints only save progress); and the stages --restart-from accepts.
    RUN_CONTROL = (EstimationConfig.RUN_CONTROL + ExecutorConfig.RUN_CONTROL
                   + ("vector_strategy", "checkpoint_every"))
    STAGE_NAMES = ("train", "evaluate", "features", "subsets", "estimate", "cluster", "groups",
                   "sac")

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def check(self) -> None:
        require(self.preset in self.PRESET_DEFAULTS, f"--preset must be one of "
                f"{', '.join(self.PRESET_DEFAULTS)}, got {self.preset!r}")
        require(len(set(self.tasks)) == len(self.tasks), f"--tasks repeat a task: {list(self.tasks)}")
        require_ints(self, 1, "envs_per_task")
        with as_setting_error("vector_strategy"):
            family = self.family()
        try:
            family.check_available()
        except ImportError as error:
            raise SettingError(str(error)) from None
        except ValueError as error:
            raise SettingError(f"--tasks: {error}") from None
        super().check()
        self.check_executor()
        require_ints(self, 1, "num_steps", "update_epochs", "num_minibatches",
                     "eval_episodes", "collect_steps", "checkpoint_every")
        require(self.collect_steps % self.envs_per_task == 0,
                f"--collect-steps ({self.collect_steps}) must be a multiple of --envs-per-task "
                f"({self.envs_per_task})")
        require_widths(self, "hidden")
        require_numbers(self, 0, 1, "gamma", "gae_lambda")
        require_numbers(self, 0, 1, "lr", open_low=True)
        require_numbers(self, 0, math.inf, "ent_coef")
        require_ppo_budget(self, "steps_per_task", "envs_per_task", self.ppo, "num_minibatches")
        if self.downstream:  # bad SAC settings fail now, not after meta-training
            require_ints(self, 1, "sac_steps_per_task", "sac_seeds", "sac_batch_size")
            require_ints(self, 0, "sac_learning_starts")
            require_widths(self, "sac_hidden")
            vector_steps = self.sac_steps_per_task // self.envs_per_task
            require(vector_steps > max(self.sac_learning_starts // self.envs_per_task, 1),
                    f"--sac-steps-per-task ({self.sac_steps_per_task}) must leave updates after "
                    f"the replay warm-up --sac-learning-starts ({self.sac_learning_starts}) with "
                    f"--envs-per-task {self.envs_per_task}")
            require(self.sac_buffer_size >= self.envs_per_task * self.num_tasks,
                    f"--sac-buffer-size ({self.sac_buffer_size}) must hold one vector step "
                    f"({self.envs_per_task} envs × {self.num_tasks} tasks)")
            require(all(isinstance(k, int) and 0 <= k <= self.num_tasks for k in self.sweep_k),
                    f"--sweep-k values must lie in [1, {self.num_tasks}] (0 = none), got "
                    f"{list(self.sweep_k)}")
            for network in (self.sac_network, *_mt10_downstream.BASELINES.values()):
                with as_setting_error("sac_network", "sac_hidden", "softmod_layers",
                                      "softmod_modules", "softmod_width", "sac_batch_size",
                                      "sac_buffer_size"):
                    _mt10_downstream.sac_config(self, network)


STAGES = {
    "train": {"uses": ("seed", "tasks", "steps_per_task", "envs_per_task", "num_steps",
                       "update_epochs", "num_minibatches", "lr", "gamma", "gae_lambda",
                       "ent_coef", "hidden")},
    "evaluate": {"uses": ("eval_episodes",), "inputs": ("train",)},
    "features": {"uses": ("collect_steps", "dim"), "inputs": ("train",)},
    **ESTIMATION_STAGES,
}


def measure_env_speed(envs, steps: int = 20) -> float:
    """Env-steps/s of the vector env under random actions (a few steps; for the time estimate)."""
    rng = np.random.default_rng(0)
    envs.reset()
    start = time.perf_counter()
    for _ in range(steps):
        envs.step(rng.uniform(-1, 1, envs.shape + (4,)))
    return steps * envs.shape[0] * envs.shape[1] / (time.perf_counter() - start)


# PPO meta-training's env-steps/s as a fraction of the random-action env speed, measured on the
# 2-core CPU (benchmarks/mt10_cost: 1,325 of 1,960; the medium run: 0.63), for the expected time.
PPO_RATE = 0.68


def expected_minutes(config: "Config", speed: float, episode_steps: int,
                     update_seconds: dict) -> dict:
    """{stage: minutes} this run should take from scratch at `speed` random-action env-steps/s.

    Downstream SAC: every vector step costs the env steps of all learners of a network at
    `speed` plus one update per learner at `update_seconds[network]` (seconds per update of one
    learner, measured alone: a little low, as vmapped updates and the buffer's gathers cost
    more; {} without `--downstream`): on 2 cores the envs and the update share the cores, so their times
    mostly add (the overlap gains 1.2–1.4×, `benchmarks/sac_update`). Learners are counted as
    if no group were shared by two groupings (shared ones train once).
    """
    n, episodes = config.num_tasks, config.eval_episodes * config.envs_per_task
    out = {"θ* (PPO)": n * config.steps_per_task / (speed * PPO_RATE),
           "evaluation and collection": n * (episodes * episode_steps + config.collect_steps)
           / speed,
           "estimate and groups": 120.0}  # features ~45 s, subsets and SDPs seconds; compile
    if config.downstream:
        vector_steps = config.sac_steps_per_task // config.envs_per_task
        updating = vector_steps - max(config.sac_learning_starts // config.envs_per_task, 1)
        seconds = 0.0
        for network, (learners, rows) in _mt10_downstream.plan(config, n).items():
            seconds += (rows * (config.sac_steps_per_task + episodes * episode_steps) / speed
                        + updating * learners * update_seconds[network])
        out["downstream SAC"] = seconds
    return {stage: seconds / 60 for stage, seconds in out.items()}


def plot_learning(metrics: dict, steps_per_update: int, names) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = (np.arange(len(metrics["episode_return"])) + 1) * steps_per_update
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for index, name in enumerate(names):
        for ax, values in zip(axes, (metrics["episode_return"], metrics["success"])):
            # NaN in updates where no episode of the task ended (rollouts shorter than an
            # episode): join the points that exist rather than break the line at every gap.
            ended = np.isfinite(values[:, index])
            ax.plot(steps[ended], values[ended, index], lw=1, label=name)
    axes[0].set_ylabel("training episode return (stochastic policy)")
    axes[1].set_ylabel("training success rate")
    for ax in axes:
        ax.set_xlabel("env steps (all tasks)")
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


# Env streams (`MetaWorldFamily.make_envs`): each stage replays its own episodes; a resumed
# meta-training continues on stream `update index`.
EVALUATE_STREAM, COLLECT_STREAM = 1_000_000, 1_000_001


def load_checkpoint(path: Path, settings: dict, state: HostTrainState, config: Config):
    """(state, metrics) from the meta-training checkpoint at `path`, or (state, None) when there
    is none, it is unreadable, or (with `config.force`) it was made with other settings; without
    `--force` a checkpoint of other settings is a `StaleStageError`."""
    if not path.exists():
        return state, None
    try:
        saved = serialization.msgpack_restore(path.read_bytes())
        stored = json.loads(saved.get("settings", "null"))
        restored = serialization.from_state_dict(
            state.replace(key=jax.random.key_data(state.key)), saved["state"])
    except Exception as error:  # noqa: BLE001 — an unreadable checkpoint is started over
        print(f"checkpoint {path} is unreadable ({type(error).__name__}); training from scratch")
        return state, None
    if stored != settings:
        changes = describe_changes(stored or {"(settings)": "not recorded"}, settings, config)
        if not config.force:
            raise StaleStageError(
                f"the meta-training checkpoint {path} was made with other settings ({changes}). "
                "Use a new --run NAME, or --force to train from scratch with these settings.")
        print(f"checkpoint {path} has other settings ({changes}); training from scratch (--force)")
        return state, None
    restored = restored.replace(key=jax.random.wrap_key_data(restored.key))
    print(f"resuming meta-training from {path} (update {int(restored.update)})")
    return restored, {name: list(values) for name, values in saved["metrics"].items()}


def train_stage(config: Config, agent, family: MetaWorldFamily, run_dir: Path, key,
                settings: dict) -> dict:
    """Host PPO with checkpoints: resumes from checkpoints/train.msgpack when it exists and was
    made with the same `settings` (the train stage's)."""
    ppo = config.ppo()
    path = run_dir / "checkpoints" / "train.msgpack"
    state, metrics = load_checkpoint(
        path, settings, init_host_train(agent, ppo, family.num_tasks, family.obs_dim, key), config)

    def checkpoint(state: HostTrainState, metrics: dict) -> None:
        stacked = {name: np.asarray(values) for name, values in metrics.items()}
        raw_key = state.replace(key=jax.random.key_data(state.key))  # typed keys don't serialize
        atomic_write_bytes(path, serialization.msgpack_serialize(
            {"state": serialization.to_state_dict(raw_key), "metrics": stacked,
             "settings": json.dumps(settings, sort_keys=True)}))

    steps_per_update = family.num_tasks * ppo.num_envs * ppo.num_steps
    with family.make_envs(stream=int(state.update)) as envs:
        bar = UpdateBar(ppo.num_updates, "meta-training θ* (PPO, MT10)", steps_per_update,
                        initial=int(state.update))
        result = train_on_host(agent, ppo, envs, state, metrics=metrics, progress=bar,
                               checkpoint=checkpoint, checkpoint_every=config.checkpoint_every)
        bar.close()
    atomic_write_bytes(run_dir / "theta_star.msgpack", serialization.to_bytes(
        {"params": result.params, "obs_moments": result.obs_moments}))
    return {**{f"curve.{name}": value for name, value in result.metrics.items()},
            **tree_to_arrays(result.params, "param"),
            **tree_to_arrays(result.obs_moments, "obs_moments"),
            **tree_to_arrays(result.reward_scaler, "reward_scaler")}


def describe(config: Config, family: MetaWorldFamily, title: str) -> float:
    """Prints what the run trains; returns this machine's env speed (random-action env-steps/s,
    for the expected time)."""
    ppo = config.ppo()
    print(f"{title}\n{family.num_tasks} tasks ({', '.join(family.names)}); PPO: "
          f"{ppo.num_updates} updates × {family.num_tasks * ppo.num_envs * ppo.num_steps} steps "
          f"(jax {jax.__version__} on {jax.devices()[0].platform})")
    with family.make_envs(stream=0) as envs:
        return measure_env_speed(envs)


def print_expected(expected: dict, speed: float, config: Config, extra: str = "") -> None:
    """The expected time from scratch, per stage ({stage: minutes})."""
    print(f"expected time from scratch at this machine's env speed ({speed:,.0f} env-steps/s "
          f"under random actions, {config.vector_strategy}){extra}: "
          + ", ".join(f"{stage} {minutes:.0f} min" for stage, minutes in expected.items())
          + f"; total ~{sum(expected.values()):.0f} min (finished stages load from disk)")


def pipeline(config: Config, stage, run_dir: Path, family: MetaWorldFamily, agent) -> dict:
    """θ* (stage 'train'), its evaluation, features and the estimator's stages; returns
    {params, obs_moments, reward_scaler, curve, evaluated, features, clusters, collect} (collect():
    the features' transitions at θ*, collected again)."""
    ppo = config.ppo()
    keys = jax.random.split(jax.random.key(config.seed), 5)
    trained = stage("train", lambda: train_stage(config, agent, family, run_dir, keys[0],
                                                 stage.current), **STAGES["train"])
    template = init_host_train(agent, ppo, family.num_tasks, family.obs_dim, keys[0])
    params = tree_from_arrays(trained, "param", template.params)
    obs_moments = tree_from_arrays(trained, "obs_moments", template.obs_moments)
    reward_scaler = tree_from_arrays(trained, "reward_scaler", template.reward_scaler)
    curve = {name[len("curve."):]: value for name, value in trained.items()
             if name.startswith("curve.")}

    def evaluate_stage():
        with family.make_envs(EVALUATE_STREAM) as envs:
            success, returns = evaluate_on_host(agent, params, obs_moments, envs, keys[1],
                                                episodes=config.eval_episodes,
                                                max_episode_steps=family.max_episode_steps)
        return {"success": success, "returns": returns}

    evaluated = stage("evaluate", evaluate_stage, **STAGES["evaluate"])
    print("θ* success per task: " + " ".join(f"{s:.2f}" for s in evaluated["success"])
          + f"  (mean {evaluated['success'].mean():.2f})")

    def collect():
        """The transitions at θ* of the features stage (deterministic: its envs and key)."""
        with family.make_envs(COLLECT_STREAM) as envs:
            return collect_transitions_on_host(
                agent, params, obs_moments, reward_scaler, envs, keys[2],
                steps_per_task=config.collect_steps, gamma=ppo.gamma, gae_lambda=ppo.gae_lambda)

    def features_stage():
        feats = pgx.gradient_features(agent.actor.log_prob, params["actor"], collect(), keys[3],
                                      dim=config.dim)
        return {"z": feats.z, "y": feats.y, "w": feats.w, "task": feats.task}

    f = stage("features", features_stage, **STAGES["features"])
    feats = pgx.Features(z=f["z"], y=f["y"], w=f["w"], task=f["task"])
    clusters = estimate_and_group(stage, feats, family.num_tasks, keys[4], config)
    return {"params": params, "obs_moments": obs_moments, "reward_scaler": reward_scaler,
            "curve": curve, "evaluated": evaluated, "features": feats, "clusters": clusters,
            "collect": collect}


def main(argv=None) -> dict:
    config = parse_config(Config, argv, __doc__.split("\n")[0])
    executor = config.make_executor() if config.downstream else None  # before any work
    run_dir = Path(config.out) / config.run
    ppo, family = config.ppo(), config.family()
    names = list(family.names)
    agent = make_agent(family, ppo)
    speed = describe(config, family, f"pgx_jax MT10 ({config.preset} preset) -> {run_dir}")
    update_seconds = _mt10_downstream.update_seconds(config, family) if config.downstream else {}
    print_expected(expected_minutes(config, speed, family.max_episode_steps, update_seconds),
                   speed, config, "".join(f", {network} SAC update {1e3 * t:.1f} ms"
                                          for network, t in update_seconds.items()))
    stage = start_run(run_dir, config)
    out = pipeline(config, stage, run_dir, family, agent)
    curve, evaluated, clusters = out["curve"], out["evaluated"], out["clusters"]
    steps_per_update = family.num_tasks * ppo.num_envs * ppo.num_steps
    env_time = float(np.sum(curve["env_seconds"]))
    compute_time = float(np.sum(curve["policy_seconds"]) + np.sum(curve["learn_seconds"]))
    groups_named = {m: [[names[i] for i in g] for g in group_lists(clusters[m])] for m in METHODS}
    smoke = (f"**Smoke run** (`--preset {config.preset}`, {config.steps_per_task:,} PPO steps per "
             "task): θ* is far from trained, so its groups say little about MT10; the numbers "
             "show that the pipeline runs end to end." if config.preset == "quick" else
             f"Preset `{config.preset}`: {config.steps_per_task:,} PPO steps per task.")
    lines = [
        f"# PolicyGradEx on Meta-World MT10 (run `{config.run}`)",
        "",
        smoke,
        "",
        f"θ*: multitask PPO, {ppo.num_updates} updates × {steps_per_update} steps "
        f"({config.envs_per_task} envs per task, {config.num_steps}-step rollouts), MLP "
        f"{config.hidden}, γ {ppo.gamma}, λ {ppo.gae_lambda}, lr {ppo.lr}; observation "
        "normalization and reward scaling. Evaluation: "
        f"{config.eval_episodes * config.envs_per_task} greedy episode(s) of 500 steps per task; "
        "success = `info['success']` at any step.",
        "",
        "| task | success | return |",
        "|---|---|---|",
        *[f"| {name} | {s:.2f} | {r:.1f} |"
          for name, s, r in zip(names, evaluated["success"], evaluated["returns"])],
        f"| **mean** | **{evaluated['success'].mean():.2f}** | **{evaluated['returns'].mean():.1f}** |",
        "",
        f"Estimation: {config.collect_steps} transitions per task at θ*, d = {config.dim}, "
        f"{config.subsets} subsets of {config.subset_size}, k = {config.k}.",
        "",
        "## Groups",
        "",
        *[f"- {m}: " + "; ".join("{" + ", ".join(g) + "}" for g in groups_named[m]) for m in METHODS],
        "",
        "## Time",
        "",
        f"Meta-training: {env_time:.0f} s stepping the envs, {compute_time:.0f} s in the policy "
        f"and PPO updates ({env_time / max(env_time + compute_time, 1e-9):.0%} env).",
        "",
    ]
    metrics = {
        "preset": config.preset,
        "task_names": names,
        "theta_star_success": evaluated["success"],
        "theta_star_returns": evaluated["returns"],
        "theta_star_mean_success": float(evaluated["success"].mean()),
        "training_curves": curve,
        "groups": {m: clusters[m] for m in METHODS},
        "groups_named": groups_named,
        "subsets": clusters["subsets"],
        "scores_train": clusters["train_scores"],
        "scores_heldout": clusters["heldout_scores"],
        "affinity": clusters["U"],
        "affinity_gradient_similarity": clusters["U_gradient"],
        "stage_seconds": stage.timings,
    }
    if config.downstream:
        downstream_lines, metrics["downstream"] = _mt10_downstream.run(
            config, stage, clusters, executor, family)
        lines += downstream_lines + [""]
    lines += ["## Stage timings (s)", "", stage.timing_table(), ""]
    atomic_write_json(run_dir / "metrics.json", metrics)
    finish_run(stage)
    atomic_write_bytes(run_dir / "affinity.png", plot_affinity(
        clusters["U"], clusters["ours"], names, f"MT10: estimated task affinity, k={config.k}"))
    atomic_write_bytes(run_dir / "learning.png", plot_learning(curve, steps_per_update, names))
    if config.downstream:  # every row's training success, one plot (mean ± std over seeds)
        atomic_write_bytes(run_dir / "downstream.png", plot_curves(
            metrics["downstream"]["training_success"], "training log interval (of the budget)",
            "mean training success over tasks"))
    atomic_write_bytes(run_dir / "report.md", "\n".join(lines).encode())
    print("\n" + "\n".join(lines))
    return metrics


if __name__ == "__main__":
    run_cli(main)
