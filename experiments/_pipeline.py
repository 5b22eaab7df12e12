"""The estimator half of every experiment: subsets → estimates → affinity → groups (+ baselines)."""

from __future__ import annotations

import dataclasses
import io

import jax
import numpy as np

import pgx_jax as pgx
from experiments._runner import StageRunner
from pgx_jax.surrogate import subset_scores

METHODS = ("ours", "gradient_similarity", "random")


def parse_config(config_cls, argv=None, description: str = "", defaults_by_env=None):
    """A frozen dataclass of defaults → an argparse CLI with one --flag per field.

    `defaults_by_env` ({env: {field: value}}) replaces the class defaults for the `--env` given
    (settings an environment needs, e.g. its PPO budget); flags on the command line still win.
    """
    import argparse

    defaults = config_cls()
    if defaults_by_env is not None:
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--env", default=defaults.env)
        env = pre.parse_known_args(argv)[0].env
        defaults = dataclasses.replace(defaults, **defaults_by_env.get(env, {}))
    parser = argparse.ArgumentParser(description=description)
    for field in dataclasses.fields(config_cls):
        flag = f"--{field.name.replace('_', '-')}"
        default = getattr(defaults, field.name)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, tuple):
            parser.add_argument(flag, type=type(default[0]), nargs="+",
                                default=list(default), help=f"(default: {default})")
        else:
            parser.add_argument(flag, type=type(default), default=default,
                                help=f"(default: {default})")
    args = vars(parser.parse_args(argv))
    return config_cls(**{
        f.name: tuple(args[f.name]) if isinstance(getattr(defaults, f.name), tuple) else args[f.name]
        for f in dataclasses.fields(config_cls)
    })


@dataclasses.dataclass(frozen=True)
class EstimationConfig:
    """Settings every experiment shares: run name and seed, and the estimator's knobs."""

    run: str = "default"
    seed: int = 0
    dim: int = 400
    subsets: int = 200
    subset_size: int = 3
    l2: float = 1e-2
    holdout: float = 0.2
    # f̂ on the fitted samples (the paper's eq. 3) or on the held-out ones. On CartPole the held-out
    # gain tracked real fine-tuning in one draw of transitions and not in another (Spearman 0.64,
    # −0.11; experiments.validate), the train gain in both (0.79, 0.78): each task's held-out
    # share is the data of 2 envs, a few correlated episodes.
    score_on: str = "train"
    k: int = 3


def estimate_and_group(stage: StageRunner, feats: pgx.Features, num_tasks: int, key: jax.Array,
                       config: EstimationConfig) -> dict:
    """Runs the stages 'subsets', 'estimate' and 'cluster'; returns their arrays in one dict."""
    num_subsets, subset_size, k = config.subsets, config.subset_size, config.k
    l2, holdout = config.l2, config.holdout
    if config.score_on not in ("train", "heldout"):
        raise ValueError(f"--score-on must be 'train' or 'heldout', got {config.score_on!r}")
    key_subsets, key_random = jax.random.split(key)
    subsets = stage(
        "subsets",
        lambda: {"subsets": pgx.sample_subsets(key_subsets, num_tasks, num_subsets, subset_size)},
    )["subsets"]

    def estimate():
        solution = pgx.solve_subsets(feats, subsets, l2=l2, holdout=holdout)
        return {  # f̂ = loss reduction over θ* (see `pgx.estimate_subsets`)
            "scores": subset_scores(solution, config.score_on),
            "train_scores": subset_scores(solution, "train"),
            "heldout_scores": subset_scores(solution, "heldout"),
            "heldout_loss_at_zero": solution.heldout_loss_at_zero,
            "iterations": solution.iterations,
            "grad_norm": solution.grad_norm,
        }

    estimates = stage("estimate", estimate)

    def cluster():
        U = pgx.affinity_matrix(subsets, estimates["scores"])
        U_gradient = pgx.gradient_similarity_affinity(feats, num_tasks)
        return {
            "U": U,
            "U_gradient": U_gradient,
            "ours": pgx.cluster_tasks(U, k),
            "gradient_similarity": pgx.cluster_tasks(U_gradient, k),
            "random": pgx.random_groups(key_random, num_tasks, k),
        }

    return {"subsets": subsets, **estimates, **stage("cluster", cluster)}


def group_lists(labels) -> list[list[int]]:
    labels = np.asarray(labels)
    return [np.flatnonzero(labels == g).tolist() for g in range(int(labels.max()) + 1)]


def plot_affinity(U, groups, names, title: str) -> bytes:
    """PNG bytes of the affinity heatmap with tasks ordered by group and group borders drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    U, groups = np.asarray(U), np.asarray(groups)
    order = np.argsort(groups, kind="stable")
    labels = [names[i] for i in order]
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(U[np.ix_(order, order)], cmap="viridis")
    ax.set_xticks(range(len(order)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(order)), labels, fontsize=7)
    for boundary in np.flatnonzero(np.diff(groups[order])) + 0.5:
        ax.axhline(boundary, color="white", lw=1.5)
        ax.axvline(boundary, color="white", lw=1.5)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="U_ij = mean estimate over subsets holding i and j")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def cost_flops(agent, params, family, *, collect_steps: int, dim: int, subsets, features,
               solver_iterations: int, finetune, eval_envs: int, seeds: int = 1) -> dict:
    """FLOPs of estimation (transitions at θ*, features, batched solve) and of full training
    (PPO fine-tuning of θ* on every subset, `seeds` runs each, + evaluation), from
    `jaxpr_flops`: only shapes matter, so the programs are traced, not run."""
    from pgx_jax.diagnostics.flops import jaxpr_flops
    from pgx_jax.rl.ground_truth import fine_tune_subsets
    from pgx_jax.rl.ppo import collect_transitions

    # Concrete jax arrays, made before tracing: inside the trace a numpy input would become a
    # tracer, and the solver would fall back to its loose (far larger) padded sizes.
    features = jax.tree_util.tree_map(jax.numpy.asarray, features)
    subsets = jax.numpy.asarray(subsets)
    key = jax.random.key(0)
    batch = jax.eval_shape(lambda: collect_transitions(agent, params, family, key,
                                                       steps_per_task=collect_steps))
    zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), batch)
    estimation = {
        "collect": jaxpr_flops(lambda: collect_transitions(agent, params, family, key,
                                                           steps_per_task=collect_steps)),
        "features": jaxpr_flops(lambda: pgx.gradient_features(agent.actor.log_prob, params["actor"],
                                                              zeros, key, dim=dim)),
        "solve": jaxpr_flops(lambda: pgx.solve_subsets(features, subsets).theta,
                             while_trips=solver_iterations),
    }
    full = jaxpr_flops(lambda: fine_tune_subsets(finetune, family, params, subsets, key,
                                                 seeds=seeds, eval_envs=eval_envs).mean_return)
    return {"estimation": estimation, "estimation_total": sum(estimation.values()), "full": full}
