"""The Figure 2 study: split rule vs a loop; losses, traces and bound vs hand-made references."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from experiments._generalization import (
    plot_generalization,
    split_masks,
    subset_size_sweep,
    training_curve,
)
from pgx_jax.rl.policies import CategoricalMLP

NUM_TASKS, PER_TASK, HOLDOUT = 3, 40, 0.2
N_TEST = 8  # round(0.2 · 40) per task
SUBSET = np.array([True, False, True])
STEPS, CHECKPOINTS, LR = 20, 4, 1e-2


@functools.lru_cache(maxsize=None)
def problem():
    """A 4→8→2 CategoricalMLP (p = 58) at random init and 3 tasks × 40 random samples."""
    policy = CategoricalMLP(num_actions=2, hidden=(8,))
    actor = policy.init(jax.random.key(0), jnp.zeros(4))
    # Data from numpy: eager jax.random calls would each compile.
    rng = np.random.default_rng(0)
    num = NUM_TASKS * PER_TASK
    batch = {
        "obs": rng.standard_normal((num, 4)).astype(np.float32),
        "action": rng.integers(0, 2, num).astype(np.int32),
        "advantage": rng.standard_normal(num).astype(np.float32),
        "task": np.repeat(np.arange(NUM_TASKS), PER_TASK).astype(np.int32),
    }
    return policy, actor, batch


def num_products(actor) -> int:
    """3p: the Hutch++ sketch then spans the whole space, so its estimate is the exact trace."""
    return 3 * ravel_pytree(actor)[0].size


@functools.lru_cache(maxsize=None)
def curve():
    policy, actor, batch = problem()
    return training_curve(policy.log_prob, actor, **batch, subset=SUBSET, key=jax.random.key(1),
                          steps=STEPS, lr=LR, checkpoints=CHECKPOINTS,
                          num_products=num_products(actor), holdout=HOLDOUT)


def hand_split(tasks):
    """Indices of the train and test samples of `tasks` (first 32 / last 8 of each task)."""
    train = [t * PER_TASK + i for t in tasks for i in range(PER_TASK - N_TEST)]
    test = [t * PER_TASK + i for t in tasks for i in range(PER_TASK - N_TEST, PER_TASK)]
    return np.array(train), np.array(test)


def reference_data(batch, index):
    """(obs, action, y, w) of the samples `index`, with y = sign(Â) and w = |Â| in numpy."""
    advantage = batch["advantage"][index]
    return (batch["obs"][index], batch["action"][index],
            np.where(advantage >= 0, 1.0, -1.0).astype(np.float32), np.abs(advantage))


@functools.partial(jax.jit, static_argnums=0)
def reference_losses(policy, actor_star, actor, data):
    """The per-sample surrogate loss, written on the batched logits: f32[m]."""
    obs, action, y, w = data

    def log_prob(params):
        return jax.nn.log_softmax(policy.apply(params, obs))[jnp.arange(obs.shape[0]), action]

    return w * jax.nn.softplus(-y * (log_prob(actor) - log_prob(actor_star)))


@functools.partial(jax.jit, static_argnums=0)
def reference_step(policy, actor_star, actor, opt_state, data):
    """One full-batch Adam step on the mean of `reference_losses`."""
    def loss(params):
        return jnp.mean(reference_losses(policy, actor_star, params, data))

    updates, opt_state = optax.adam(LR).update(jax.grad(loss)(actor), opt_state)
    return optax.apply_updates(actor, updates), opt_state


def reference_training(index, steps, every):
    """Adam step by step on the samples `index`: the actor after every `every` steps."""
    policy, actor_star, batch = problem()
    data = reference_data(batch, index)
    actor, opt_state, actors = actor_star, optax.adam(LR).init(actor_star), []
    for i in range(1, steps + 1):
        actor, opt_state = reference_step(policy, actor_star, actor, opt_state, data)
        if i % every == 0:
            actors.append(actor)
    return actors


@functools.lru_cache(maxsize=None)
def reference_curve():
    """`reference_training` on the train split of `SUBSET`, checkpointed as `curve()`."""
    return reference_training(hand_split(np.flatnonzero(SUBSET))[0], STEPS, STEPS // CHECKPOINTS)


def reference_error(tasks, steps):
    """Test − train loss after `steps` steps of `reference_training` on `tasks`."""
    policy, actor_star, batch = problem()
    train, test = hand_split(tasks)
    (actor,) = reference_training(train, steps, steps)
    test_loss, train_loss = (
        reference_losses(policy, actor_star, actor, reference_data(batch, index)).mean()
        for index in (test, train)
    )
    return float(test_loss - train_loss)


def test_split_masks_match_a_loop():
    rng = np.random.default_rng(3)
    task = rng.integers(0, 6, 200)
    task[task == 5] = 4  # task 5 has no samples
    task[np.flatnonzero(task == 3)[1:]] = 2  # task 3 has a single sample: it is all test
    holdout = 0.3
    train, test = split_masks(task, 6, holdout)
    expected = np.zeros(task.size, bool)
    for t in range(6):
        index = np.flatnonzero(task == t)
        if index.size:
            held = min(max(round(holdout * index.size), 1), max(index.size - 1, 1))
            expected[index[index.size - held:]] = True
    np.testing.assert_array_equal(test, expected)
    np.testing.assert_array_equal(train, ~expected)
    assert test[task == 3].all()


def test_curve_starts_at_log2_mean_weight():
    _, _, batch = problem()
    result = curve()
    train, test = hand_split([0, 2])
    w = np.abs(batch["advantage"])
    assert (result["n_train"], result["n_test"]) == (train.size, test.size)
    np.testing.assert_array_equal(result["step"], [0, 5, 10, 15, 20])
    np.testing.assert_allclose(result["train_loss"][0], np.log(2) * w[train].mean(), rtol=1e-6)
    np.testing.assert_allclose(result["test_loss"][0], np.log(2) * w[test].mean(), rtol=1e-6)
    np.testing.assert_allclose(result["loss_bound"][0], np.log(2) * w[train].max(), rtol=1e-6)
    np.testing.assert_allclose(result["generalization_error"],
                               result["test_loss"] - result["train_loss"])


def test_curve_follows_independent_adam_and_train_loss_decreases():
    policy, actor, batch = problem()
    result = curve()
    assert np.all(np.diff(result["train_loss"]) < 0)
    train, test = (reference_data(batch, index) for index in hand_split([0, 2]))
    train_losses = [reference_losses(policy, actor, a, train) for a in reference_curve()]
    test_losses = [reference_losses(policy, actor, a, test) for a in reference_curve()]
    np.testing.assert_allclose(result["train_loss"][1:], [x.mean() for x in train_losses],
                               rtol=1e-4)
    np.testing.assert_allclose(result["test_loss"][1:], [x.mean() for x in test_losses], rtol=1e-4)
    np.testing.assert_allclose(result["loss_bound"][1:], [x.max() for x in train_losses],
                               rtol=1e-4)


def test_final_traces_match_the_explicit_hessian():
    policy, actor_star, batch = problem()
    result = curve()
    train = reference_data(batch, hand_split([0, 2])[0])
    theta, unravel = ravel_pytree(reference_curve()[-1])
    def loss(flat):
        return jnp.mean(reference_losses(policy, actor_star, unravel(flat), train))

    hessian = np.asarray(jax.jit(jax.hessian(loss))(theta), np.float64)
    exact = np.trace(hessian)
    assert np.linalg.eigvalsh(hessian).min() < 0 < exact  # indefinite, as the docstring says
    # Hutch++ with 3p products is exact up to float32 rounding in p = 58 Hessian-vector products.
    np.testing.assert_allclose(result["trace_hutchpp"][-1], exact,
                               atol=1e-4 * np.linalg.norm(hessian))
    # Hutchinson: within 5 standard deviations, Var = 2(‖H‖_F² − Σ H_ii²) / m.
    m = num_products(actor_star)
    std = np.sqrt(2 * (np.sum(hessian**2) - np.sum(np.diag(hessian) ** 2)) / m)
    assert abs(result["trace_hutchinson"][-1] - exact) < 5 * std


def test_bound_is_theorem_1_by_hand():
    result = curve()
    by_hand = result["train_loss"] + np.sqrt(
        result["loss_bound"] * np.maximum(result["trace_hutchpp"], 0.0) / result["n_train"])
    np.testing.assert_allclose(result["bound"], by_hand, rtol=1e-6)


def test_sweep_rows_and_plot():
    policy, actor, batch = problem()
    args = (policy.log_prob, actor, batch["obs"], batch["action"], batch["advantage"],
            batch["task"], jax.random.key(2))
    # Size 2 has the shapes of `curve()` and 5 steps its steps between checkpoints, so with the
    # same num_products it reuses the compiled programs.
    kwargs = dict(sizes=(2, 3), subsets_per_size=3, steps=STEPS // CHECKPOINTS, lr=LR,
                  num_products=num_products(actor))
    sweep = subset_size_sweep(*args, **kwargs)
    np.testing.assert_array_equal(sweep["size"], [2, 3])
    np.testing.assert_array_equal(sweep["num_subsets"], [3, 1])  # all pairs; the one triple
    for name in ("generalization_error", "trace_hutchpp", "bound"):
        assert sweep[f"{name}_mean"].shape == sweep[f"{name}_std"].shape == (2,)
        assert np.all(np.isfinite(sweep[f"{name}_mean"])) and np.all(sweep[f"{name}_std"] >= 0)
        assert sweep[f"{name}_std"][1] == 0.0
    # Training is deterministic, and size 2 runs every pair: compare with plain Adam on each.
    errors = [reference_error(pair, STEPS // CHECKPOINTS) for pair in ([0, 1], [0, 2], [1, 2])]
    np.testing.assert_allclose(sweep["generalization_error_mean"][0], np.mean(errors),
                               rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(sweep["generalization_error_std"][0], np.std(errors),
                               rtol=1e-2, atol=1e-6)
    again = subset_size_sweep(*args, **kwargs)
    for name, value in sweep.items():
        np.testing.assert_array_equal(again[name], value)

    png = plot_generalization(curve(), sweep)
    assert png.startswith(b"\x89PNG")


def test_bad_inputs():
    policy, actor, batch = problem()

    def run(**overrides):
        kwargs = dict(batch, subset=SUBSET, key=jax.random.key(0), steps=4, checkpoints=2,
                      num_products=6)
        training_curve(policy.log_prob, actor, **{**kwargs, **overrides})

    with pytest.raises(ValueError, match="multiple of checkpoints"):
        run(steps=5)
    with pytest.raises(ValueError, match="holdout"):
        run(holdout=0.0)
    with pytest.raises(ValueError, match="selects no task"):
        run(subset=np.zeros(3, bool))
    with pytest.raises(ValueError, match="task ids"):
        run(subset=np.ones(2, bool))
    with pytest.raises(ValueError, match="multiple of 3"):
        run(num_products=4)
    with pytest.raises(ValueError, match="inconsistent"):
        run(action=batch["action"][:-1])
