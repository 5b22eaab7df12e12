"""How far a ground truth can be trusted, and how the estimator's choices fare against it.

Shared by `experiments.validate`: split-half self-agreement of the truth with a bootstrap
interval, the chance level of every agreement figure, and the table of estimator choices
(score, split, per-task effects, l2, samples per task) scored against the truth.
"""

from __future__ import annotations

import jax
import numpy as np

import pgx_jax as pgx
from experiments._pipeline import TASK_EFFECTS, affinity_of


def self_agreement(subsets, f_per_seed, k: int, task_effects: str, *, draws: int,
                   seed: int) -> dict:
    """Groups from two disjoint halves of the truth's seeds, compared (NMI).

    `split`: the first K/2 seeds against the other K/2 (all subsets). The bootstrap redraws, `draws`
    times, a random split of the seeds into halves and the m subsets with replacement (pairs a
    resample misses get the mean of the covered ones), so its interval says how much the figure
    owes to which seeds and subsets happened to be drawn.

    Args:
      subsets: bool[m, n]; f_per_seed: f[m, K] (K ≥ 2); k: groups.

    Returns: {"split", "median", "q05", "q95", "draws"} (NMI).
    """
    subsets, f = np.asarray(subsets), np.asarray(f_per_seed, np.float64)
    half = f.shape[1] // 2

    def agreement(rows, first, second):
        groups = [pgx.cluster_tasks(affinity_of(subsets[rows], f[rows][:, seeds].mean(1),
                                                   task_effects, fill="mean"), k)
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


def choices_table(subsets, estimate_losses: dict, f_true, k: int, extra_scores=None) -> list:
    """NMI vs the truth's groups and Spearman vs its f for each estimator choice.

    Rows: score (gain, loss) × split (train, heldout) × per-task effects (keep, remove), plus
    `extra_scores` {label: f32[m]} (other l2, fewer samples; scored with both treatments). The
    truth goes through the same per-task treatment as the estimate it is compared with.

    Returns: a list of {"score", "split", "task_effects", "variant", "nmi", "ami", "spearman"}.
    """
    subsets = np.asarray(subsets)
    truth_groups = {effects: pgx.cluster_tasks(affinity_of(subsets, f_true, effects), k)
                    for effects in TASK_EFFECTS}
    candidates = [(score, split, "default", f) for (score, split), f in
                  score_choices(estimate_losses).items()]
    candidates += [("gain", "train", label, f) for label, f in (extra_scores or {}).items()]
    rows = []
    for score, split, variant, f_hat in candidates:
        f_hat = np.asarray(f_hat, np.float64)
        if not np.all(np.isfinite(f_hat)):
            continue  # e.g. held-out scores of a run without a holdout
        for effects in TASK_EFFECTS:
            groups = pgx.cluster_tasks(affinity_of(subsets, f_hat, effects), k)
            rows.append({"score": score, "split": split, "task_effects": effects,
                         "variant": variant,
                         "nmi": pgx.nmi(groups, truth_groups[effects]),
                         "ami": pgx.ami(groups, truth_groups[effects]),
                         "spearman": pgx.spearman(f_hat, f_true)})
    return rows
