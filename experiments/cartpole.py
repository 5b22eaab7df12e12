"""PolicyGradEx end to end on the paper's CartPole family: `python -m experiments.cartpole`.

10 CartPole-v1 tasks that differ in pole length (`pgx_jax.envs.CARTPOLE_HALF_LENGTHS`):
meta-train θ* on all of them with multitask PPO → collect 10,000 steps per task at θ* (GAE
advantages) → projected gradient features → m random subsets → batched surrogate estimates →
affinity matrix → k groups (SDP), next to the random and gradient-similarity groupings.

The paper collects 2048 steps per task. On CartPole that leaves ~400 held-out samples (2
trajectories) per task to score f̂ on, and the estimate's agreement with real fine-tuning
(Spearman over subsets of the train-scored gain, `experiments.validate`) was 0.43 at 2000 steps
against 0.79 at 10,000;
CartPole's network is small, so the extra samples cost little.

`--env NAME` runs the same pipeline on any family of `pgx_jax.envs.registry.FAMILIES` (with its
settings from the registry): lunarlander, highway, their multi-objective weightings, and the
planted lunarlander-swapped.

Writes results/cartpole/<run>/: config.json, metrics.json (per-task returns of θ*, f̂ of every
subset, U, the groups of all three methods, stage timings), affinity.png, theta_star.msgpack
(the meta-policy's agent params, flax serialization) and stages/*.npz. Rerunning with the same
--run resumes after the last finished stage.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
from flax import serialization

import pgx_jax as pgx
from experiments._pipeline import (
    ESTIMATION_STAGES,
    METHODS,
    TASK_EFFECTS,
    EstimationConfig,
    affinity_of,
    as_setting_error,
    estimate_and_group,
    family_settings,
    finish_run,
    group_lists,
    parse_config,
    plot_affinity,
    require,
    require_ints,
    require_numbers,
    require_ppo_budget,
    require_widths,
    start_run,
)
from experiments._runner import (
    StageRunner,
    UpdateBar,
    atomic_write_bytes,
    atomic_write_json,
    run_cli,
    tree_from_arrays,
    tree_to_arrays,
)
from pgx_jax.envs import CARTPOLE_HALF_LENGTHS, HIGHWAY_DENSITIES, LUNAR_LANDER_GRAVITIES
from pgx_jax.envs.registry import FAMILIES, HALFCHEETAH_SPEEDS, FamilySpec
from pgx_jax.rl.ppo import (
    PPOConfig,
    collect_transitions,
    evaluate,
    make_agent,
    make_train,
    random_policy_returns,
)


@dataclasses.dataclass(frozen=True)
class Config(EstimationConfig):
    # the task family (`pgx_jax.envs.registry.FAMILIES`) and the source flags of the physical ones
    env: str = "cartpole"
    half_lengths: tuple = CARTPOLE_HALF_LENGTHS  # cartpole
    densities: tuple = HIGHWAY_DENSITIES  # highway
    gravities: tuple = LUNAR_LANDER_GRAVITIES  # lunarlander
    target_speeds: tuple = HALFCHEETAH_SPEEDS  # halfcheetah-vel
    # meta-training (PPO, per task)
    steps_per_task: int = 500_000
    num_envs: int = 8
    num_steps: int = 128
    lr: float = 2.5e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    hidden: tuple = (64, 64)
    task_onehot: bool = False
    clip_value: bool = True  # PPO's value clipping (see PPOConfig.clip_value)
    normalize_obs: bool = False  # running observation statistics (see PPOConfig.normalize_obs)
    ent_coef: float = 0.01
    update_epochs: int = 4  # passes over each rollout
    num_minibatches: int = 4  # per pass
    eval_envs: int = 16
    # estimation
    collect_steps: int = 10_000  # per task, from 10 envs: a 20% holdout is the data of 2 envs
    out: str = "results/cartpole"

    STAGE_NAMES = ("train", "evaluate", "random_policy", "features", "subsets", "estimate",
                   "cluster")
    COLLECT_ENVS = 10  # envs per task that collect the estimator's transitions

    def ppo(self) -> PPOConfig:
        """θ*'s PPO; fine-tuning from θ* (`experiments.validate`) keeps all but the budget."""
        return PPOConfig(steps_per_task=self.steps_per_task, num_envs=self.num_envs,
                         num_steps=self.num_steps, lr=self.lr, gamma=self.gamma,
                         gae_lambda=self.gae_lambda, hidden=self.hidden,
                         task_onehot=self.task_onehot, clip_value=self.clip_value,
                         normalize_obs=self.normalize_obs, ent_coef=self.ent_coef,
                         update_epochs=self.update_epochs, num_minibatches=self.num_minibatches)

    # The families these settings accept (experiments narrow it).
    ENVS = tuple(FAMILIES)

    @property
    def spec(self) -> FamilySpec:
        return FAMILIES[self.env]

    def sources(self) -> tuple:
        """The source tasks' parameters: the family's flag if it has one, else its fixed ones."""
        flag_name = self.spec.source_flag
        return getattr(self, flag_name) if flag_name else self.spec.sources

    def make_family(self):
        return self.spec.make(self.sources())

    @property
    def num_tasks(self) -> int:
        return len(self.sources())

    def check(self) -> None:
        self.check_family()
        super().check()
        require_ints(self, 1, "steps_per_task", "num_envs", "num_steps", "eval_envs",
                     "collect_steps", "update_epochs", "num_minibatches")
        require(self.ent_coef >= 0, f"--ent-coef must be ≥ 0, got {self.ent_coef}")
        require_widths(self, "hidden")
        require_numbers(self, 0, 1, "gamma", "gae_lambda")
        require_numbers(self, 0, 1, "lr", open_low=True)
        require_ppo_budget(self, "steps_per_task", "num_envs", self.ppo, "num_minibatches")
        require(self.collect_steps % self.COLLECT_ENVS == 0,
                f"--collect-steps must be a multiple of {self.COLLECT_ENVS} (the collecting envs "
                f"per task), got {self.collect_steps}")
        held = int(self.collect_steps * self.holdout)
        require(self.holdout == 0 or 1 <= held < self.collect_steps,
                f"--holdout {self.holdout} of --collect-steps {self.collect_steps} leaves "
                f"{held} held-out samples per task; collect more or change --holdout")

    def check_family(self) -> None:
        require(self.env in self.ENVS, f"--env must be one of {', '.join(self.ENVS)}, got "
                                       f"{self.env!r}")
        with as_setting_error(*filter(None, [self.spec.source_flag])):
            self.make_family()


# Per-family defaults of every experiment's settings (flags still win).
ENV_DEFAULTS = {name: spec.defaults for name, spec in FAMILIES.items()}

# What each stage's results depend on: config fields (`uses`), earlier stages (`inputs`); the
# task family is added to "train" (`family_settings`). The estimator's stages follow.
PIPELINE_STAGES = {
    "train": {"uses": ("seed", "steps_per_task", "num_envs", "num_steps", "lr", "gamma",
                       "gae_lambda", "hidden", "task_onehot", "clip_value",
                       "normalize_obs", "ent_coef", "update_epochs", "num_minibatches")},
    "evaluate": {"uses": ("eval_envs",), "inputs": ("train",)},
    "random_policy": {"uses": ("seed", "eval_envs"), "inputs": ("train",)},  # train: the family
    "features": {"uses": ("collect_steps", "dim"), "inputs": ("train",)},
    **ESTIMATION_STAGES,
}


def collect_at(config: Config, agent, params, family, key, steps_per_task: int):
    """Transitions at `params` for the estimator, with GAE under θ*'s own γ and λ (the critic was
    trained for them; another discount would give advantages of a different return)."""
    return collect_transitions(agent, params, family, key, steps_per_task=steps_per_task,
                               num_envs=config.COLLECT_ENVS, gamma=config.gamma,
                               gae_lambda=config.gae_lambda)


def pipeline(config: Config, stage: StageRunner, run_dir: Path, family=None) -> dict:
    """θ* → returns → transitions → features → estimates → groups, as resumable stages.

    `family` defaults to the config's (`--env` and its source flag); any `TaskFamily` works.
    """
    family = config.make_family() if family is None else family
    ppo = config.ppo()
    agent = make_agent(family, ppo)
    print(f"{family.num_tasks} tasks ({family.names[0]}, ...); PPO: {ppo.num_updates} updates × "
          f"{family.num_tasks * ppo.num_envs * ppo.num_steps} steps "
          f"(jax {jax.__version__} on {jax.devices()[0].platform})")
    keys = jax.random.split(jax.random.key(config.seed), 5)
    template = agent.init(keys[0], family.obs_dim)

    def train_stage():
        bar = UpdateBar(ppo.num_updates, "meta-training θ* (PPO)",
                        family.num_tasks * ppo.num_envs * ppo.num_steps)
        result = jax.block_until_ready(jax.jit(make_train(ppo, family, progress=bar))(keys[0]))
        bar.close()
        # NaN for the updates in which no episode of a task ended (episodes longer than a
        # rollout), so the curve's mean skips them.
        curve = np.asarray(result.metrics["episode_return"])
        atomic_write_bytes(run_dir / "theta_star.msgpack", serialization.to_bytes(result.params))
        return {"curve": curve, **tree_to_arrays(result.params, "param")}

    trained = stage("train", train_stage, **PIPELINE_STAGES["train"],
                    extra=family_settings(family))
    params = tree_from_arrays(trained, "param", template)

    returns = stage("evaluate", lambda: {"returns": evaluate(
        agent, params, family, keys[1], num_envs=config.eval_envs, max_steps=500)},
        **PIPELINE_STAGES["evaluate"])["returns"]
    random_returns = stage("random_policy", lambda: {"returns": random_policy_returns(
        family, keys[1], num_envs=config.eval_envs, max_steps=500)},
        **PIPELINE_STAGES["random_policy"])["returns"]
    print("θ* mean return per task: " + " ".join(f"{r:.0f}" for r in returns)
          + f"  (mean {returns.mean():.1f}; a uniformly random policy: "
          + " ".join(f"{r:.0f}" for r in random_returns) + ")")

    def features_stage():
        batch = collect_at(config, agent, params, family, keys[2], config.collect_steps)
        feats = pgx.gradient_features(agent.actor.log_prob, params["actor"], batch, keys[3],
                                      dim=config.dim)
        return {"z": feats.z, "y": feats.y, "w": feats.w, "task": feats.task}

    f = stage("features", features_stage, **PIPELINE_STAGES["features"])
    feats = pgx.Features(z=f["z"], y=f["y"], w=f["w"], task=f["task"])
    clusters = estimate_and_group(stage, feats, family.num_tasks, keys[4], config)
    return {"family": family, "agent": agent, "ppo": ppo, "params": params, "returns": returns,
            "random_returns": random_returns,
            "curve": trained["curve"], "features": feats, "clusters": clusters,
            "collect_key": keys[2], "projection_key": keys[3]}


def main(argv=None, config_class=None, description: str | None = None) -> dict:
    """The pipeline and its report; `config_class`/`description`: another experiment's narrower
    Config (e.g. `experiments.brax`'s) and its --help line."""
    config = parse_config(config_class or Config, argv, description or __doc__.split("\n")[0],
                          defaults_by_env=ENV_DEFAULTS)
    run_dir = Path(config.out) / config.run
    print(f"pgx_jax {config.env} -> {run_dir}")
    stage = start_run(run_dir, config)
    out = pipeline(config, stage, run_dir)
    family, returns, clusters = out["family"], out["returns"], out["clusters"]

    names = list(family.names)
    metrics = {
        "task_names": names,
        "theta_star_returns": returns,
        "theta_star_mean_return": float(returns.mean()),
        "random_policy_returns": out["random_returns"],
        # Per update, the mean over tasks of the returns of the episodes that ended in it;
        # null where none ended.
        "training_curve_mean_return": [
            None if np.isnan(row).all() else float(np.nanmean(row)) for row in out["curve"]],
        "groups": {m: clusters[m] for m in METHODS},
        "groups_named": {m: [[names[i] for i in g] for g in group_lists(clusters[m])] for m in METHODS},
        "subsets": clusters["subsets"],
        "scores_heldout": clusters["heldout_scores"],
        "scores_train": clusters["train_scores"],
        "affinity": clusters["U"],
        "affinity_gradient_similarity": clusters["U_gradient"],
        "nmi_between_methods": {
            f"{a}_vs_{b}": pgx.nmi(clusters[a], clusters[b])
            for i, a in enumerate(METHODS) for b in METHODS[i + 1:]
        },
        "vs_planted": None,
        "stage_seconds": stage.timings,
    }
    planted = config.spec.planted
    if planted is not None:  # groups known by construction: every grouping against them
        metrics["vs_planted"] = {m: pgx.nmi(clusters[m], planted) for m in METHODS}
        for effects in TASK_EFFECTS:
            groups = pgx.cluster_tasks(affinity_of(clusters["subsets"], clusters["scores"], effects),
                                       config.k)
            metrics["vs_planted"][f"ours, per-task effects {effects}"] = pgx.nmi(groups, planted)
        solution = pgx.solve_subsets(out["features"], clusters["subsets"], l2=config.l2,
                                     holdout=config.holdout)
        directed = pgx.directed_affinity(clusters["subsets"], pgx.member_gains(solution))
        metrics["vs_planted"]["ours, directed"] = pgx.nmi(pgx.cluster_tasks(directed, config.k),
                                                          planted)
    atomic_write_json(run_dir / "metrics.json", metrics)
    finish_run(stage)
    atomic_write_bytes(run_dir / "affinity.png", plot_affinity(
        clusters["U"], clusters["ours"], [n.replace("half_length=", "L/2=") for n in names],
        f"{config.env}: estimated task affinity, k={config.k}"))

    print("\nGroups:")
    for m in METHODS:
        print(f"  {m:20s} " + "  ".join(
            "{" + ", ".join(names[i] for i in g) + "}" for g in group_lists(clusters[m])))
    if planted is not None:
        print("\nNMI vs the planted groups: " + ", ".join(
            f"{m} {v:.2f}" for m, v in metrics["vs_planted"].items()))
    print("\n" + stage.timing_table())
    print(f"\nwrote {run_dir}/metrics.json, affinity.png, theta_star.msgpack")
    return metrics


if __name__ == "__main__":
    run_cli(main)
