"""Figure 2 of the paper: the Hessian trace of the policy-gradient loss next to the generalization
error, along training (2a) and against the number of tasks α trained together (2b).

The loss is the paper's surrogate policy-gradient loss with the exact log-ratio in place of its
first-order expansion: for transitions collected at θ*, with y = sign(Â) and w = |Â|,

    ℓ_t(θ) = w_t · softplus(−y_t · (log π_θ(a_t|s_t) − log π_θ*(a_t|s_t))),

so ℓ_t(θ*) = w_t · log 2. "Training" on a subset S of tasks minimizes the mean ℓ over the train
split of S's samples with full-batch Adam from θ* (actor parameters only); the test split is the
held-out tail of the same tasks (`split_masks`), and the generalization error is test − train loss.

At each checkpoint the trace of the train loss's Hessian is estimated from Hessian-vector products
(`pgx_jax.diagnostics.hessian_trace`) and plugged into the leading term of Theorem 1,
L̂ + sqrt(C · max(H, 0) / n). This Hessian is indefinite (the log-ratio's own curvature enters with
the sign of y), so the trace can be negative, and the Hutch++ variance guarantee of Meyer et al.
(2021), which is stated for PSD matrices, does not apply: both estimators stay unbiased, and
Hutchinson is reported next to Hutch++ as a check.
"""

from __future__ import annotations

import io
import itertools
import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pgx_jax._validate import (
    as_array,
    check_finite,
    check_int,
    check_key,
    check_leading,
    check_task_ids,
)
from pgx_jax.diagnostics import generalization_bound, hessian_trace
from pgx_jax.features import labels_and_weights


class _Samples(NamedTuple):
    """The inputs of the surrogate loss for a set of samples (a pytree; host numpy arrays)."""

    obs: np.ndarray  # f32[m, o]
    action: np.ndarray  # [m, ...]
    y: np.ndarray  # f32[m], sign(Â)
    w: np.ndarray  # f32[m], |Â|
    log_prob_star: np.ndarray  # f32[m], log π_θ*(a|s)


def _check_holdout(holdout) -> float:
    if not 0.0 < float(holdout) < 1.0:
        raise ValueError(f"holdout must lie in (0, 1) so that both splits exist, got {holdout!r}")
    return float(holdout)


def split_masks(task, num_tasks: int, holdout: float) -> tuple[np.ndarray, np.ndarray]:
    """Train / test masks: the last `holdout` share of each task's samples is its test split.

    Same rule as `pgx_jax.surrogate` (`_task_layout`): a task with c samples holds out its last
    round(holdout · c) samples in batch order, clipped to [1, c − 1], so every task with samples
    has a test sample and, when c ≥ 2, a train sample. `collect_transitions` lays a task's samples
    out env by env, so the test tail is whole trajectories.

    Args:
      task: int[N] task ids in [0, num_tasks).
      num_tasks: n, a positive int.
      holdout: share of each task's samples held out, in (0, 1).
    Returns:
      (train: bool[N], test: bool[N]), disjoint and together covering every sample.
    """
    num_tasks = check_int("num_tasks", num_tasks, minimum=1)
    holdout = _check_holdout(holdout)
    task = np.asarray(as_array("task", task, ndim=1, kind="i"))
    check_task_ids(task, num_tasks)
    counts = np.bincount(task, minlength=num_tasks)
    n_test = np.clip(np.round(holdout * counts), 1, np.maximum(counts - 1, 1)).astype(np.int64)
    # rank of every sample among its task's samples, in batch order
    order = np.argsort(task, kind="stable")
    starts = np.cumsum(counts) - counts
    rank = np.empty(task.size, np.int64)
    rank[order] = np.arange(task.size) - starts[task[order]]
    test = rank >= (counts - n_test)[task]
    return ~test, test


def _check_log_prob_fn(log_prob_fn) -> None:
    try:
        hash(log_prob_fn)
    except TypeError as err:
        raise ValueError(
            "log_prob_fn must be hashable (it is a static argument of jit), e.g. "
            "agent.actor.log_prob or a module-level function"
        ) from err


@partial(jax.jit, static_argnames=("log_prob_fn",))
def _labels_and_log_probs(log_prob_fn, actor_star, obs, action, advantage):
    """(y, w, log π_θ*(a|s)), each f32[N]."""
    y, w = labels_and_weights(advantage)
    return y, w, jax.vmap(log_prob_fn, in_axes=(None, 0, 0))(actor_star, obs, action)


def _all_samples(log_prob_fn, actor_star, obs, action, advantage, task):
    """Checks the batch; returns (`_Samples` of all N samples, task: int[N] on the host)."""
    _check_log_prob_fn(log_prob_fn)
    if not jax.tree_util.tree_leaves(actor_star):
        raise ValueError("actor_star has no array leaves")
    obs, action = as_array("obs", obs), as_array("action", action)
    advantage = as_array("advantage", advantage, ndim=1, kind="f")
    task = as_array("task", task, ndim=1, kind="i")
    if check_leading(("obs", "action", "advantage", "task"), (obs, action, advantage, task)) == 0:
        raise ValueError("the batch is empty (N = 0)")
    for name, x in (("obs", obs), ("action", action), ("advantage", advantage)):
        check_finite(name, x)
    check_task_ids(task)
    y, w, log_prob_star = _labels_and_log_probs(log_prob_fn, actor_star, obs, action, advantage)
    check_finite("log_prob_fn at actor_star", log_prob_star)
    samples = _Samples(*(np.asarray(x) for x in (obs, action, y, w, log_prob_star)))
    return samples, np.asarray(task)


def _subset_splits(samples: _Samples, task: np.ndarray, subset: np.ndarray, holdout: float):
    """(train, test) `_Samples` of the tasks in `subset: bool[n]`."""
    train, test = split_masks(task, subset.size, holdout)
    chosen = subset[task]
    train_split = _Samples(*(x[train & chosen] for x in samples))
    test_split = _Samples(*(x[test & chosen] for x in samples))
    if train_split.w.size == 0:
        raise ValueError("the subset's tasks have no train samples (a task needs at least 2)")
    if test_split.w.size == 0:
        raise ValueError("the subset's tasks have no samples")
    return train_split, test_split


def _per_sample_loss(log_prob_fn, actor, samples: _Samples) -> jax.Array:
    """ℓ_t(θ) = w_t softplus(−y_t (log π_θ − log π_θ*)): f32[m]."""
    log_ratio = jax.vmap(log_prob_fn, in_axes=(None, 0, 0))(actor, samples.obs, samples.action)
    log_ratio = log_ratio - samples.log_prob_star
    return samples.w * jax.nn.softplus(-samples.y * log_ratio)


def _mean_loss(log_prob_fn, actor, samples: _Samples) -> jax.Array:
    return jnp.mean(_per_sample_loss(log_prob_fn, actor, samples))


@partial(jax.jit, static_argnames=("log_prob_fn", "num_steps"))
def _adam_steps(log_prob_fn, actor, opt_state, train: _Samples, lr, num_steps: int):
    """`num_steps` full-batch Adam steps on the mean train loss in one scan: (actor, opt_state)."""
    tx = optax.adam(lr)
    grad = jax.grad(partial(_mean_loss, log_prob_fn, samples=train))

    def step(carry, _):
        actor, opt_state = carry
        updates, opt_state = tx.update(grad(actor), opt_state, actor)
        return (optax.apply_updates(actor, updates), opt_state), None

    return jax.lax.scan(step, (actor, opt_state), length=num_steps)[0]


def _fit(log_prob_fn, actor_star, train: _Samples, lr: float, checkpoints: int,
         steps_between: int) -> list:
    """Full-batch Adam from θ*: [θ*, the actor after every `steps_between` steps] (K + 1)."""
    state = (actor_star, optax.adam(lr).init(actor_star))  # Adam's state does not depend on lr
    actors = [actor_star]
    for _ in range(checkpoints):
        state = _adam_steps(log_prob_fn, *state, train, lr, steps_between)
        actors.append(state[0])
    return actors


@partial(jax.jit, static_argnames=("log_prob_fn",))
def _losses(log_prob_fn, actor, train: _Samples, test: _Samples) -> dict:
    """Mean train and test loss and the largest per-sample train loss (the stand-in for C)."""
    per_sample = _per_sample_loss(log_prob_fn, actor, train)
    return {
        "train_loss": jnp.mean(per_sample),
        "test_loss": _mean_loss(log_prob_fn, actor, test),
        "loss_bound": jnp.max(per_sample),
    }


@partial(jax.jit, static_argnames=("log_prob_fn", "num_products", "method"))
def _train_trace(log_prob_fn, actor, train: _Samples, key, num_products: int, method: str):
    """Estimate of the trace of the train loss's Hessian at `actor`: f32[]."""
    # The loss closes over this trace's arguments, so it is built (and `hessian_trace`'s inner
    # jit traced) once per compilation here, not once per call.
    loss = partial(_mean_loss, log_prob_fn, samples=train)
    return hessian_trace(loss, actor, key, num_products, method)


def _check_training(steps, checkpoints, lr, num_products) -> tuple[int, int, float, int]:
    steps = check_int("steps", steps, minimum=1)
    checkpoints = check_int("checkpoints", checkpoints, minimum=1)
    if steps % checkpoints:
        raise ValueError(
            f"steps={steps} must be a multiple of checkpoints={checkpoints} (equal segments "
            "between checkpoints run as one compiled scan)"
        )
    if not (math.isfinite(float(lr)) and float(lr) > 0):
        raise ValueError(f"lr must be positive and finite, got {lr!r}")
    num_products = check_int("num_products", num_products, minimum=3)
    if num_products % 3:
        raise ValueError(f"num_products must be a multiple of 3 (Hutch++), got {num_products}")
    return steps, checkpoints, float(lr), num_products


def training_curve(log_prob_fn, actor_star, obs, action, advantage, task, subset, key, *,
                   steps: int = 200, lr: float = 1e-3, checkpoints: int = 10,
                   num_products: int = 30, holdout: float = 0.2) -> dict:
    """Generalization error, Hessian trace and Theorem 1 bound along training (Fig. 2a).

    Trains the actor from θ* with full-batch Adam on the mean surrogate loss of the train split of
    `subset`'s tasks, and at step 0 and every `steps / checkpoints` steps measures the train and
    test loss, the trace of the train loss's Hessian (Hutch++ and Hutchinson, `num_products`
    Hessian-vector products each) and the bound

        bound = train + sqrt(C · max(trace_hutchpp, 0) / n_train),

    with C the largest per-sample train loss at that checkpoint. Theorem 1 needs a bound C on the
    loss over the whole data distribution, which this loss (unbounded in the log-ratio) does not
    have: the empirical maximum is a stand-in. The theorem also assumes n independent samples,
    while the samples of one trajectory are correlated, so the bound is indicative, not a
    guarantee. The Hessian is indefinite, so a trace can be negative (the bound clips it at 0) and
    Hutch++'s PSD-only variance guarantee does not hold here.

    Args:
      log_prob_fn: `log_prob_fn(actor, obs, action) -> f32[]`, log π of ONE sample (hashable,
        e.g. `agent.actor.log_prob`).
      actor_star: θ*, the actor's params (any pytree of float arrays).
      obs: f32[N, o]; action: [N, ...]; advantage: f32[N]; task: int[N] in [0, n), as returned
        by `collect_transitions` (each task's samples contiguous, trajectories whole).
      subset: bool[n], the tasks S to train on.
      key: PRNG key for the trace estimators.
      steps: Adam steps, a multiple of `checkpoints`.
      lr: Adam learning rate.
      checkpoints: K, number of measurements after step 0.
      num_products: Hessian-vector products per trace estimate (a multiple of 3).
      holdout: share of each task's samples in its test split (see `split_masks`).
    Returns:
      dict of numpy arrays over the K + 1 checkpoints: `step` int[K+1], `train_loss`,
      `test_loss`, `generalization_error` (test − train), `trace_hutchpp`, `trace_hutchinson`,
      `loss_bound` (C), `bound`, all f32[K+1]; and the ints `n_train`, `n_test`.
    """
    check_key("key", key)
    steps, checkpoints, lr, num_products = _check_training(steps, checkpoints, lr, num_products)
    holdout = _check_holdout(holdout)
    samples, task = _all_samples(log_prob_fn, actor_star, obs, action, advantage, task)
    subset = np.asarray(as_array("subset", subset, ndim=1, kind="b"))
    check_task_ids(task, subset.size)
    if not subset.any():
        raise ValueError("subset selects no task")
    train, test = _subset_splits(samples, task, subset, holdout)

    actors = _fit(log_prob_fn, actor_star, train, lr, checkpoints, steps // checkpoints)
    rows = []
    keys = jax.random.split(key, (len(actors), 2))
    for actor, (key_hutchpp, key_hutchinson) in zip(actors, keys):
        rows.append({
            **_losses(log_prob_fn, actor, train, test),
            "trace_hutchpp": _train_trace(log_prob_fn, actor, train, key_hutchpp, num_products,
                                          "hutch++"),
            "trace_hutchinson": _train_trace(log_prob_fn, actor, train, key_hutchinson,
                                             num_products, "hutchinson"),
        })
    rows = jax.device_get(rows)
    curve = {name: np.array([row[name] for row in rows]) for name in rows[0]}
    n_train = train.w.size
    curve["generalization_error"] = curve["test_loss"] - curve["train_loss"]
    curve["bound"] = np.asarray(generalization_bound(
        curve["train_loss"], curve["trace_hutchpp"], n_train, curve["loss_bound"]))
    curve["step"] = np.arange(checkpoints + 1) * (steps // checkpoints)
    return {**curve, "n_train": n_train, "n_test": test.w.size}


def _draw_subsets(rng: np.random.Generator, tasks: np.ndarray, size: int, count: int):
    """`count` distinct subsets of `size` tasks (all of them when fewer exist), sorted."""
    if math.comb(tasks.size, size) <= count:
        return [list(c) for c in itertools.combinations(tasks.tolist(), size)]
    drawn: set[tuple[int, ...]] = set()
    while len(drawn) < count:
        drawn.add(tuple(sorted(rng.choice(tasks, size, replace=False).tolist())))
    return [list(members) for members in sorted(drawn)]


def subset_size_sweep(log_prob_fn, actor_star, obs, action, advantage, task, key, *,
                      sizes=(1, 2, 3, 5, 10), subsets_per_size: int = 3, steps: int = 200,
                      lr: float = 1e-3, num_products: int = 30, holdout: float = 0.2) -> dict:
    """Final generalization error, Hessian trace and bound against the subset size α (Fig. 2b).

    For every size α, trains θ* as in `training_curve` on `subsets_per_size` random distinct
    subsets of α tasks (every subset when fewer exist, e.g. the single one of all tasks), drawn
    by a numpy Generator seeded from `key`, and measures after the last step only, with Hutch++
    only. The bound is that of `training_curve`, with the same caveats.

    Args:
      log_prob_fn, actor_star, obs, action, advantage, task: as in `training_curve`; subsets are
        drawn from the task ids present in `task`.
      key: PRNG key for the subsets and the trace estimates.
      sizes: subset sizes α, each in [1, number of tasks].
      subsets_per_size, steps, lr, num_products, holdout: as in `training_curve`.
    Returns:
      dict of numpy arrays over the S sizes: `size` int[S], `num_subsets` int[S], and the mean
      and standard deviation (ddof = 0, so 0 for a single subset) over subsets of the final
      `generalization_error`, `trace_hutchpp` and `bound`, as `<name>_mean` / `<name>_std` f32[S].
    """
    check_key("key", key)
    steps, _, lr, num_products = _check_training(steps, 1, lr, num_products)
    holdout = _check_holdout(holdout)
    subsets_per_size = check_int("subsets_per_size", subsets_per_size, minimum=1)
    samples, task = _all_samples(log_prob_fn, actor_star, obs, action, advantage, task)
    tasks = np.unique(task)
    sizes = [check_int("size", s, minimum=1, maximum=tasks.size) for s in sizes]
    if not sizes:
        raise ValueError("sizes is empty")

    key_draw, key_trace = jax.random.split(key)
    rng = np.random.default_rng(np.asarray(jax.random.bits(key_draw, (2,), jnp.uint32)))
    names = ("generalization_error", "trace_hutchpp", "bound")
    sweep = {"size": np.array(sizes), "num_subsets": np.zeros(len(sizes), np.int64),
             **{f"{name}_{stat}": np.zeros(len(sizes), np.float32)
                for name in names for stat in ("mean", "std")}}
    run = 0
    for i, size in enumerate(sizes):
        results = []
        for members in _draw_subsets(rng, tasks, size, subsets_per_size):
            subset = np.zeros(int(task.max()) + 1, bool)
            subset[members] = True
            train, test = _subset_splits(samples, task, subset, holdout)
            actor = _fit(log_prob_fn, actor_star, train, lr, 1, steps)[-1]
            losses = jax.device_get(_losses(log_prob_fn, actor, train, test))
            trace = float(_train_trace(log_prob_fn, actor, train, jax.random.fold_in(key_trace, run),
                                       num_products, "hutch++"))
            run += 1
            bound = generalization_bound(losses["train_loss"], trace, train.w.size,
                                         losses["loss_bound"])
            results.append((losses["test_loss"] - losses["train_loss"], trace, float(bound)))
        values = np.array(results)  # [subsets, 3]
        sweep["num_subsets"][i] = len(results)
        for j, name in enumerate(names):
            sweep[f"{name}_mean"][i] = values[:, j].mean()
            sweep[f"{name}_std"][i] = values[:, j].std()
    return sweep


def plot_generalization(curve: dict, sweep: dict) -> bytes:
    """PNG bytes of Figure 2: (a) along training, (b) against the subset size α.

    (a) plots the generalization error and the bound's excess over the train loss,
    sqrt(C · max(H, 0) / n) (the part of the bound that predicts the error, in loss units), on the
    left axis, and the two trace estimates on the right. (b) plots the final generalization error
    (left) and Hutch++ trace (right), mean ± std over subsets.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(11, 4.2))
    step = curve["step"]
    ax_a.plot(step, curve["generalization_error"], "o-", color="C0", label="generalization error")
    ax_a.plot(step, curve["bound"] - curve["train_loss"], "s--", color="C2",
              label="bound − train loss")
    ax_a.axhline(0.0, color="grey", lw=0.5)
    ax_a.set_xlabel("Adam step")
    ax_a.set_ylabel("loss")
    trace_a = ax_a.twinx()
    trace_a.plot(step, curve["trace_hutchpp"], "^-", color="C1", label="tr H (Hutch++)")
    trace_a.plot(step, curve["trace_hutchinson"], "v:", color="C3", label="tr H (Hutchinson)")
    trace_a.set_ylabel("Hessian trace of the train loss")
    lines = ax_a.get_legend_handles_labels()
    trace_lines = trace_a.get_legend_handles_labels()
    ax_a.legend(lines[0] + trace_lines[0], lines[1] + trace_lines[1], fontsize=8, loc="best")
    ax_a.set_title(f"(a) along training (n_train = {curve['n_train']})")

    size = sweep["size"]
    ax_b.errorbar(size, sweep["generalization_error_mean"], sweep["generalization_error_std"],
                  fmt="o-", color="C0", capsize=3, label="generalization error")
    ax_b.set_xlabel("number of tasks α")
    ax_b.set_ylabel("generalization error")
    ax_b.set_xticks(size)
    trace_b = ax_b.twinx()
    trace_b.errorbar(size + 0.08, sweep["trace_hutchpp_mean"], sweep["trace_hutchpp_std"],
                     fmt="^-", color="C1", capsize=3, label="tr H (Hutch++)")
    trace_b.set_ylabel("Hessian trace of the train loss")
    lines = ax_b.get_legend_handles_labels()
    trace_lines = trace_b.get_legend_handles_labels()
    ax_b.legend(lines[0] + trace_lines[0], lines[1] + trace_lines[1], fontsize=8, loc="best")
    ax_b.set_title("(b) after training, against α (mean ± std over subsets)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()
