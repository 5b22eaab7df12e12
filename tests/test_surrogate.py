"""The batched subset solver against scipy and scikit-learn, one subset at a time."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from sklearn.linear_model import LogisticRegression

from pgx_jax import Features, estimate_subsets, solve_subsets

L2 = 0.05


def make_problem(seed=0, num_tasks=5, dim=8, sizes=(40, 55, 60, 47, 52)):
    """Tasks of unequal sizes, shuffled in the batch, labels tied to the features."""
    rng = np.random.default_rng(seed)
    task = np.concatenate([np.full(n, t) for t, n in enumerate(sizes[:num_tasks])])
    rng.shuffle(task)
    z = rng.normal(size=(task.size, dim)).astype(np.float32) * np.linspace(2, 0.2, dim)
    advantage = z @ rng.normal(size=dim) * 0.5 + rng.normal(size=task.size)
    feats = Features(
        z=jnp.asarray(z),
        y=jnp.asarray(np.where(advantage >= 0, 1.0, -1.0), jnp.float32),
        w=jnp.asarray(np.abs(advantage), jnp.float32),
        task=jnp.asarray(task, jnp.int32),
    )
    subsets = np.array(
        [[1, 1, 0, 0, 1], [0, 1, 1, 0, 0], [1, 0, 1, 1, 1], [0, 0, 0, 1, 0], [1, 1, 1, 1, 1],
         [0, 1, 0, 1, 1], [1, 0, 1, 0, 0]],
        bool,
    )[:, :num_tasks]
    return feats, subsets


def split_rows(task, subset, holdout):
    """Fitted and held-out rows of a subset: each task's last round(holdout·n) samples held out."""
    fit, held = [], []
    for t in np.flatnonzero(subset):
        idx = np.flatnonzero(task == t)
        n_held = 0 if holdout == 0 else min(max(round(holdout * idx.size), 1), idx.size - 1)
        fit.append(idx[: idx.size - n_held])
        held.append(idx[idx.size - n_held :])
    return np.concatenate(fit), np.concatenate(held)


def mean_loss(z, y, w, theta):
    return float(np.mean(w * np.logaddexp(0.0, -y * (z @ theta))))


def scipy_solution(z, y, w, l2):
    def objective(theta):
        return mean_loss(z, y, w, theta) + 0.5 * l2 * theta @ theta

    def gradient(theta):
        return z.T @ (-w * y * scipy.special.expit(-y * (z @ theta))) / len(y) + l2 * theta

    result = scipy.optimize.minimize(
        objective, np.zeros(z.shape[1]), jac=gradient, method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10_000},
    )
    return result.x, result.fun


@pytest.mark.parametrize("method", ["preconditioned", "optax"])
@pytest.mark.parametrize("holdout", [0.0, 0.25])
def test_every_subset_matches_scipy(method, holdout):
    feats, subsets = make_problem()
    # θ within 1e-5 of scipy needs ‖∇‖ ≲ l2 · 1e-5 · ‖θ‖, i.e. a certified gap near 1e-12.
    solution = solve_subsets(feats, subsets, l2=L2, holdout=holdout, tol=1e-12, method=method)
    z, y, w = (np.asarray(v, np.float64) for v in (feats.z, feats.y, feats.w))
    task = np.asarray(feats.task)
    for j, subset in enumerate(subsets):
        fit, held = split_rows(task, subset, holdout)
        theta_ref, objective_ref = scipy_solution(z[fit], y[fit], w[fit], L2)
        theta = np.asarray(solution.theta[j], np.float64)
        assert np.linalg.norm(theta - theta_ref) <= 1e-5 * np.linalg.norm(theta_ref)
        objective = mean_loss(z[fit], y[fit], w[fit], theta) + 0.5 * L2 * theta @ theta
        assert abs(objective - objective_ref) <= 1e-5 * objective_ref
        np.testing.assert_allclose(solution.train_loss[j], mean_loss(z[fit], y[fit], w[fit], theta_ref), rtol=1e-5)
        for t in range(subsets.shape[1]):  # each member's own loss, NaN outside the subset
            if not subset[t]:
                assert np.isnan(solution.task_train_loss[j, t])
                assert np.isnan(solution.task_train_loss_at_zero[j, t])
                continue
            own = fit[task[fit] == t]
            np.testing.assert_allclose(solution.task_train_loss[j, t],
                                       mean_loss(z[own], y[own], w[own], theta_ref), rtol=1e-5)
            np.testing.assert_allclose(solution.task_train_loss_at_zero[j, t],
                                       np.log(2) * w[own].mean(), rtol=1e-6)
        if holdout:
            np.testing.assert_allclose(
                solution.heldout_loss[j], mean_loss(z[held], y[held], w[held], theta_ref), rtol=1e-5
            )
        else:
            assert np.isnan(solution.heldout_loss[j])
    assert np.all(np.asarray(solution.grad_norm) < 1e-4)
    assert np.all(np.asarray(solution.iterations) >= 1)


def test_matches_sklearn_logistic_regression_with_matching_c():
    feats, subsets = make_problem(seed=1)
    solution = solve_subsets(feats, subsets, l2=L2, holdout=0.0, tol=1e-10)
    z, y, w = (np.asarray(v, np.float64) for v in (feats.z, feats.y, feats.w))
    task = np.asarray(feats.task)
    for j, subset in enumerate(subsets):
        rows = np.flatnonzero(subset[task])
        model = LogisticRegression(C=1 / (L2 * rows.size), fit_intercept=False, tol=1e-10, max_iter=10_000)
        model.fit(z[rows], y[rows], sample_weight=w[rows])
        np.testing.assert_allclose(solution.theta[j], model.coef_[0], rtol=1e-4, atol=1e-5)


def test_estimate_subsets_scores_are_losses_and_gains():
    feats, subsets = make_problem()
    solution = solve_subsets(feats, subsets, l2=L2)
    w, task = np.asarray(feats.w, np.float64), np.asarray(feats.task)
    held = np.zeros(len(task), bool)  # the last 20% of each task's samples, as the solver holds out
    for t in np.unique(task):
        rows = np.flatnonzero(task == t)
        held[rows[-max(1, round(0.2 * rows.size)):]] = True
    for split, mask, loss, at_zero in (("heldout", held, solution.heldout_loss, solution.heldout_loss_at_zero),
                                       ("train", ~held, solution.train_loss, solution.train_loss_at_zero)):
        # At θ = 0 each sample's loss is w·log 2; checked against the samples of each subset.
        expected_zero = [np.log(2) * w[mask & row[task]].mean() for row in subsets]
        np.testing.assert_allclose(at_zero, expected_zero, rtol=1e-5)
        np.testing.assert_allclose(estimate_subsets(feats, subsets, l2=L2, score_on=split, score="loss"),
                                   -loss, rtol=1e-6)
        np.testing.assert_allclose(estimate_subsets(feats, subsets, l2=L2, score_on=split),
                                   at_zero - loss, rtol=1e-5, atol=1e-7)
    # The fit never does worse than θ = 0 on the samples it was fitted on.
    assert np.all(solution.train_loss <= solution.train_loss_at_zero + 1e-7)


def test_under_user_jit_equals_eager():
    feats, subsets = make_problem()
    eager = estimate_subsets(feats, subsets, l2=L2, tol=1e-10)
    jitted = jax.jit(lambda f, s: estimate_subsets(f, s, l2=L2, tol=1e-10))(feats, jnp.asarray(subsets))
    np.testing.assert_allclose(jitted, eager, rtol=1e-5)


def test_sharded_equals_single_device():
    """Four forced host devices in a subprocess; 7 subsets do not divide evenly over them."""
    script = textwrap.dedent(
        """
        import jax, numpy as np
        from tests.test_surrogate import make_problem, L2
        from pgx_jax import solve_subsets
        assert len(jax.devices()) == 4, jax.devices()
        feats, subsets = make_problem()
        one = solve_subsets(feats, subsets, l2=L2, tol=1e-10, devices=1)
        four = solve_subsets(feats, subsets, l2=L2, tol=1e-10, devices="all")
        np.testing.assert_allclose(four.theta, one.theta, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(four.heldout_loss, one.heldout_loss, rtol=1e-5)
        np.testing.assert_allclose(four.train_loss, one.train_loss, rtol=1e-5)
        print("sharded ok")
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sharded ok" in result.stdout


def test_bad_inputs_raise_clear_errors():
    feats, subsets = make_problem()
    with pytest.raises(ValueError, match="Features"):
        solve_subsets((feats.z, feats.y), subsets)
    with pytest.raises(ValueError, match="z.*NaN"):
        solve_subsets(feats.replace(z=feats.z.at[0, 0].set(jnp.nan)), subsets)
    with pytest.raises(ValueError, match="inconsistent"):
        solve_subsets(feats.replace(w=feats.w[:-1]), subsets)
    with pytest.raises(ValueError, match="z must have 2"):
        solve_subsets(feats.replace(z=feats.z[:, 0]), subsets)
    with pytest.raises(ValueError, match="empty"):
        solve_subsets(feats, np.vstack([subsets, np.zeros((1, 5), bool)]))
    with pytest.raises(ValueError, match="all zero"):
        solve_subsets(feats.replace(w=jnp.zeros_like(feats.w)), subsets)
    with pytest.raises(ValueError, match="all-zero sample weights"):
        solve_subsets(feats.replace(w=jnp.where(feats.task == 3, 0.0, feats.w)), subsets)
    with pytest.raises(ValueError, match="task must lie in"):
        solve_subsets(feats, subsets[:, :4])
    with pytest.raises(ValueError, match="-1 and \\+1"):
        solve_subsets(feats.replace(y=feats.y * 2), subsets)
    with pytest.raises(ValueError, match=">= 0"):
        solve_subsets(feats.replace(w=-feats.w), subsets)
    with pytest.raises(ValueError, match="l2"):
        solve_subsets(feats, subsets, l2=0.0)
    with pytest.raises(ValueError, match="holdout"):
        solve_subsets(feats, subsets, holdout=1.0)
    with pytest.raises(ValueError, match="method"):
        solve_subsets(feats, subsets, method="newton-cg")
    with pytest.raises(ValueError, match="devices"):
        solve_subsets(feats, subsets, devices=64)
    with pytest.raises(ValueError, match="subsets must have 2"):
        solve_subsets(feats, subsets[0])
    with pytest.raises(ValueError, match="0 and 1"):
        solve_subsets(feats, subsets.astype(int) * 2)
    with pytest.raises(ValueError, match="score_on"):
        estimate_subsets(feats, subsets, score_on="test")
    with pytest.raises(ValueError, match="score must be one of"):
        estimate_subsets(feats, subsets, score="ratio")
    with pytest.raises(ValueError, match="holdout > 0"):
        estimate_subsets(feats, subsets, holdout=0.0, score_on="heldout")
    few = feats.replace(task=jnp.where(feats.task == 3, 4, feats.task).at[0].set(3))
    with pytest.raises(ValueError, match="fewer than 2 samples"):
        solve_subsets(few, subsets)


def test_weak_preconditioner_never_stalls():
    """Policy-gradient features (steep spectrum) with a rank-2 preconditioner: the first steps are
    far too long, and a Newton step from s = 1 lands below 0. The line search must still move
    (secant point), so every subset converges to scipy's optimum instead of stalling at θ = 0."""
    from pgx_jax import gradient_features
    from pgx_jax.surrogate import _Problems, _members, _preconditioned_solve, _slots, _task_layout
    from pgx_jax.synthetic import planted_groups, policy_gradient_batch

    policy, params, batch = policy_gradient_batch(jax.random.key(0), planted_groups(4, 2), 256)
    feats = gradient_features(policy.log_prob, params, batch, jax.random.key(1), dim=48)
    subsets = jnp.asarray([[1, 1, 0, 0], [0, 1, 1, 1], [1, 0, 0, 1], [1, 1, 1, 1]], bool)
    z, y, w, _, n_train, _ = _task_layout(feats, 4, 256, 0.0)
    problems = _Problems(z, y, w, _slots(subsets, 4), _members(subsets, 4),
                         subsets.astype(jnp.float32) @ n_train, jnp.float32(L2))
    theta, _, grad, iters = _preconditioned_solve(problems, 1e-5, 300, rank=2)
    assert np.all(np.asarray(iters) < 300)
    zz, yy, ww = (np.asarray(v, np.float64) for v in (feats.z, feats.y, feats.w))
    task = np.asarray(feats.task)
    for j, subset in enumerate(np.asarray(subsets)):
        rows = np.flatnonzero(subset[task])
        _, objective_ref = scipy_solution(zz[rows], yy[rows], ww[rows], L2)
        th = np.asarray(theta[j], np.float64)
        objective = mean_loss(zz[rows], yy[rows], ww[rows], th) + 0.5 * L2 * th @ th
        assert abs(objective - objective_ref) <= 1e-5 * objective_ref


def test_solve_makes_no_host_transfers():
    """Nothing inside the jitted solve (loop, line search, convergence test) goes back to the
    host, as it must not on an accelerator: its program holds no host callback, send/recv or
    in/outfeed (the transfer guard alone does not see callbacks), and it runs with every
    implicit transfer disallowed."""
    from pgx_jax.surrogate import _solve_jit, _static_sizes

    feats, subsets = make_problem()
    subsets = jnp.asarray(subsets)
    sizes = _static_sizes(feats, subsets, 1)
    args = jax.device_put((feats, subsets, np.float32(L2), np.float32(1e-6), np.float32(0.2)))
    kwargs = dict(num_tasks=5, sizes=sizes, method="preconditioned", max_iter=200, num_devices=1)
    program = _solve_jit.lower(*args, **kwargs).as_text().lower()
    for host_op in ("callback", "infeed", "outfeed", "stablehlo.send", "stablehlo.recv"):
        assert host_op not in program, host_op
    expected = _solve_jit(*args, **kwargs)  # compiles outside the guard
    with jax.transfer_guard("disallow"):
        outputs = _solve_jit(*args, **kwargs)
        jax.block_until_ready(outputs)
    np.testing.assert_allclose(outputs[0], expected[0])


def test_draws_of_one_preset_share_one_compile():
    """Subset draws of the same (n, m, α) pad to the same static sizes, so the second draw reuses
    the first one's compiled solve, and the extra padding leaves the solution unchanged."""
    from pgx_jax import sample_subsets
    from pgx_jax.surrogate import _Sizes, _solve_jit, _static_sizes

    rng = np.random.default_rng(3)
    task = np.repeat(np.arange(10), 30)
    z = rng.normal(size=(task.size, 6)).astype(np.float32)
    advantage = z @ rng.normal(size=6) + rng.normal(size=task.size)
    feats = Features(jnp.asarray(z), jnp.asarray(np.where(advantage >= 0, 1.0, -1.0), jnp.float32),
                     jnp.asarray(np.abs(advantage), jnp.float32), jnp.asarray(task, jnp.int32))
    draws = [np.asarray(sample_subsets(jax.random.key(seed), 10, 60, 3)) for seed in (0, 1)]
    exact = [int(d.sum(0).max()) for d in draws]
    assert exact[0] != exact[1]  # the draws differ in their exact C
    sizes = [_static_sizes(feats, jnp.asarray(d), 1) for d in draws]
    assert sizes[0] == sizes[1] and sizes[0].slots >= max(exact)

    before = _solve_jit._cache_size()
    solutions = [solve_subsets(feats, d, tol=1e-10) for d in draws]
    assert _solve_jit._cache_size() == before + 1

    tight = _Sizes(rows=30, slots=exact[1], members=3)
    outputs = _solve_jit(feats, jnp.asarray(draws[1]), 1e-2, 1e-10, 0.2, num_tasks=10,
                         sizes=tight, method="preconditioned", max_iter=200, num_devices=1)
    np.testing.assert_allclose(solutions[1].theta, outputs[0], atol=1e-5)
    np.testing.assert_allclose(solutions[1].train_loss, outputs[1], rtol=1e-5)
