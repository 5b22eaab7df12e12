"""How far a ground truth can be trusted, and how the estimator's choices fare against it.

Shared by `experiments.validate`: split-half self-agreement of the truth with a bootstrap
interval, the chance level of every agreement figure, what of the truth is reproducible (per-task
levels vs the pairwise part the grouping needs), and the table of estimator choices (score, split,
per-task treatment: kept, removed or directed; l2, samples per task) scored against the truth.
"""

from __future__ import annotations

import jax
import numpy as np

import pgx_jax as pgx
from experiments._pipeline import TASK_EFFECTS, affinity_of

# How per-task effects are treated: eq. (5) on subset scores with them kept or removed, or the
# directed affinity of per-member scores (`pgx.directed_affinity`).
TREATMENTS = (*TASK_EFFECTS, "directed")


def member_matrix(subsets, per_member) -> np.ndarray:
    """Per-member values in subset order [m, α] (members ascending, as `subset_members`) → the
    [m, n] layout of `pgx.directed_affinity` (NaN outside each subset)."""
    subsets = np.asarray(subsets)
    out = np.full(subsets.shape, np.nan)
    rows, cols = np.nonzero(subsets)  # row-major: each row's members ascending
    out[rows, cols] = np.asarray(per_member, np.float64).reshape(-1)
    return out


def treated_affinity(subsets, scores, treatment: str) -> np.ndarray:
    """U under a treatment: `scores` f[m] for keep/remove, per-member f[m, n] for directed."""
    if treatment == "directed":
        return np.asarray(pgx.directed_affinity(subsets, scores))
    return affinity_of(subsets, scores, treatment, fill="mean")


def task_levels(subsets, scores) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares f(S) ≈ mean_{i∈S} b_i: the per-task levels b f64[n] and the residuals f64[m]
    (the pairwise part; `pgx.remove_task_effects` up to the constant)."""
    design = np.asarray(subsets, np.float64)
    design /= design.sum(1, keepdims=True)
    scores = np.asarray(scores, np.float64)
    levels = np.linalg.lstsq(design, scores, rcond=None)[0]
    return levels, scores - design @ levels


RELIABILITY_TARGET = 0.8  # split-half correlation of the pairwise part a trustworthy truth needs


def seeds_needed(halves: float, seeds_per_half: int, target: float) -> float:
    """Seeds (both halves together) for the halves to correlate at `target`, by Spearman–Brown
    from the correlation `halves` of two means of `seeds_per_half` seeds each (inf when it is ≤ 0:
    no signal to extrapolate). Indicative: Spearman–Brown is exact for Pearson correlations of
    means of exchangeable seeds."""
    if not halves > 0:
        return float("inf")
    one = halves / (seeds_per_half - (seeds_per_half - 1) * halves)  # one seed's reliability
    return float(2 * np.ceil(target * (1 - one) / (one * (1 - target)) - 1e-9))


def decompose(subsets, f_per_seed, f_hat) -> dict:
    """What of the truth is reproducible, and what of it the estimate predicts.

    f(S) splits into per-task levels (how much fine-tuning helps each task, whoever it is trained
    with) and a pairwise residual (what tasks add to each other: the grouping's signal). For each
    part: Spearman between the truth's two seed halves (is it reproducible?) and between the
    estimate and the whole truth (is it predicted?); the share of f's variance the levels
    explain; and how many seeds would make the pairwise part's halves correlate at
    RELIABILITY_TARGET (`seeds_needed`). Levels are compared over the n tasks, residuals over the
    m subsets.

    Args: subsets bool[m, n]; f_per_seed f[m, K]; f_hat f[m].
    """
    f = np.asarray(f_per_seed, np.float64)
    half = f.shape[1] // 2
    first, second = (task_levels(subsets, f[:, seeds].mean(1))
                     for seeds in (slice(0, half), slice(half, 2 * half)))
    levels, residual = task_levels(subsets, f.mean(1))
    levels_hat, residual_hat = task_levels(subsets, f_hat)
    total = f.mean(1)
    pairwise_halves = pgx.spearman(first[1], second[1])
    return {"levels_halves": pgx.spearman(first[0], second[0]),
            "pairwise_halves": pairwise_halves,
            "pairwise_seeds_needed": seeds_needed(pairwise_halves, half, RELIABILITY_TARGET),
            "levels_estimate": pgx.spearman(levels_hat, levels),
            "pairwise_estimate": pgx.spearman(residual_hat, residual),
            "levels_share": float(1 - residual.var() / total.var()),
            "levels_share_estimate": float(1 - residual_hat.var() / np.var(f_hat))}


def self_agreement(subsets, f_per_seed, k: int, treatment: str, *, draws: int,
                   seed: int) -> dict:
    """Groups from two disjoint halves of the truth's seeds, compared (NMI).

    `split`: the first K/2 seeds against the other K/2 (all subsets). The bootstrap redraws, `draws`
    times, a random split of the seeds into halves and the m subsets with replacement (pairs a
    resample misses get the mean of the covered ones), so its interval says how much the figure
    owes to which seeds and subsets happened to be drawn.

    Args:
      subsets: bool[m, n]; f_per_seed: f[m, K] (K ≥ 2), or per member f[m, K, n] for the
        "directed" treatment; k: groups; treatment: one of TREATMENTS.

    Returns: {"split", "median", "q05", "q95", "draws"} (NMI).
    """
    subsets, f = np.asarray(subsets), np.asarray(f_per_seed, np.float64)
    half = f.shape[1] // 2

    def agreement(rows, first, second):
        groups = [pgx.cluster_tasks(treated_affinity(subsets[rows], f[rows][:, seeds].mean(1),
                                                     treatment), k)
                  for seeds in (first, second)]
        return pgx.nmi(*groups)

    everything = np.arange(len(subsets))
    split = agreement(everything, np.arange(half), np.arange(half, 2 * half))
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(draws):
        order = rng.permutation(f.shape[1])
        scores.append(agreement(rng.integers(0, len(subsets), len(subsets)), order[:half],
                                order[half:2 * half]))
    scores = np.asarray(scores)
    return {"split": float(split), "median": float(np.median(scores)),
            "q05": float(np.quantile(scores, 0.05)), "q95": float(np.quantile(scores, 0.95)),
            "draws": draws}


def random_baseline(truth, k: int, *, draws: int, seed: int) -> dict:
    """NMI and AMI against `truth` of `draws` balanced random groupings (`pgx.random_groups`)."""
    keys = jax.random.split(jax.random.key(seed), draws)
    groups = [np.asarray(pgx.random_groups(key, len(truth), k)) for key in keys]
    nmi = np.array([pgx.nmi(g, truth) for g in groups])
    ami = np.array([pgx.ami(g, truth) for g in groups])
    return {"nmi_mean": float(nmi.mean()), "nmi_std": float(nmi.std()),
            "ami_mean": float(ami.mean()), "ami_std": float(ami.std()), "draws": draws}


def score_choices(losses: dict) -> dict:
    """Every f̂ the estimate stage can give: {(score, split): f32[m]} from its stored losses."""
    out = {}
    for split in ("train", "heldout"):
        loss, at_zero = losses[f"{split}_loss"], losses[f"{split}_loss_at_zero"]
        out["gain", split] = at_zero - loss
        out["loss", split] = -loss
    return out


def choices_table(subsets, estimate_losses: dict, f_true, k: int, extra_scores=None,
                  member_gains=None) -> list:
    """NMI vs the truth's groups and Spearman vs its f for each estimator choice.

    Rows: score (gain, loss) × split (train, heldout) × per-task effects (keep, remove), plus
    `extra_scores` {label: f32[m]} (other l2, fewer samples; scored with both treatments), plus,
    with `member_gains` = (estimated f[m, n], true f[m, n]) per-member gains, the directed
    treatment (train gain). The truth goes through the same per-task treatment as the estimate it
    is compared with.

    Returns: a list of {"score", "split", "task_effects", "variant", "nmi", "ami", "spearman"}.
    """
    subsets = np.asarray(subsets)
    truth_groups = {effects: pgx.cluster_tasks(affinity_of(subsets, f_true, effects), k)
                    for effects in TASK_EFFECTS}
    candidates = [(score, split, "default", f, TASK_EFFECTS) for (score, split), f in
                  score_choices(estimate_losses).items()]
    candidates += [("gain", "train", label, f, TASK_EFFECTS)
                   for label, f in (extra_scores or {}).items()]
    if member_gains is not None:
        estimate, truth = member_gains
        truth_groups["directed"] = pgx.cluster_tasks(treated_affinity(subsets, truth, "directed"), k)
        candidates.append(("gain", "train", "default", estimate, ("directed",)))
    rows = []
    for score, split, variant, f_hat, treatments in candidates:
        f_hat = np.asarray(f_hat, np.float64)
        if not np.all(np.isfinite(f_hat[subsets] if f_hat.ndim == 2 else f_hat)):
            continue  # e.g. held-out scores of a run without a holdout
        subset_level = f_hat if f_hat.ndim == 1 else np.nanmean(f_hat, axis=1)
        for effects in treatments:
            groups = pgx.cluster_tasks(treated_affinity(subsets, f_hat, effects), k)
            rows.append({"score": score, "split": split, "task_effects": effects,
                         "variant": variant,
                         "nmi": pgx.nmi(groups, truth_groups[effects]),
                         "ami": pgx.ami(groups, truth_groups[effects]),
                         "spearman": pgx.spearman(subset_level, f_true)})
    return rows
