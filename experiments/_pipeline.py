"""The estimator half of every experiment: subsets → estimates → affinity → groups (+ baselines)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import math
from pathlib import Path

import jax
import numpy as np

import pgx_jax as pgx
from experiments._runner import (
    COMPILE_CACHE_VARIABLE,
    SettingError,
    StageRunner,
    atomic_write_json,
    flag,
    use_compile_cache,
)
from pgx_jax.executor import EXECUTORS, make_executor
from pgx_jax.subsets import min_num_subsets
from pgx_jax.surrogate import subset_scores

METHODS = ("ours", "gradient_similarity", "random")
TASK_EFFECTS = ("keep", "remove")


def affinity_of(subsets, scores, task_effects: str, fill=None):
    """eq. (5) of (estimated or true) subset scores, after removing their per-task main effects
    if asked: f[n, n]. `fill` as in `pgx.affinity_matrix`."""
    if task_effects == "remove":
        scores = pgx.remove_task_effects(subsets, scores)
    return np.asarray(pgx.affinity_matrix(subsets, scores, fill=fill))


def parse_config(config_cls, argv=None, description: str = "", defaults_by_env=None):
    """A frozen dataclass of defaults → an argparse CLI with one --flag per field; the config is
    resolved (`config.resolved()`: presets) and checked (`config.check()`) before it is returned,
    so a bad setting raises `SettingError` before any work.

    `defaults_by_env` ({env: {field: value}}) replaces the class defaults for the `--env` given
    (settings an environment needs, e.g. its PPO budget); a config class with `PRESET_DEFAULTS`
    ({preset: {field: value}}) and a `preset` field then applies the `--preset` given on top;
    flags on the command line still win.
    """
    import argparse

    defaults = config_cls()
    fields = {f.name for f in dataclasses.fields(config_cls)}
    pre = argparse.ArgumentParser(add_help=False)
    for name in ("env", "preset"):
        if name in fields:
            pre.add_argument(flag(name), default=getattr(defaults, name))
    known = vars(pre.parse_known_args(argv)[0])
    if defaults_by_env is not None:
        defaults = dataclasses.replace(defaults, **{
            name: value for name, value in defaults_by_env.get(known["env"], {}).items()
            if name in fields})
    presets = getattr(config_cls, "PRESET_DEFAULTS", None)
    if presets is not None:
        require(known["preset"] in presets, f"--preset must be one of {', '.join(presets)}, got "
                                            f"{known['preset']!r}")
        defaults = dataclasses.replace(defaults, **presets[known["preset"]])
    parser = argparse.ArgumentParser(description=description)
    for field in dataclasses.fields(config_cls):
        flag_name = flag(field.name)
        default = getattr(defaults, field.name)
        if isinstance(default, bool):
            parser.add_argument(flag_name, action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, tuple):
            parser.add_argument(flag_name, type=type(default[0]), nargs="+",
                                default=list(default), help=f"(default: {default})")
        else:
            parser.add_argument(flag_name, type=type(default), default=default,
                                help=f"(default: {default})")
    parser.add_argument("--compile-cache", action=argparse.BooleanOptionalAction, default=True,
                        help=f"JAX's persistent compilation cache in ${COMPILE_CACHE_VARIABLE} or "
                             "~/.cache/pgx_jax/xla (default: on)")
    args = vars(parser.parse_args(argv))
    use_compile_cache(args.pop("compile_cache"))
    config = config_cls(**{
        f.name: tuple(args[f.name]) if isinstance(getattr(defaults, f.name), tuple) else args[f.name]
        for f in dataclasses.fields(config_cls)
    }).resolved()
    config.check()
    return config


def require(condition: bool, message: str) -> None:
    """Raises `SettingError(message)` unless `condition` holds."""
    if not condition:
        raise SettingError(message)


def require_ints(config, minimum: int, *names: str) -> None:
    """Each named field is an int >= `minimum`."""
    for name in names:
        value = getattr(config, name)
        require(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
                f"{flag(name)} must be an integer >= {minimum}, got {value!r}")


def require_numbers(config, low: float, high: float, *names: str, open_low: bool = False) -> None:
    """Each named field is a finite number in [low, high] (or (low, high] with `open_low`)."""
    for name in names:
        value = getattr(config, name)
        ok = isinstance(value, (int, float)) and math.isfinite(value) and value <= high and (
            value > low if open_low else value >= low)
        require(ok, f"{flag(name)} must lie in {'(' if open_low else '['}{low:g}, {high:g}], "
                    f"got {value!r}")


def require_widths(config, *names: str) -> None:
    """Each named field is a non-empty tuple of positive layer widths."""
    for name in names:
        value = getattr(config, name)
        require(len(value) > 0 and all(isinstance(h, int) and h >= 1 for h in value),
                f"{flag(name)} must be one or more positive layer widths, got {list(value)}")


def require_ppo_budget(config, steps: str, envs: str, make_ppo, *others: str) -> None:
    """The budget field `steps` holds at least one PPO update (`envs` × --num-steps), and the
    PPOConfig that `make_ppo()` builds accepts the settings (`others`: more flags it reads)."""
    rollout = getattr(config, envs) * config.num_steps
    require(getattr(config, steps) >= rollout,
            f"{flag(steps)} must be at least one PPO update ({flag(envs)} × --num-steps = "
            f"{rollout}), got {getattr(config, steps)}")
    with as_setting_error(envs, "num_steps", *others):
        make_ppo()


@contextlib.contextmanager
def as_setting_error(*names: str):
    """Re-raises a library's ValueError about these settings as a `SettingError` naming flags."""
    try:
        yield
    except ValueError as error:
        raise SettingError(f"{', '.join(flag(n) for n in names)}: {error}") from None


@dataclasses.dataclass(frozen=True)
class ExecutorConfig:
    """Where an experiment's independent trainings go (`pgx_jax.executor`): "inprocess" (one
    vmapped call) or "ray" (--ray-chunk trainings per Ray task; --ray-address joins a running
    cluster, without one a local Ray on this machine's cores). Run control: the executor changes
    where trainings run, not their results."""

    executor: str = "inprocess"
    ray_address: str = ""
    ray_chunk: int = 4

    RUN_CONTROL = ("executor", "ray_address", "ray_chunk")

    def check_executor(self) -> None:
        require(self.executor in EXECUTORS, f"--executor must be one of {', '.join(EXECUTORS)}, "
                f"got {self.executor!r}")
        require(not self.ray_address or self.executor == "ray",
                "--ray-address needs --executor ray")
        require_ints(self, 1, "ray_chunk")

    def make_executor(self):
        """The executor; a missing Ray or an unreachable cluster is a `SettingError` (before any
        work: call this first)."""
        try:
            return make_executor(self.executor, self.ray_address, self.ray_chunk)
        except (ImportError, ConnectionError) as error:
            raise SettingError(str(error)) from None


@dataclasses.dataclass(frozen=True)
class EstimationConfig:
    """Settings every experiment shares: run name and seed, the estimator's knobs, and how to treat
    a run directory that already holds results (`force`, `restart_from`; not result settings)."""

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
    # Per-task main effects of f̂ (and of the truth): "remove" fits f(S) ≈ c + mean_{i∈S} b_i and
    # clusters the residuals (`pgx.remove_task_effects`); "keep" uses f̂ as eq. (5) has it.
    task_effects: str = "keep"
    k: int = 3
    force: bool = False  # recompute stages whose stored settings differ from these
    restart_from: str = ""  # recompute this stage (or "prefix" of stages) and all downstream

    # Fields that name or steer the run without shaping any result (never in a stage's settings).
    RUN_CONTROL = ("run", "out", "force", "restart_from")
    # Stages by name (or "prefix" of "prefix.*"): what --restart-from accepts.
    STAGE_NAMES = ()

    @property
    def num_tasks(self) -> int:
        raise NotImplementedError

    def resolved(self):
        """The config with presets filled in (experiments with presets override this)."""
        return self

    def check(self) -> None:
        """Raises `SettingError` naming the flag of the first invalid setting."""
        n = self.num_tasks
        require(bool(self.run) and "/" not in self.run and self.run not in (".", ".."),
                f"--run must be a plain folder name, got {self.run!r}")
        require_ints(self, 0, "seed")
        require_ints(self, 1, "dim")
        require(n >= 2, f"the family must have at least 2 tasks, got {n}")
        require_ints(self, 2, "subset_size")
        require(self.subset_size <= n, f"--subset-size must be <= {n} (the family has {n} tasks), "
                                       f"got {self.subset_size}")
        require_ints(self, 1, "subsets", "k")
        least = min_num_subsets(n, self.subset_size)
        require(self.subsets >= least,
                f"--subsets must be >= {least} to cover every pair of the {n} tasks with subsets of "
                f"{self.subset_size}, got {self.subsets}")
        require(self.k <= n, f"--k must be <= {n} (the family has {n} tasks), got {self.k}")
        require(isinstance(self.l2, (int, float)) and math.isfinite(self.l2) and self.l2 > 0,
                f"--l2 must be a positive number, got {self.l2!r}")
        require(0 <= self.holdout < 1, f"--holdout must lie in [0, 1), got {self.holdout!r}")
        require(self.score_on in ("train", "heldout"),
                f"--score-on must be 'train' or 'heldout', got {self.score_on!r}")
        require(self.task_effects in TASK_EFFECTS,
                f"--task-effects must be one of {', '.join(TASK_EFFECTS)}, got {self.task_effects!r}")
        require(self.score_on == "train" or self.holdout > 0,
                "--score-on heldout needs --holdout > 0")
        require(not self.restart_from or any(self.restart_from == s for s in self.STAGE_NAMES),
                f"--restart-from must name a stage: one of {', '.join(self.STAGE_NAMES)}; got "
                f"{self.restart_from!r}")


def start_run(run_dir: Path, config: EstimationConfig) -> StageRunner:
    """The stage runner of a run; a new run's config.json is written now, an existing run's only
    by `finish_run` (so it always describes the results beside it)."""
    stage = StageRunner(run_dir, config, force=config.force, restart_from=config.restart_from)
    if not (Path(run_dir) / "stages").exists():
        atomic_write_json(Path(run_dir) / "config.json", result_settings(config))
    return stage


def finish_run(stage: StageRunner) -> None:
    """Writes config.json once every stage of the run holds results of these settings."""
    atomic_write_json(stage.run_dir / "config.json", result_settings(stage.config))


def result_settings(config: EstimationConfig) -> dict:
    """The config as config.json records it: everything but the run-control flags."""
    return {name: value for name, value in dataclasses.asdict(config).items()
            if name not in ("force", "restart_from")}


# Settings (config fields) and input stages of the estimator's stages; every experiment runs them
# after its own "features" stage.
ESTIMATION_STAGES = {
    "subsets": {"uses": ("seed", "subsets", "subset_size")},
    "estimate": {"uses": ("l2", "holdout", "score_on"), "inputs": ("features", "subsets")},
    "cluster": {"uses": ("task_effects", "k"), "inputs": ("estimate",)},  # random: seed, via subsets
}


def family_settings(family) -> dict:
    """A task family's identity for a stage's settings: env, task names and a digest of the
    per-task parameters (names round the values)."""
    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(family.params):
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return {"family": {"env": type(family.env).__name__, "tasks": list(family.names),
                       "params_sha256": digest.hexdigest()[:16]}}


def estimate_and_group(stage: StageRunner, feats: pgx.Features, num_tasks: int, key: jax.Array,
                       config: EstimationConfig) -> dict:
    """Runs the stages 'subsets', 'estimate' and 'cluster' (after a stage named 'features');
    returns their arrays in one dict."""
    num_subsets, subset_size, k = config.subsets, config.subset_size, config.k
    l2, holdout = config.l2, config.holdout
    key_subsets, key_random = jax.random.split(key)
    subsets = stage(
        "subsets",
        lambda: {"subsets": pgx.sample_subsets(key_subsets, num_tasks, num_subsets, subset_size)},
        **ESTIMATION_STAGES["subsets"],
    )["subsets"]

    def estimate():
        solution = pgx.solve_subsets(feats, subsets, l2=l2, holdout=holdout)
        return {  # f̂ = loss reduction over θ* (see `pgx.estimate_subsets`)
            "scores": subset_scores(solution, config.score_on),
            "train_scores": subset_scores(solution, "train"),
            "heldout_scores": subset_scores(solution, "heldout"),
            # all four losses, so that every choice of score can be compared later
            "train_loss": solution.train_loss,
            "heldout_loss": solution.heldout_loss,
            "train_loss_at_zero": solution.train_loss_at_zero,
            "heldout_loss_at_zero": solution.heldout_loss_at_zero,
            "iterations": solution.iterations,
            "grad_norm": solution.grad_norm,
        }

    estimates = stage("estimate", estimate, **ESTIMATION_STAGES["estimate"])

    def cluster():
        U = affinity_of(subsets, estimates["scores"], config.task_effects)
        U_gradient = pgx.gradient_similarity_affinity(feats, num_tasks)
        return {
            "U": U,
            "U_gradient": U_gradient,
            "ours": pgx.cluster_tasks(U, k),
            "gradient_similarity": pgx.cluster_tasks(U_gradient, k),
            "random": pgx.random_groups(key_random, num_tasks, k),
        }

    return {"subsets": subsets, **estimates,
            **stage("cluster", cluster, **ESTIMATION_STAGES["cluster"])}


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


def plot_curves(curves: dict, xlabel: str = "adaptation step",
                ylabel: str = "mean return on unseen target tasks") -> bytes:
    """One line per curve: mean ± std over its rows (seeds) of f32[seeds, steps] (a PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():  # curve: [seeds, steps]
        mean, std = curve.mean(0), curve.std(0)
        steps = np.arange(mean.size)
        ax.plot(steps, mean, label=name)
        ax.fill_between(steps, mean - std, mean + std, alpha=0.15)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
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
