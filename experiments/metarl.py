"""Meta-RL that can tell groupings apart (Table 2's meta-RL columns, a protocol that can
discriminate): `python -m experiments.metarl --env cartpole [--preset quick]`.

`experiments.control` starts MAML from θ*, which has seen all sources, so every meta-training set
ends near θ* and no grouping can differ. Here the question is first whether the choice of
meta-training tasks matters at all, and only then which grouping chooses well:

1. θ* and the groups as in `experiments.control` (ours, gradient similarity; the planted groups
   where the family has them).
2. A pool of k-task source sets: `--sets N` (default 30) uniformly random ones plus every
   one-task-per-group choice of each grouping, or every one of the C(n, k) (`--sets 0`; 120
   for 10 tasks and k = 3).
3. MAML from a random initialization on every set of the pool (so the source set, not θ*, shapes
   the result), then adaptation to the same unseen targets with `--adapt-steps` policy-gradient
   steps (the paper's 200; the quick preset's 20). Seeds are paired: seed s uses the same
   initialization and sampling keys for every set (common random numbers), so differences
   between sets are measured within a seed. Each seed is one task of the executor (`--executor
   ray` spreads them); inside a seed every set is meta-trained in one vmapped call per chunk.
   Each set is scored twice: by the return after the last adaptation step (the paper's) and by
   the mean over the adaptation curve (the speed of adaptation: where every set reaches the
   ceiling by the last step, only this can still differ); every figure below is given for both.
4. Headroom: the spread of the sets' mean adapted return against the seed noise of such a mean
   (two-way sets × seeds ANOVA: between-set standard deviation ÷ the residual standard error of
   a set's mean, and its F-test p). The issue's gate: the spread must exceed twice the noise.
5. Oracle and anti-oracle, cross-fitted so that neither is chosen on the seeds that score it:
   the best (worst) set of the pool by mean over one half of the seeds, scored on the other
   half, and the other way round. They bracket what any grouping can do.
6. Each grouping's value on a seed is its expectation over all its one-task-per-group choices
   (the mean over those sets), so the draw of one set per group adds no noise; random is the mean
   over all sets of the pool's random part (the expectation of k distinct random tasks). Paired
   differences (ours − random, ours − gradient similarity, oracle − anti-oracle) with t
   confidence intervals, and the smallest difference these seeds detect with 80% power.

Writes results/metarl/<env>/<run>/: report.md, metrics.json, adaptation.png, meta_training.png
and the stages (one per seed, resumable).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from pathlib import Path

import jax
import numpy as np
from scipy import optimize, stats

from experiments import cartpole, control, validate
from experiments._pipeline import (
    ExecutorConfig,
    finish_run,
    group_lists,
    parse_config,
    plot_curves,
    require,
    require_ints,
    require_numbers,
    start_run,
)
from experiments._runner import atomic_write_bytes, atomic_write_json, run_cli
from pgx_jax.executor import InProcess
from pgx_jax.rl.maml import make_adapt_eval, make_meta_train

SEPARATION_TARGET = 3.0  # oracle − anti-oracle in standard errors (the target)
HEADROOM_TARGET = 2.0  # between-set spread ÷ the seed noise of a set's mean


@dataclasses.dataclass(frozen=True)
class Config(control.Config, ExecutorConfig):  # Executor: the seeds
    preset: str = "default"
    # Default: the paper's 200 adaptation steps, ~1.5 h per 10 seeds on CartPole on 2 cores
    # (quick: ~15 min); `--sets 0` meta-trains on all C(n, k) sets (120 for 10 tasks, k = 3).
    seeds: int = 10
    targets: int = 10
    adapt_steps: int = 200
    maml_init: str = "random"
    maml_outer_steps: int = 200
    outer_lr: float = 3e-3
    sets: int = 30  # N random k-task source sets + the groupings' choices; 0: every k-task set
    set_chunk: int = 64  # source sets meta-trained and adapted in one vmapped call
    confidence: float = 0.95
    power: float = 0.8
    out: str = "results/metarl"

    PRESET_DEFAULTS = {
        "default": {},
        "quick": {"seeds": 6, "adapt_steps": 20, "maml_outer_steps": 100},
    }
    RUN_CONTROL = cartpole.Config.RUN_CONTROL + ("preset", "set_chunk") + ExecutorConfig.RUN_CONTROL
    STAGE_NAMES = control.Config.STAGE_NAMES + ("pool", "sets")

    def check(self) -> None:
        require(self.preset in self.PRESET_DEFAULTS, f"--preset must be one of "
                f"{', '.join(self.PRESET_DEFAULTS)}, got {self.preset!r}")
        super().check()
        self.check_executor()
        require_ints(self, 3, "seeds")  # a paired t-test on 2 seeds has 1 degree of freedom
        # The protocol meta-trains every set from a random init (from θ*, which saw all sources,
        # every set ends near θ*: experiments.control); θ* as the start is not implemented here.
        require(self.maml_init == "random", "--maml-init must be 'random' for the meta-RL "
                f"protocol (θ* as MAML's start is experiments.control's), got {self.maml_init!r}")
        require_ints(self, 0, "sets")
        require_ints(self, 1, "set_chunk")
        require_numbers(self, 0, 1, "confidence", "power", open_low=True)
        require(self.confidence < 1 and self.power < 1, "--confidence and --power must be < 1")
        require(1 <= self.k < self.num_tasks, f"--k must lie in [1, {self.num_tasks - 1}], got "
                                              f"{self.k}")


STAGES = {
    "pool": {"uses": ("seed", "sets", "k"), "inputs": ("cluster",)},
    "sets": {"uses": ("maml_init", "inner_lr", "outer_lr", "maml_envs", "maml_horizon",
                      "maml_outer_steps", "adapt_steps"),
             "inputs": ("targets", "pool")},
}


def one_per_group_sets(labels) -> np.ndarray:
    """Every choice of one task per group: int[∏ group sizes, groups], rows sorted."""
    return np.array(sorted(tuple(sorted(c)) for c in itertools.product(*group_lists(labels))),
                    np.int32).reshape(-1, len(group_lists(labels)))


def source_pool(num_tasks: int, k: int, groupings: dict, sets: int, rng) -> dict:
    """The k-task source sets to meta-train on: {"sets": int[P, k], "random": bool[P] (the
    uniform part that the random row averages), <grouping>: bool[P] (its one-per-group choices)}.
    `sets` = 0: all C(n, k); otherwise `sets` distinct random sets plus the groupings' choices."""
    every = [tuple(c) for c in itertools.combinations(range(num_tasks), k)]
    if sets == 0 or sets >= len(every):
        random_part = every
    else:
        random_part = [every[i] for i in sorted(rng.choice(len(every), sets, replace=False))]
    chosen = {name: [tuple(map(int, row)) for row in one_per_group_sets(labels)]
              for name, labels in groupings.items()}
    pool = sorted(set(random_part).union(*chosen.values()))
    index = {s: i for i, s in enumerate(pool)}

    def mask(members):
        out = np.zeros(len(pool), bool)
        out[[index[s] for s in members]] = True
        return out

    return {"sets": np.array(pool, np.int32), "random": mask(random_part),
            **{name: mask(members) for name, members in chosen.items()}}


class SeedSets:
    """One seed = MAML from the seed's initialization on every set of the pool, then adaptation
    to the targets (an executor's batch; picklable: it holds parameters and arrays only).
    Returns per seed: adapted f32[P, adapt_steps + 1] (mean over targets), meta f32[P, outer]
    (MAML's post-adaptation return along meta-training), and the same for MAML on all sources."""

    def __init__(self, config: Config, sources, targets, pool: np.ndarray):
        self.config, self.sources, self.targets, self.pool = config, sources, targets, pool
        self.names = [f"sets.seed{s}" for s in range(config.seeds)]

    def __call__(self, names: list[str]) -> dict:
        config, maml = self.config, self.config.maml()
        family = config.spec.make(self.sources)
        target_family = config.spec.make(self.targets)
        train = jax.jit(jax.vmap(make_meta_train(maml, family), in_axes=(None, 0)))
        evaluate = jax.jit(jax.vmap(make_adapt_eval(maml, target_family),
                                    in_axes=(None, 0, None, None)), static_argnums=3)
        target_ids = np.arange(target_family.num_tasks)
        out = {}
        for name in names:
            seed = int(name.rsplit("seed", 1)[1])
            key_train, key_eval = jax.random.split(jax.random.fold_in(
                jax.random.key(config.seed + 300), seed))
            adapted, meta, begin = [], [], time.perf_counter()
            for start in range(0, len(self.pool), config.set_chunk):
                chunk = self.pool[start:start + config.set_chunk]
                result = train(key_train, chunk)  # same init and keys for every set: paired
                meta.append(np.asarray(result.metrics["post_adaptation_return"]))
                adapted.append(np.asarray(evaluate(key_eval, result.params, target_ids,
                                                   config.adapt_steps)).mean(1))
                print(f"  seed {seed}: {start + len(chunk)} of {len(self.pool)} source sets "
                      f"({time.perf_counter() - begin:.0f} s)", flush=True)
            every = train(key_train, np.arange(family.num_tasks, dtype=np.int32)[None])
            out[name] = {"adapted": np.concatenate(adapted), "meta": np.concatenate(meta),
                         "all_adapted": np.asarray(evaluate(key_eval, every.params, target_ids,
                                                            config.adapt_steps)).mean(1)[0],
                         "all_meta": np.asarray(every.metrics["post_adaptation_return"])[0]}
        return out


def headroom(R: np.ndarray) -> dict:
    """R f32[S seeds, P sets]: the sets' spread against the seed noise of a set's mean (two-way
    ANOVA without interaction: paired seeds share their seed effect, which is removed)."""
    S, P = R.shape
    means = R.mean(0)
    residual = R - R.mean(1, keepdims=True) - means + R.mean()
    residual_var = float(np.sum(residual ** 2) / ((S - 1) * (P - 1)))
    noise = math.sqrt(residual_var / S)  # standard error of one set's mean
    spread = float(means.std(ddof=1))
    F = S * spread ** 2 / residual_var if residual_var > 0 else math.inf
    return {"spread": spread, "noise": noise, "ratio": spread / noise if noise else math.inf,
            "seed_std": math.sqrt(residual_var), "F": F,
            "p_value": float(stats.f.sf(F, P - 1, (S - 1) * (P - 1))),
            "best": float(means.max()), "worst": float(means.min())}


def cross_fitted_extremes(R: np.ndarray) -> dict:
    """Oracle and anti-oracle per seed, each chosen on the other half of the seeds: f32[S] each,
    and the sets chosen (int per half)."""
    S = R.shape[0]
    halves = (np.arange(S) < S // 2, np.arange(S) >= S // 2)
    oracle, anti = np.empty(S), np.empty(S)
    chosen = {"oracle": [], "anti_oracle": []}
    for choose, score in (halves, halves[::-1]):
        means = R[choose].mean(0)
        best, worst = int(np.argmax(means)), int(np.argmin(means))
        oracle[score], anti[score] = R[score, best], R[score, worst]
        chosen["oracle"].append(best)
        chosen["anti_oracle"].append(worst)
    return {"oracle": oracle, "anti_oracle": anti, "chosen": chosen}


def paired(a: np.ndarray, b: np.ndarray, confidence: float, power: float) -> dict:
    """a − b paired by seed: mean, standard error, t interval, two-sided p, wins, and the
    smallest true difference these seeds would detect with `power` (paired t-test)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    n = d.size
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    t = d.mean() / se if se > 0 else math.copysign(math.inf, d.mean()) if d.mean() else 0.0
    return {"mean": float(d.mean()), "se": se, "low": float(d.mean()) - half,
            "high": float(d.mean()) + half,
            "p_value": float(2 * stats.t.sf(abs(t), n - 1)) if math.isfinite(t) else 0.0,
            "t": float(t), "wins": int(np.sum(d > 0)), "n": n,
            "detectable": detectable_difference(sd, n, 1 - confidence, power)}


def detectable_difference(sd: float, n: int, alpha: float, power: float) -> float:
    """The true mean difference a two-sided paired t-test at level `alpha` on n pairs with
    difference std `sd` rejects with probability `power` (noncentral t, exact)."""
    if sd <= 0:
        return 0.0
    df, critical = n - 1, float(stats.t.ppf(1 - alpha / 2, n - 1))

    def shortfall(delta):
        nc = delta * math.sqrt(n) / sd
        return stats.nct.sf(critical, df, nc) + stats.nct.cdf(-critical, df, nc) - power

    high = sd
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high, xtol=1e-10 * sd))


# How a set's adaptation curve f32[..., adapt_steps + 1] is scored: the return after the last
# step (the paper's), and the mean over the curve (how fast the meta-initialization adapts;
# where every set reaches the ceiling by the last step, only this can still differ).
SCORES = {"final": lambda curve: curve[..., -1], "curve_mean": lambda curve: curve.mean(-1)}
SCORE_NAMES = {"final": "return after the last adaptation step (the paper's)",
               "curve_mean": "mean return over the adaptation curve (speed of adaptation)"}


def summarize(config: Config, pool: dict, runs: dict, groupings: dict,
              score: str = "final") -> dict:
    """The protocol's figures from the seeds' stored results, each set scored by `score`."""
    names = sorted(runs, key=lambda n: int(n.rsplit("seed", 1)[1]))
    R = np.stack([SCORES[score](runs[n]["adapted"]) for n in names])  # [S, P]
    R0 = np.stack([runs[n]["adapted"][:, 0] for n in names])  # before
    rows = {name: R[:, pool[name]].mean(1) for name in groupings}
    rows["random"] = R[:, pool["random"]].mean(1)
    rows["all_sources"] = np.array([SCORES[score](runs[n]["all_adapted"]) for n in names])
    extremes = cross_fitted_extremes(R)  # over every set of the pool: the best one found
    rows["oracle"], rows["anti_oracle"] = extremes["oracle"], extremes["anti_oracle"]
    before = {name: R0[:, pool[name]].mean(1) for name in (*groupings, "random")}
    room = headroom(R[:, pool["random"]])
    c, p = config.confidence, config.power
    comparisons = {"oracle − anti-oracle": paired(rows["oracle"], rows["anti_oracle"], c, p)}
    for name in groupings:
        if name != "ours":
            comparisons[f"ours − {name}"] = paired(rows["ours"], rows[name], c, p)
    comparisons["ours − random"] = paired(rows["ours"], rows["random"], c, p)
    set_means = R[:, pool["random"]].mean(0)
    percentile = {name: float(np.mean(set_means < R[:, pool[name]].mean())) for name in groupings}
    separation = comparisons["oracle − anti-oracle"]
    return {"rows": rows, "before": before, "headroom": room, "comparisons": comparisons,
            "percentile_among_sets": percentile, "set_means": R.mean(0),
            "extremes_chosen": {k: [pool["sets"][i].tolist() for i in v]
                                for k, v in extremes["chosen"].items()},
            "discriminates": bool(room["ratio"] > HEADROOM_TARGET
                                  and separation["mean"] > SEPARATION_TARGET * separation["se"]),
            "curves": {name: np.stack([runs[n]["adapted"][pool[name]].mean(0) for n in names])
                       for name in (*groupings, "random")},
            "meta_curves": np.stack([runs[n]["meta"][pool["random"]].mean(0) for n in names])}


ROW_NAMES = {"oracle": "oracle (best set, cross-fitted)", "ours": "ours (one per group, expected)",
             "gradient_similarity": "gradient similarity (expected)",
             "planted": "planted groups (expected)", "random": "random k tasks (expected)",
             "all_sources": "MAML on all sources",
             "anti_oracle": "anti-oracle (worst set, cross-fitted)"}


def header_lines(config: Config, pool: dict, groupings: dict, maml) -> list[str]:
    P = int(pool["random"].sum())
    return [
        f"# Meta-RL that can tell groupings apart: {config.env}", "",
        f"Run `{config.run}`; {config.num_tasks} sources, k = {config.k}; {len(pool['sets'])} "
        f"source sets ({P} in the uniform part: "
        f"{'all' if config.sets == 0 else 'a random sample'} of C({config.num_tasks}, {config.k}) "
        f"= {math.comb(config.num_tasks, config.k)}). MAML (second order) from "
        f"{'a random init' if config.maml_init == 'random' else 'θ*'}, {maml.num_outer_steps} "
        f"outer steps of {maml.meta_batch_size} tasks, outer lr {maml.outer_lr}, inner lr "
        f"{maml.inner_lr}, batches of {maml.num_envs} episodes × {maml.num_steps} steps; "
        f"{config.adapt_steps} adaptation steps on {config.targets} unseen targets; "
        f"{config.seeds} paired seeds (the same init and sampling keys for every set).", "",
        "Groups: " + "; ".join(f"{name} {group_lists(labels)}"
                               for name, labels in groupings.items()) + ".", ""]


def score_lines(config: Config, pool: dict, summary: dict, score: str) -> list[str]:
    """One score's section: headroom, verdict, the rows and the paired differences."""
    room, rows = summary["headroom"], summary["rows"]
    S, P = config.seeds, int(pool["random"].sum())
    paper = control.PAPER_TABLE2.get(config.env, {}) if score == "final" else {}
    verdict = ("the protocol discriminates" if summary["discriminates"] else
               "the protocol does NOT discriminate on this family with this score: the "
               "comparisons below cannot rank groupings")
    order = ("oracle", "ours", "gradient_similarity", "planted", "random", "all_sources",
             "anti_oracle")
    lines = [
        f"## Scored by the {SCORE_NAMES[score]}", "",
        f"**Headroom**: the sets' mean scores spread by {room['spread']:.2f} (std over "
        f"{P} sets; best {room['best']:.1f}, worst {room['worst']:.1f}) against a seed noise of "
        f"{room['noise']:.2f} per set mean ({room['seed_std']:.2f} per run): ratio "
        f"**{room['ratio']:.1f}** (target > {HEADROOM_TARGET:.0f}; F-test p = "
        f"{room['p_value']:.2g}). Oracle − anti-oracle: "
        f"{summary['comparisons']['oracle − anti-oracle']['t']:.1f} standard errors (target > "
        f"{SEPARATION_TARGET:.0f}). Verdict: {verdict}.", "",
        "| meta-training set | before adaptation | score (mean ± std over seeds) | "
        "percentile among the sets | paper |", "|---|---|---|---|---|",
    ]
    for name in order:
        if name not in rows:
            continue
        before = summary["before"].get(name)
        cell = "—" if before is None else f"{before.mean():.1f}"
        pct = summary["percentile_among_sets"].get(name)
        lines.append(f"| {ROW_NAMES[name]} | {cell} | {rows[name].mean():.1f} ± "
                     f"{rows[name].std(ddof=1):.1f} | {'—' if pct is None else f'{pct:.0%}'} | "
                     f"{paper.get(name, '—')} |")
    lines += ["", f"Paired differences ({config.confidence:.0%} t intervals over {S} seeds; "
                  f"detectable: the smallest true difference found with {config.power:.0%} power):",
              "", "| difference | mean | interval | p | seeds won | detectable |",
              "|---|---|---|---|---|---|"]
    for name, d in summary["comparisons"].items():
        lines.append(f"| {name} | {d['mean']:+.2f} | [{d['low']:+.2f}, {d['high']:+.2f}] | "
                     f"{d['p_value']:.2g} | {d['wins']} of {d['n']} | {d['detectable']:.2f} |")
    lines += ["", f"Oracle sets (chosen on each half): {summary['extremes_chosen']['oracle']}; "
              f"anti-oracle: {summary['extremes_chosen']['anti_oracle']}.", ""]
    return lines


def main(argv=None) -> dict:
    config = parse_config(Config, argv, __doc__.split("\n")[0],
                          defaults_by_env=cartpole.ENV_DEFAULTS)
    executor = config.make_executor()  # before any work
    run_dir = Path(config.out) / config.env / config.run
    print(f"pgx_jax meta-RL protocol ({config.env}) -> {run_dir}")
    stage = start_run(run_dir, config)
    sources = config.sources()
    family = config.spec.make(sources)
    out = cartpole.pipeline(config, stage, run_dir, family=family)
    clusters = out["clusters"]
    groupings = {"ours": clusters["ours"], "gradient_similarity": clusters["gradient_similarity"]}
    if config.spec.planted is not None and config.k == len(set(config.spec.planted)):
        groupings["planted"] = np.asarray(config.spec.planted)
    targets = stage("targets", lambda: {"params": np.asarray(config.spec.sample_targets(
        np.random.default_rng(config.seed + 100), config.targets))},
        **control.STAGES["targets"])["params"]
    pool = stage("pool", lambda: source_pool(family.num_tasks, config.k, groupings, config.sets,
                                             np.random.default_rng(config.seed + 101)),
                 **STAGES["pool"])
    pool = {k: np.asarray(v) for k, v in pool.items()}
    seed_sets = SeedSets(config, sources, targets, pool["sets"])
    maml = config.maml()
    per_run = (config.targets * (config.adapt_steps + 1)
               + 2 * maml.meta_batch_size * maml.num_outer_steps) * maml.num_envs * maml.num_steps
    print(f"{len(pool['sets'])} source sets × {config.seeds} seeds: MAML from "
          f"{config.maml_init} init, then {config.adapt_steps} adaptation steps on "
          f"{config.targets} targets ({per_run * len(pool['sets']):,} "
          f"env steps per seed; {executor.name})")
    if isinstance(executor, InProcess):
        executor = InProcess(chunk=1)  # one seed per call: each stored as it finishes
    bar = validate.stored_runs_bar(executor.name, per_run * len(pool["sets"]),
                                   "{total} seeds of every source set")
    runs = stage.batch(seed_sets.names, seed_sets, executor=executor, progress=bar,
                       **STAGES["sets"])
    summaries = {score: summarize(config, pool, runs, groupings, score) for score in SCORES}
    summary = summaries["final"]
    lines = header_lines(config, pool, groupings, maml)
    for score, result in summaries.items():
        lines += score_lines(config, pool, result, score)
    lines += ["## Stage timings (s)", "",
              *[f"- {name}: {seconds:.2f}" for name, seconds in stage.timings.items()], ""]
    metrics = {"config": dataclasses.asdict(config), "sets": pool["sets"],
               "groups": {name: labels for name, labels in groupings.items()},
               "theta_star_source_returns": out["returns"], "target_params": targets,
               "scores": {score: {k: v for k, v in result.items()
                                  if k not in ("curves", "meta_curves")}
                          for score, result in summaries.items()},
               "meta_curves": summary["meta_curves"], "stage_seconds": stage.timings}
    atomic_write_json(run_dir / "metrics.json", metrics)
    finish_run(stage)
    atomic_write_bytes(run_dir / "adaptation.png", plot_curves(
        summary["curves"], "adaptation step", "mean return on unseen targets (expected over sets)"))
    atomic_write_bytes(run_dir / "meta_training.png", plot_curves(
        {"mean over the sets": summary["meta_curves"]}, "MAML outer step",
        "post-adaptation return on the sources"))
    atomic_write_bytes(run_dir / "report.md", "\n".join(lines).encode())
    print("\n" + "\n".join(lines))
    return metrics


if __name__ == "__main__":
    run_cli(main)
