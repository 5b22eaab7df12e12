"""Meta-RL on a control family (paper, Table 2's control columns): `python -m experiments.control`.

10 source tasks → meta-policy θ* (multitask PPO) → PolicyGradEx estimates → k groups → the
meta-training set is one task drawn from each group (the paper's choice) → MAML
(`pgx_jax.rl.maml`, second order) → adaptation to unseen target tasks, whose parameters are
drawn from the same range as the sources but are never sources → mean adapted return.

MAML starts from θ* (`--maml-init theta_star`, the paper's "meta-initialization"; `random` for a
fresh network) and every variant samples k tasks per outer step, so all get the same MAML
budget in env steps. Baselines, in the same run: MAML on all sources (k of the 10 per outer
step), on k random sources, on one task per gradient-similarity group; and plain multitask
training without MAML (θ*'s policy, adapted the same way). An adaptation step is one inner policy-gradient update
(`--inner-lr`) on a fresh batch of `--maml-envs` episodes sampled with the current policy; the
reported return after step k is that of the batch sampled with the policy of step k. The paper
adapts for 200 steps; the default here is 20 (`--adapt-steps 200` for the paper's setting).

θ* and its groups are computed once; the seeds vary the draw of the meta-training tasks, MAML's
initialization and sampling, and the adaptation's sampling. Mean ± std over seeds of the mean
over targets. Paper's numbers come from the original environments (compare orderings, not
values).

Writes results/control/<env>/<run>/: report.md, metrics.json, adaptation.png and the stages.
Resumable per method and seed.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import numpy as np

from experiments import cartpole
from experiments._pipeline import (
    METHODS,
    as_setting_error,
    finish_run,
    group_lists,
    parse_config,
    plot_curves,
    require,
    require_ints,
    require_numbers,
    start_run,
)
from experiments._runner import (
    UpdateBar,
    atomic_write_bytes,
    atomic_write_json,
    run_cli,
)
from pgx_jax.envs.registry import FAMILIES
from pgx_jax.rl.maml import MAMLConfig, make_adapt_eval, make_meta_train

# The paper's Table 2, control columns (mean adapted reward ± std over 5 runs).
PAPER_TABLE2 = {
    "cartpole": {"multitask": "145.9 ± 9.0", "random": "144.1 ± 10.1",
                 "gradient_similarity": "142.0 ± 8.2", "ours": "159.2 ± 3.8"},
    "highway": {"multitask": "140.0 ± 4.6", "random": "143.4 ± 5.4",
                "gradient_similarity": "135.6 ± 7.6", "ours": "153.5 ± 7.8"},
    "lunarlander": {"multitask": "53.8 ± 14.6", "random": "73.1 ± 11.7",
                    "gradient_similarity": "80.8 ± 6.9", "ours": "82.8 ± 6.9"},
}
SETS = ("ours", "gradient_similarity", "random", "all_sources", "multitask")


@dataclasses.dataclass(frozen=True)
class Config(cartpole.Config):
    seeds: int = 5
    targets: int = 50
    adapt_steps: int = 20
    maml_outer_steps: int = 50
    maml_envs: int = 10  # episodes per support/query batch
    maml_horizon: int = 0  # steps per episode in MAML's batches; 0 = the family's
    maml_init: str = "theta_star"  # or "random"
    inner_lr: float = 0.1
    outer_lr: float = 1e-3
    out: str = "results/control"

    STAGE_NAMES = cartpole.Config.STAGE_NAMES + ("targets", "adapt")
    # Families with a distribution of unseen targets (meta-RL needs one).
    ENVS = tuple(name for name, spec in FAMILIES.items() if spec.sample_targets is not None)

    def check(self) -> None:
        super().check()
        require_ints(self, 1, "seeds", "targets", "maml_outer_steps", "maml_envs")
        require_ints(self, 0, "adapt_steps", "maml_horizon")
        require(self.maml_init in ("theta_star", "random"),
                f"--maml-init must be 'theta_star' or 'random', got {self.maml_init!r}")
        # MAML's policy does not see a task id (its targets are unseen tasks), so a θ* that reads
        # the one-hot cannot be its initialization (the brax families' θ* do).
        require(not (self.maml_init == "theta_star" and self.task_onehot),
                "--maml-init theta_star needs a θ* without the task one-hot (MAML's policy sees "
                "no task id): pass --maml-init random, or --no-task-onehot")
        require_numbers(self, 0, math.inf, "inner_lr")
        require_numbers(self, 0, math.inf, "outer_lr", open_low=True)
        with as_setting_error("inner_lr", "outer_lr", "maml_envs", "maml_horizon", "k"):
            self.maml()

    def maml(self) -> MAMLConfig:
        # meta batch = k for every variant: all sources sample k of their tasks per outer step.
        return MAMLConfig(inner_lr=self.inner_lr, outer_lr=self.outer_lr, num_envs=self.maml_envs,
                          num_steps=self.maml_horizon or self.spec.maml_horizon,
                          meta_batch_size=self.k, num_outer_steps=self.maml_outer_steps,
                          hidden=self.hidden)


STAGES = {
    "targets": {"uses": ("seed", "env", "targets")},
    # every MAML variant of one seed (the seed is in the stage's name)
    "adapt": {"uses": ("maml_init", "inner_lr", "outer_lr", "maml_envs", "maml_horizon",
                       "maml_outer_steps", "adapt_steps"),
              "inputs": ("train", "cluster", "targets")},
}


def training_sets(clusters: dict, num_tasks: int, k: int, rng: np.random.Generator) -> dict:
    """The source tasks each MAML variant meta-trains on (sorted task ids)."""
    def one_per_group(labels):
        return sorted(int(rng.choice(group)) for group in group_lists(labels))

    return {
        "ours": one_per_group(clusters["ours"]),
        "gradient_similarity": one_per_group(clusters["gradient_similarity"]),
        "random": sorted(rng.choice(num_tasks, k, replace=False).tolist()),
        "all_sources": list(range(num_tasks)),
    }


def main(argv=None) -> dict:
    config = parse_config(Config, argv, __doc__.split("\n")[0],
                          defaults_by_env=cartpole.ENV_DEFAULTS)
    make_family, sample_targets = config.spec.make, config.spec.sample_targets
    sources = config.sources()
    run_dir = Path(config.out) / config.env / config.run
    print(f"pgx_jax meta-RL ({config.env}) -> {run_dir}")
    stage = start_run(run_dir, config)
    family = make_family(sources)
    out = cartpole.pipeline(config, stage, run_dir, family=family)
    clusters = out["clusters"]
    targets = stage("targets", lambda: {"params": sample_targets(
        np.random.default_rng(config.seed + 100), config.targets)}, **STAGES["targets"])["params"]
    target_family = make_family(targets)
    maml = config.maml()
    evaluate = jax.jit(make_adapt_eval(maml, target_family), static_argnames="adapt_steps")
    target_ids = np.arange(config.targets)
    # As a MAML agent's params; θ*'s observation statistics (if any) stay with its actor.
    theta_star = {**out["params"], "critic": {}}
    bars = []  # the progress bar of the MAML run in flight; the jitted loop reports to it
    meta_train = jax.jit(make_meta_train(maml, family, progress=lambda *a: bars[-1](*a)))

    curves = {name: [] for name in SETS}
    chosen = {}
    for seed in range(config.seeds):
        rng = np.random.default_rng([config.seed, seed])
        sets = training_sets(clusters, family.num_tasks, config.k, rng)
        chosen[seed] = sets
        key = jax.random.fold_in(jax.random.key(config.seed + 200), seed)
        for name in SETS:
            def run(name=name, sets=sets, key=key):
                key_train, key_eval = jax.random.split(key)
                if name == "multitask":  # θ*'s policy, no meta-training
                    params = theta_star
                else:
                    bars.append(UpdateBar(maml.num_outer_steps,
                                          f"MAML on {name} {sets[name]} (seed {seed})",
                                          maml.meta_batch_size * 2 * maml.num_envs * maml.num_steps))
                    init = theta_star if config.maml_init == "theta_star" else None
                    result = meta_train(key_train, np.asarray(sets[name], np.int32), init)
                    params = jax.block_until_ready(result.params)
                    bars[-1].close()
                returns = evaluate(key_eval, params, target_ids, adapt_steps=config.adapt_steps)
                return {"returns": returns}

            curves[name].append(stage(f"adapt.{name}.seed{seed}", run,
                                      **STAGES["adapt"])["returns"].mean(0))
    curves = {name: np.stack(c) for name, c in curves.items()}  # [seeds, steps + 1]
    final = {name: c[:, -1] for name, c in curves.items()}

    paper = PAPER_TABLE2.get(config.env, {})
    lines = [
        f"# Meta-RL on {config.env}: adapted return on {config.targets} unseen target tasks",
        "",
        f"Run `{config.run}`; {family.num_tasks} source tasks, k = {config.k}; MAML (second order) "
        f"from {'θ*' if config.maml_init == 'theta_star' else 'a random init'}, "
        f"{maml.num_outer_steps} outer steps of {maml.meta_batch_size} tasks, batches of "
        f"{maml.num_envs} episodes × {maml.num_steps} steps, inner lr {maml.inner_lr}, outer lr "
        f"{maml.outer_lr}; {config.adapt_steps} adaptation steps (paper: 200); "
        f"{config.seeds} seeds (mean ± std of the mean over targets).",
        "",
        f"θ*: multitask PPO, {config.steps_per_task:,} steps per task ({config.num_envs} envs, lr "
        f"{config.lr}, γ {config.gamma}, λ {config.gae_lambda}); mean return on the sources "
        f"{np.mean(out['returns']):.1f} (per task: {np.round(out['returns'], 1).tolist()}).",
        "",
        "| meta-training set | before adaptation | after adaptation | paper (original env) |",
        "|---|---|---|---|",
        *[f"| {name} | {curves[name][:, 0].mean():.1f} ± {curves[name][:, 0].std():.1f} | "
          f"{final[name].mean():.1f} ± {final[name].std():.1f} | {paper.get(name, '—')} |"
          for name in SETS],
        "",
        f"Groups: ours {group_lists(clusters['ours'])}, gradient similarity "
        f"{group_lists(clusters['gradient_similarity'])}.",
        "Meta-training tasks per seed: " + "; ".join(
            f"seed {s}: " + ", ".join(f"{k} {v}" for k, v in sets.items() if k != "all_sources")
            for s, sets in chosen.items()),
        "",
        "## Stage timings (s)",
        "",
        *[f"- {name}: {seconds:.2f}" for name, seconds in stage.timings.items()],
        "",
    ]
    metrics = {
        "source_params": sources, "target_params": targets,
        "theta_star_source_returns": out["returns"],
        "groups": {m: clusters[m] for m in METHODS},
        "meta_training_sets": chosen,
        "adaptation_curves": curves,
        "final_return": {name: {"mean": float(v.mean()), "std": float(v.std()), "per_seed": v}
                         for name, v in final.items()},
        "stage_seconds": stage.timings,
    }
    atomic_write_json(run_dir / "metrics.json", metrics)
    finish_run(stage)
    atomic_write_bytes(run_dir / "adaptation.png", plot_curves(curves))
    atomic_write_bytes(run_dir / "report.md", "\n".join(lines).encode())
    print("\n" + "\n".join(lines))
    return metrics


if __name__ == "__main__":
    run_cli(main)
