"""The surrogate fine-tuning problem of every subset, solved in one batched call (eqs. 3–4).

For a subset S of tasks, with D_S the (training) samples of the tasks in S,

    θ̂_S = argmin_θ  L̂_S(θ) + l2/2 ‖θ‖²,   L̂_S(θ) = 1/|D_S| Σ_{t ∈ D_S} w_t softplus(−y_t z_tᵀθ)

and the paper's estimate is f̂(S) = −L̂_S(θ̂_S). By default we report the loss reduction
L̂_S(0) − L̂_S(θ̂_S) instead (`score="gain"`, see `estimate_subsets`), measured on held-out samples
of the same tasks.
This is scikit-learn's `LogisticRegression(C=1 / (l2 · |D_S|), fit_intercept=False)` with
`sample_weight=w` on the rows of S.

How all m problems are batched (measured on a 2-core CPU; see benchmarks/solver.py):
  * Samples are laid out per task, [n, R, d] (R = most samples of any task, zero-weight padding),
    and each task t multiplies its rows by the parameter vectors of the C subsets that hold it,
    [R, d] × [d, C]: every matvec of all m problems becomes n matmuls, with no work spent on rows
    outside a subset (a dense [N, d] × [d, m] product would do n/α times the work).
  * Solver "preconditioned" (default): L-BFGS run in lockstep over all m problems. σ'(u) ≤ 1/4,
    so H0_S = 1/(4|D_S|) Σ_{t∈S} Z_tᵀ W_t Z_t + l2·I bounds each Hessian everywhere
    (Böhning–Lindsay); a low-rank-plus-shift approximation of H0_S⁻¹ is the initial inverse
    Hessian, which takes the steep directions of the gradient spectrum out of the iteration
    count (on policy-gradient features: 8–13 iterations where sklearn's L-BFGS needs 20–46).
    The line search is a safeguarded 1-D Newton step (the margins move linearly along a step:
    elementwise work only, two passes, sharing σ with the next gradient; `_Problems.line_search`).
    Nothing leaves the device inside the loop (tests/test_surrogate.py checks the program).
    Converged problems stop moving; the loop ends when every objective is certified within
    the tolerance of its optimum (`_certified`).
  * Solver "optax": optax L-BFGS (zoom line search) per subset under `lax.map`, on the subset's
    own rows, to the same tolerance. The reference method named in DESIGN.md; slower.
  * With several local devices the subset axis is split across them with `jax.shard_map`.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec

from pgx_jax._validate import as_array, check_finite, is_concrete
from pgx_jax.types import Features, SubsetSolution

METHODS = ("preconditioned", "optax")
SCORE_ON = ("heldout", "train")
SCORES = ("gain", "loss")
RANK = 24  # eigenpairs kept per task in the preconditioner (iterations equal to 32 on the
# policy, planted and isotropic data of benchmarks/solver.py, a 72² instead of 96² Woodbury system)
MEMORY = 8  # L-BFGS memory


# ----------------------------------------------------------------------------------------------
# Layout: samples grouped per task, subsets listed per task.


def _task_layout(feats: Features, num_tasks: int, max_rows: int, holdout: float):
    """Gathers the samples into per-task blocks.

    Returns:
      z: f32[n, R, d]; y: f32[n, R]; w_train, w_held: f32[n, R] (zero on padding and on the other
      split); n_train, n_held: f32[n] sample counts per task. The held-out samples of a task are
      the last `round(holdout · count)` of its samples in batch order (at least one when
      holdout > 0), so a stretch of trajectory is never split between fit and score.
    """
    task = feats.task
    counts = jnp.bincount(task, length=num_tasks)
    order = jnp.argsort(task, stable=True)
    sorted_task = task[order]
    starts = jnp.cumsum(counts) - counts
    rank = jnp.arange(task.shape[0]) - starts[sorted_task]
    n_held = jnp.where(
        holdout > 0, jnp.clip(jnp.round(holdout * counts), 1, jnp.maximum(counts - 1, 1)), 0
    ).astype(counts.dtype)
    n_train = counts - n_held
    slot = sorted_task * max_rows + rank
    size = num_tasks * max_rows

    # The sample that fills each slot (N, out of range, on padding): one gather per array
    # instead of a sorted copy scattered into zeros.
    source = jnp.full(size, task.shape[0], jnp.int32)
    source = source.at[slot].set(order.astype(jnp.int32), mode="drop")

    def gather(values):
        out = jnp.take(values.astype(jnp.float32), source, axis=0, mode="fill", fill_value=0)
        return out.reshape((num_tasks, max_rows) + values.shape[1:])

    z, y, w = gather(feats.z), gather(feats.y), gather(feats.w)
    row = jnp.arange(max_rows)[None, :]
    is_train = row < n_train[:, None]
    is_held = (row >= n_train[:, None]) & (row < counts[:, None])
    f32 = jnp.float32
    return z, y, w * is_train, w * is_held, n_train.astype(f32), n_held.astype(f32)


def _slots(subsets: jax.Array, max_slots: int) -> jax.Array:
    """int32[n, C]: for each task the indices of the subsets holding it, padded with m."""
    num_subsets = subsets.shape[0]
    order = jnp.argsort(~subsets.T, axis=1, stable=True)[:, :max_slots]
    holds = jnp.take_along_axis(subsets.T, order, axis=1)
    return jnp.where(holds, order, num_subsets).astype(jnp.int32)


def _to_subsets(values: jax.Array, slots: jax.Array, num_subsets: int) -> jax.Array:
    """Sums per-(task, slot) values [n, C, ...] into per-subset values [m, ...]."""
    flat = values.reshape((-1,) + values.shape[2:])
    return jax.ops.segment_sum(flat, slots.reshape(-1), num_segments=num_subsets + 1)[:num_subsets]


def _loss_and_sigmoid(u: jax.Array):
    """(softplus(u), σ(u)) from one exp(−|u|), elementwise: the two share the transcendental."""
    e = jnp.exp(-jnp.abs(u))
    return jnp.maximum(u, 0.0) + jnp.log1p(e), jnp.where(u >= 0, 1.0, e) / (1.0 + e)


def _certified(grad: jax.Array, value: jax.Array, l2, tol) -> jax.Array:
    """bool[...]: the objective is certified within a relative `tol` of its optimum.

    The objective is l2-strongly convex, so objective(θ) − min ≤ ‖∇‖² / (2·l2) (its Hessian's
    data part only adds curvature, so the bound is conservative: ~3× on the benchmark's data).
    grad: f32[..., d]; value: f32[...] the objective at the same θ (> 0: a mean of weighted
    softplus losses plus the penalty)."""
    return jnp.sum(grad**2, -1) <= 2.0 * l2 * tol * value


def _margins(z: jax.Array, theta: jax.Array, slots: jax.Array) -> jax.Array:
    """f32[n, C, R]: θ_Sᵀz_t for every task t, every subset S holding t (slot c) and row r.

    Slots before rows, so that the per-subset sums over rows reduce the fastest axis."""
    padded = jnp.concatenate([theta, jnp.zeros((1, theta.shape[1]), theta.dtype)])
    return jnp.einsum("tcd,trd->tcr", padded[slots], z)


# ----------------------------------------------------------------------------------------------
# Solvers: both return (theta f32[m, d], margins f32[n, C, R], gradient f32[m, d],
# iterations int32[m]).


class _Problems(NamedTuple):
    """All m problems in the per-task layout (see module docstring)."""

    z: jax.Array  # f32[n, R, d]
    y: jax.Array  # f32[n, R]
    w: jax.Array  # f32[n, R] weights of the fitted rows (0 on held-out rows and padding)
    slots: jax.Array  # int32[n, C] subsets holding each task, padded with m
    members: jax.Array  # int32[m, s] tasks of each subset, padded with n
    count: jax.Array  # f32[m] |D_S|
    l2: jax.Array  # f32[]

    @property
    def num_subsets(self) -> int:
        return self.count.shape[0]

    def per_slot(self, values: jax.Array) -> jax.Array:
        """f32[m] → f32[n, C, 1], the value of the subset in each slot (0 on padding)."""
        return jnp.concatenate([values, jnp.zeros(1)])[self.slots][:, :, None]

    def subset_sum(self, weights: jax.Array, *values: jax.Array):
        """Σ over each subset's rows of weights[t, r] · values[t, c, r], for each of `values`:
        f32[m] (a tuple of them for several `values`, all reduced in one pass)."""
        per_slot = [jnp.sum(weights[:, None, :] * v, axis=-1) for v in values]
        # The barrier keeps XLA from fusing the row reductions into the scatter of _to_subsets,
        # which computes them several times slower (measured on CPU).
        per_slot = jnp.stack(jax.lax.optimization_barrier(per_slot), -1)  # [n, C, k]
        sums = jnp.moveaxis(_to_subsets(per_slot, self.slots, self.num_subsets), -1, 0)
        return sums[0] if len(values) == 1 else tuple(sums)

    def residual(self, margins: jax.Array) -> jax.Array:
        """f32[n, C, R]: −y·w·σ(−y·margins), each row's derivative of the weighted loss."""
        return -(self.y * self.w)[:, None, :] * jax.nn.sigmoid(-self.y[:, None, :] * margins)

    def gradient(self, theta: jax.Array, residual: jax.Array) -> jax.Array:
        """∇ objective at θ, f32[m, d], given `residual(margins)` f32[n, C, R] at θ."""
        per_slot = jnp.einsum("tcr,trd->tcd", residual, self.z)
        return _to_subsets(per_slot, self.slots, self.num_subsets) / self.count[:, None] + (
            self.l2 * theta
        )

    def line_search(self, theta, step, slope_at_zero, margins, direction):
        """Exact line search along `step` for every subset: one 1-D Newton step from s = 1.

        φ(s) = objective(θ + s·step) is convex and the margins move linearly (margins +
        s·direction), so φ and its derivatives cost elementwise work only: one fused pass at
        s = 1 (value, slope, curvature sums), one at the Newton point (value sum, and the new
        margins and residuals for the gradient). Where φ'(1) > 0 the minimizer lies in (0, 1);
        a Newton point at or below 0 there (curvature at 1 much below that on the way: a step
        far too long) is replaced by the secant point of φ' between 0 and 1, so the step never
        collapses to 0 (which would stall the subset for good). The candidate is kept where it
        beats s = 1; only if some subset keeps s = 1 does a third pass redo the margins and
        residuals.
        Each pass takes the loss and σ from a single exp (`_loss_and_sigmoid`).

        Returns:
          (s f32[m], objective at θ + s·step f32[m], margins at it f32[n, C, R],
          `residual(margins)` at it f32[n, C, R]).
        """
        step_sq, theta_step = jnp.sum(step**2, -1), jnp.sum(theta * step, -1)
        theta_sq = jnp.sum(theta**2, -1)
        y, yw, w = self.y[:, None, :], (self.y * self.w)[:, None, :], self.w

        def penalty(s):
            return 0.5 * self.l2 * (theta_sq + 2 * s * theta_step + s**2 * step_sq)

        loss_one, sig_one = _loss_and_sigmoid(-y * (margins + direction))
        value_sum, slope_sum, curvature_sum = self.subset_sum(
            w, loss_one, -y * direction * sig_one, direction**2 * sig_one * (1 - sig_one)
        )
        value_one = value_sum / self.count + penalty(1.0)
        slope = slope_sum / self.count + self.l2 * (theta_step + step_sq)
        curvature = curvature_sum / self.count + self.l2 * step_sq
        # A converged problem has step = 0, hence zero curvature: it stays at s = 1 (no move).
        newton = jnp.where(curvature > 0, 1.0 - slope / jnp.where(curvature > 0, curvature, 1.0), 1.0)
        bracketed = (slope > 0) & (slope_at_zero < 0)
        secant = slope_at_zero / jnp.where(bracketed, slope_at_zero - slope, -1.0)
        newton = jnp.where(bracketed & (newton <= 0), secant, jnp.clip(newton, 0.0, 16.0))
        newton_margins = margins + self.per_slot(newton) * direction
        loss_newton, sig_newton = _loss_and_sigmoid(-y * newton_margins)
        value_newton = self.subset_sum(w, loss_newton) / self.count + penalty(newton)
        keep = value_newton <= value_one
        s = jnp.where(keep, newton, 1.0)

        def redo(_):
            new_margins = margins + self.per_slot(s) * direction
            return new_margins, self.residual(new_margins)

        residual_newton = -yw * sig_newton
        new_margins, residual = jax.lax.cond(
            jnp.all(keep), lambda _: (newton_margins, residual_newton), redo, None
        )
        return s, jnp.where(keep, value_newton, value_one), new_margins, residual


def _members(subsets: jax.Array, max_size: int) -> jax.Array:
    """int32[m, s]: the tasks of each subset, padded with n."""
    order = jnp.argsort(~subsets, axis=1, stable=True)[:, :max_size]
    holds = jnp.take_along_axis(subsets, order, axis=1)
    return jnp.where(holds, order, subsets.shape[1]).astype(jnp.int32)


def _bound_preconditioner(problems: _Problems, rank: int):
    """A cheap approximate inverse of each subset's curvature bound H0_S.

    σ'(u) ≤ 1/4, so H0_S = c_S Σ_{t∈S} G_t + l2·I, with c_S = 1/(4|D_S|) and G_t = Z_tᵀ W_t Z_t,
    bounds the Hessian everywhere. Each G_t is approximated by its top-`rank` eigenpairs
    (randomized range finder with one power iteration, from skinny products with Z_t; G_t itself
    is never formed) plus an isotropic tail, so H0_S ≈ a_S·I + W_S W_Sᵀ with W_S the |S|·rank
    columns V_t·diag(√(c_S λ_t)) of its tasks, and the Woodbury identity inverts it through an
    (|S|·rank)² system per subset instead of a d × d factorization per subset (which alone would
    cost more than the whole solve on a CPU at d = 400, m = 200).

    Returns:
      precondition(q f32[m, d], scale f32[m]) -> scale · H0_S⁻¹ q, f32[m, d].
    """
    z, w, members = problems.z, problems.w, problems.members
    num_tasks, dim = z.shape[0], z.shape[-1]
    rank = min(rank, dim)

    def gram_times(x):  # G_t x_t for x: [n, d, k], without forming G_t
        return jnp.einsum("trd,trk->tdk", z, w[..., None] * jnp.einsum("trd,tdk->trk", z, x))

    # A fixed sketch: the preconditioner changes the speed of the solve, never its answer.
    sketch = jax.random.normal(jax.random.key(0), (dim, min(rank + 8, dim)))
    basis, _ = jnp.linalg.qr(gram_times(gram_times(jnp.broadcast_to(sketch, (num_tasks,) + sketch.shape))))
    projected = jnp.einsum("trd,tdk->trk", z, basis)
    values, vectors = jnp.linalg.eigh(jnp.einsum("trk,trl->tkl", projected * w[..., None], projected))
    values, vectors = values[:, -rank:], jnp.einsum("tdi,tij->tdj", basis, vectors[:, :, -rank:])
    trace = jnp.sum(w * jnp.sum(z * z, -1), -1)
    tail = jnp.maximum(trace - values.sum(-1), 0.0) / max(dim - rank, 1)  # [n]

    def pad(x):  # append the dummy task n, whose factor is zero
        return jnp.concatenate([x, jnp.zeros_like(x[:1])])

    coef = 0.25 / problems.count  # c_S [m]
    shift = problems.l2 + coef * pad(tail)[members].sum(-1)  # a_S [m]
    # √(c_S (λ − tail)) per (subset, member, eigenpair): [m, s, rank]
    root = jnp.sqrt(coef[:, None, None] * jnp.maximum(pad(values - tail[:, None])[members], 0.0))
    vectors = pad(vectors)  # [n + 1, d, rank]
    cross = jnp.einsum("adi,bdj->abij", vectors, vectors)[members[:, :, None], members[:, None, :]]
    inner = root[:, :, None, :, None] * cross * root[:, None, :, None, :]  # [m, s, s, r, r]
    size = members.shape[1] * rank
    inner = jnp.swapaxes(inner, 2, 3).reshape(-1, size, size)
    inner_inv = jnp.linalg.inv(inner + shift[:, None, None] * jnp.eye(size))
    flat_vectors = jnp.swapaxes(vectors, 0, 1).reshape(dim, -1)  # [d, (n + 1)·rank]
    onehot = jax.nn.one_hot(members, num_tasks + 1)  # [m, s, n + 1]

    def precondition(q, scale):
        # W_Sᵀq: V_tᵀq for every task at once (one [m, d] × [d, (n+1)·r] matmul), then members.
        all_tasks = (q @ flat_vectors).reshape(q.shape[0], num_tasks + 1, rank)
        wq = (jnp.take_along_axis(all_tasks, members[..., None], axis=1) * root).reshape(-1, size)
        coeffs = jnp.einsum("mij,mj->mi", inner_inv, wq).reshape(root.shape) * root
        back = jnp.einsum("msn,msr->mnr", onehot, coeffs).reshape(q.shape[0], -1) @ flat_vectors.T
        return (q - back) * (scale / shift)[:, None]

    return precondition


def _preconditioned_solve(problems: _Problems, tol, max_iter, memory=MEMORY, rank=RANK):
    """Lockstep L-BFGS over all m problems, preconditioned by H0_S⁻¹, with exact line search."""
    num_subsets, dim = problems.num_subsets, problems.z.shape[-1]
    precondition = _bound_preconditioner(problems, rank)

    def two_loop(grad, s_hist, y_hist, rho, newest, scale):
        q, alphas = grad, []
        for i in range(memory):
            j = (newest - i) % memory
            a = rho[j] * jnp.sum(s_hist[j] * q, -1)
            q = q - a[:, None] * y_hist[j]
            alphas.append((j, a))
        r = precondition(q, scale)
        for j, a in reversed(alphas):
            b = rho[j] * jnp.sum(y_hist[j] * r, -1)
            r = r + (a - b)[:, None] * s_hist[j]
        return -r

    def cond(state):
        return jnp.any(state.active) & (jnp.max(state.iters) < max_iter)

    def body(state):
        step = two_loop(state.grad, state.s_hist, state.y_hist, state.rho, state.newest, state.scale)
        step = jnp.where(state.active[:, None], step, 0.0)
        direction = _margins(problems.z, step, problems.slots)
        s, value, margins, residual = problems.line_search(
            state.theta, step, jnp.sum(state.grad * step, -1), state.margins, direction
        )
        theta = state.theta + s[:, None] * step
        grad = problems.gradient(theta, residual)
        s_k, y_k = s[:, None] * step, grad - state.grad
        sy = jnp.sum(s_k * y_k, -1)
        ok = state.active & (sy > 0)  # a converged or degenerate pair leaves the memory alone
        newest = (state.newest + 1) % memory
        yhy = jnp.sum(y_k * precondition(y_k, jnp.ones(num_subsets)), -1)
        return _QNState(
            theta=theta,
            margins=margins,
            grad=grad,
            value=value,
            s_hist=state.s_hist.at[newest].set(jnp.where(ok[:, None], s_k, 0.0)),
            y_hist=state.y_hist.at[newest].set(jnp.where(ok[:, None], y_k, 0.0)),
            rho=state.rho.at[newest].set(jnp.where(ok, 1.0 / jnp.where(ok, sy, 1.0), 0.0)),
            newest=newest,
            scale=jnp.where(ok, sy / jnp.where(ok, yhy, 1.0), state.scale),
            iters=state.iters + state.active,
            active=state.active & ~_certified(grad, value, problems.l2, tol),
        )

    # At θ = 0 every margin is 0: σ = 1/2 and each sample's loss is w·log 2.
    theta = jnp.zeros((num_subsets, dim))
    margins = jnp.zeros(problems.slots.shape + problems.z.shape[1:2])
    grad = problems.gradient(theta, problems.residual(margins))
    value = jnp.log(2.0) * problems.subset_sum(problems.w, jnp.ones_like(margins)) / problems.count
    state = _QNState(
        theta=theta,
        margins=margins,
        grad=grad,
        value=value,
        s_hist=jnp.zeros((memory, num_subsets, dim)),
        y_hist=jnp.zeros((memory, num_subsets, dim)),
        rho=jnp.zeros((memory, num_subsets)),
        newest=jnp.int32(memory - 1),
        scale=jnp.ones(num_subsets),
        iters=jnp.zeros(num_subsets, jnp.int32),
        active=~_certified(grad, value, problems.l2, tol),
    )
    final = jax.lax.while_loop(cond, body, state)
    return final.theta, final.margins, final.grad, final.iters


class _QNState(NamedTuple):
    theta: jax.Array  # f32[m, d]
    margins: jax.Array  # f32[n, C, R], kept in step with theta
    grad: jax.Array  # f32[m, d]
    value: jax.Array  # f32[m] objective at theta
    s_hist: jax.Array  # f32[K, m, d] L-BFGS steps (circular, newest at `newest`)
    y_hist: jax.Array  # f32[K, m, d] gradient changes
    rho: jax.Array  # f32[K, m] 1 / sᵀy (0 marks an empty slot)
    newest: jax.Array  # int32[]
    scale: jax.Array  # f32[m] sᵀy / yᵀH0⁻¹y, the usual L-BFGS initial scaling
    iters: jax.Array  # int32[m]
    active: jax.Array  # bool[m] not yet converged


def _optax_solve(problems: _Problems, tol, max_iter):
    """optax L-BFGS (zoom line search) per subset under `lax.map`, on the subset's own rows."""
    dim = problems.z.shape[-1]

    def pad(x):  # append the dummy task n, with zero weight
        return jnp.concatenate([x, jnp.zeros_like(x[:1])])

    z, y, w = pad(problems.z), pad(problems.y), pad(problems.w)
    solver = optax.lbfgs()

    def solve_one(inputs):
        tasks, count = inputs
        zs, ys, ws = z[tasks].reshape(-1, dim), y[tasks].reshape(-1), w[tasks].reshape(-1)

        def objective(theta):
            loss = jnp.sum(ws * jax.nn.softplus(-ys * (zs @ theta))) / count
            return loss + 0.5 * problems.l2 * jnp.sum(theta**2)

        value_and_grad = optax.value_and_grad_from_state(objective)
        theta0 = jnp.zeros(dim)
        def cond(carry):
            _, state, iters = carry
            grad, value = optax.tree.get(state, "grad"), optax.tree.get(state, "value")
            return (iters == 0) | ((iters < max_iter) & ~_certified(grad, value, problems.l2, tol))

        def body(carry):
            theta, state, iters = carry
            value, grad = value_and_grad(theta, state=state)
            updates, state = solver.update(
                grad, state, theta, value=value, grad=grad, value_fn=objective
            )
            return optax.apply_updates(theta, updates), state, iters + 1

        theta, _, iters = jax.lax.while_loop(
            cond, body, (theta0, solver.init(theta0), jnp.int32(0))
        )
        return theta, iters

    theta, iters = jax.lax.map(solve_one, (problems.members, problems.count))
    margins = _margins(problems.z, theta, problems.slots)
    grad = problems.gradient(theta, problems.residual(margins))
    return theta, margins, grad, iters


_SOLVERS = {"preconditioned": _preconditioned_solve, "optax": _optax_solve}


# ----------------------------------------------------------------------------------------------
# The batched call.


class _Sizes(NamedTuple):
    """Static padding sizes of the layout (exact when inputs are concrete, loose under jit)."""

    rows: int  # R: most samples of one task
    slots: int  # C: most subsets holding one task
    members: int  # s: most tasks in one subset


def _solve_and_score(layout, subsets, *, l2, tol, max_iter, method, sizes):
    z, y, w_train, w_held, n_train, n_held = layout
    subsets_f = subsets.astype(jnp.float32)
    count_train, count_held = subsets_f @ n_train, subsets_f @ n_held
    slots = _slots(subsets, sizes.slots)
    problems = _Problems(
        z, y, w_train, slots, _members(subsets, sizes.members), count_train, jnp.float32(l2)
    )
    theta, margins, grad, iters = _SOLVERS[method](problems, tol, max_iter)
    losses = jax.nn.softplus(-y[:, None, :] * margins)  # [n, C, R], fitted and held-out rows
    train_loss = problems.subset_sum(w_train, losses) / count_train
    held_sum = problems.subset_sum(w_held, losses)
    heldout_loss = jnp.where(count_held > 0, held_sum / jnp.maximum(count_held, 1), jnp.nan)
    grad_norm = jnp.linalg.norm(grad, axis=-1)
    # At θ = 0 (the unadapted θ*) every margin is 0, so each sample's loss is w·log 2.
    train_zero = jnp.log(2.0) * (subsets_f @ w_train.sum(-1)) / count_train
    held_zero = jnp.log(2.0) * (subsets_f @ w_held.sum(-1)) / jnp.maximum(count_held, 1)
    held_zero = jnp.where(count_held > 0, held_zero, jnp.nan)
    # Each member task's own loss under its subset's θ̂_S, [m, n] (NaN outside the subset).
    per_task = jnp.einsum("tr,tcr->tc", w_train, losses) / jnp.maximum(n_train, 1)[:, None]
    task_loss = jnp.full((subsets.shape[0] + 1, subsets.shape[1]), jnp.nan).at[
        slots, jnp.arange(subsets.shape[1])[:, None]].set(per_task)[:-1]
    task_zero = jnp.where(subsets, jnp.log(2.0) * w_train.sum(-1) / jnp.maximum(n_train, 1),
                          jnp.nan)
    return (theta, train_loss, heldout_loss, train_zero, held_zero, grad_norm, iters, task_loss,
            task_zero)


@partial(jax.jit, static_argnames=("num_tasks", "sizes", "method", "max_iter", "num_devices"))
def _solve_jit(feats, subsets, l2, tol, holdout, *, num_tasks, sizes, method, max_iter,
               num_devices):
    layout = _task_layout(feats, num_tasks, sizes.rows, holdout)
    run = partial(
        _solve_and_score, l2=l2, tol=tol, max_iter=max_iter, method=method, sizes=sizes
    )
    if num_devices == 1:
        return run(layout, subsets)
    mesh = Mesh(np.array(jax.local_devices()[:num_devices]), ("subsets",))
    split, whole = PartitionSpec("subsets"), PartitionSpec()
    return jax.shard_map(
        run, mesh=mesh, in_specs=(whole, split), out_specs=split, check_vma=False
    )(layout, subsets)


def _check_inputs(feats, subsets, l2, holdout, tol, max_iter, method):
    if not isinstance(feats, Features):
        raise ValueError(f"features must be a pgx_jax.Features, got {type(feats).__name__}")
    z = as_array("features.z", feats.z, ndim=2, kind="f")
    y = as_array("features.y", feats.y, ndim=1, kind="f")
    w = as_array("features.w", feats.w, ndim=1, kind="f")
    task = as_array("features.task", feats.task, ndim=1, kind="i")
    sizes = {"z": z.shape[0], "y": y.shape[0], "w": w.shape[0], "task": task.shape[0]}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"features have inconsistent numbers of samples: {sizes}")
    if z.shape[0] == 0:
        raise ValueError("features hold no samples")
    subsets = as_array("subsets", subsets, ndim=2, kind="bi")
    if subsets.shape[0] == 0 or subsets.shape[1] == 0:
        raise ValueError(f"subsets must be a non-empty [m, n] mask, got {tuple(subsets.shape)}")
    if np.dtype(subsets.dtype).kind != "b":
        if is_concrete(subsets) and not np.isin(np.asarray(subsets), (0, 1)).all():
            raise ValueError("integer subsets must hold only 0 and 1")
        subsets = subsets.astype(bool)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not (isinstance(l2, (int, float)) and l2 > 0 and np.isfinite(l2)):
        raise ValueError(f"l2 must be a positive finite number, got {l2!r}")
    if not (isinstance(holdout, (int, float)) and 0 <= holdout < 1):
        raise ValueError(f"holdout must be in [0, 1), got {holdout!r}")
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be positive, got {tol!r}")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    for name, x in (("features.z", z), ("features.y", y), ("features.w", w)):
        check_finite(name, x)
    num_tasks = subsets.shape[1]
    if all(is_concrete(x) for x in (y, w, task, subsets)):
        sub, t = np.asarray(subsets), np.asarray(task)
        empty = np.flatnonzero(~sub.any(1))
        if empty.size:
            raise ValueError(f"subsets {empty[:10].tolist()} are empty (no task)")
        if t.min() < 0 or t.max() >= num_tasks:
            raise ValueError(
                f"features.task must lie in [0, n) with n = subsets.shape[1] = {num_tasks}; "
                f"got range [{t.min()}, {t.max()}]"
            )
        if not np.isin(np.asarray(y), (-1.0, 1.0)).all():
            raise ValueError("features.y must hold only -1 and +1")
        weights = np.asarray(w)
        if (weights < 0).any():
            raise ValueError("features.w must be >= 0")
        if not weights.any():
            raise ValueError("features.w is all zero: every sample has zero advantage")
        counts = np.bincount(t, minlength=num_tasks)
        task_weight = np.bincount(t, weights=weights, minlength=num_tasks)
        needed = sub.any(0)
        missing = np.flatnonzero(needed & (counts < (2 if holdout > 0 else 1)))
        if missing.size:
            raise ValueError(
                f"tasks {missing.tolist()} appear in subsets but have "
                f"{'fewer than 2 samples (holdout needs one to fit and one to score)' if holdout > 0 else 'no samples'}"
            )
        zero = np.flatnonzero(~((sub @ (task_weight > 0)) > 0))
        if zero.size:
            raise ValueError(f"subsets {zero[:10].tolist()} have all-zero sample weights")
    return Features(z=z, y=y, w=w, task=task.astype(jnp.int32)), subsets


def _slot_bound(num_subsets: int, num_tasks: int, members: int) -> int:
    """A bound on C (most subsets holding one task) from the shapes alone: 3 standard deviations
    above the mean count of a task when subsets of `members` tasks are drawn uniformly
    (binomial), rounded up to a multiple of 8. The draws of one preset then share one compiled
    solve instead of recompiling (~2.5 s) for each draw's exact C. Why 3: a draw exceeds it
    rarely (1 in 30 `sample_subsets` draws at n = 10, m = 200, α = 3; it then gets its exact C
    and one compile), and the padding stays small (80 slots against 67–82 exact at m = 200)."""
    p = members / num_tasks
    mean, sd = num_subsets * p, (num_subsets * p * (1 - p)) ** 0.5
    return min(num_subsets, 8 * math.ceil((mean + 3 * sd) / 8))


def _static_sizes(feats: Features, subsets: jax.Array, num_devices: int) -> _Sizes:
    """Padding sizes: per-preset bounds from concrete inputs (the exact C only when a draw
    exceeds `_slot_bound`); loose bounds when traced under jit."""
    num_subsets, num_tasks = subsets.shape
    if not (is_concrete(feats.task) and is_concrete(subsets)):
        return _Sizes(feats.task.shape[0], num_subsets // num_devices, num_tasks)
    sub = np.asarray(subsets)
    per_device = sub.reshape(num_devices, -1, num_tasks)
    members = max(int(sub.sum(1).max()), 1)
    slots = max(int(per_device.sum(1).max()), 1)
    return _Sizes(
        rows=max(int(np.bincount(np.asarray(feats.task), minlength=num_tasks).max()), 1),
        slots=max(slots, _slot_bound(per_device.shape[1], num_tasks, members)),
        members=members,
    )


def solve_subsets(
    features: Features,
    subsets,
    *,
    l2: float = 1e-2,
    holdout: float = 0.2,
    tol: float = 1e-5,
    max_iter: int = 200,
    method: str = "preconditioned",
    devices: int | str | None = None,
) -> SubsetSolution:
    """Solves the surrogate problem (eq. 4) for all m subsets in one jitted, batched call.

    Args:
      features: `Features` from `gradient_features` (z f32[N, d], y, w f32[N], task int[N]).
      subsets: bool[m, n] membership mask (e.g. from `sample_subsets`); n is the number of tasks.
      l2: strength of the L2 term l2/2 ‖θ‖² (sklearn's C = 1 / (l2 · |D_S|)).
      holdout: share of each task's samples held out of the fit to score it (its last samples in
        batch order); 0 fits on everything (then `heldout_loss` is NaN).
      tol: stop a subset once its objective is certified within a relative `tol` of the
        optimum: ‖∇‖² / (2·l2) ≤ tol · objective(θ) (strong convexity; the true gap is smaller,
        ~3× on benchmarks/solver.py's data). The default 1e-5 is the accuracy the estimate is
        held to (objective within 1e-5 of a float64 reference); it replaced a stop at
        ‖∇‖ ≤ 1e-4 · ‖∇ at 0‖, which solved 1–2 iterations past that accuracy.
      max_iter: iteration cap (a subset that hits it is not certified; see its `grad_norm`).
      method: "preconditioned" (default: lockstep L-BFGS of all subsets, preconditioned by the
        curvature bound, exact line search) or "optax" (optax L-BFGS per subset, `lax.map`).
      devices: None or 1 for one device; "all" or an int k to split the subsets across the first
        k local devices with `jax.shard_map` (results equal the single-device ones).

    Compiles once per shape of the problem (N, d, n, m, samples of the largest task, tasks of
    the largest subset), not per subset draw:
    the padding of the per-task subset lists is a bound from the shapes (`_slot_bound`), so
    other subset draws, `l2`, `tol` and `holdout` values reuse the compiled solve.

    Returns:
      `SubsetSolution(theta f32[m, d], train_loss f32[m], heldout_loss f32[m],
      train_loss_at_zero f32[m], heldout_loss_at_zero f32[m], grad_norm f32[m],
      iterations int32[m], task_train_loss f32[m, n], task_train_loss_at_zero f32[m, n])`.
    """
    feats, subsets = _check_inputs(features, subsets, l2, holdout, tol, max_iter, method)
    available = len(jax.local_devices())
    num_devices = available if devices == "all" else (devices or 1)
    if not (isinstance(num_devices, int) and 1 <= num_devices <= available):
        raise ValueError(f"devices must be None, 'all' or an int in [1, {available}], got {devices!r}")
    num_subsets = subsets.shape[0]
    pad = -num_subsets % num_devices
    # Pad with copies of the first subset so each device gets the same number of problems.
    padded = jnp.concatenate([subsets, jnp.repeat(subsets[:1], pad, axis=0)]) if pad else subsets
    outputs = _solve_jit(
        feats, padded, float(l2), float(tol), float(holdout),
        num_tasks=subsets.shape[1], sizes=_static_sizes(feats, padded, num_devices),
        method=method, max_iter=max_iter, num_devices=num_devices,
    )
    return SubsetSolution(*(x[:num_subsets] for x in outputs))


def estimate_subsets(
    features: Features,
    subsets,
    *,
    l2: float = 1e-2,
    holdout: float = 0.2,
    score_on: str = "train",
    score: str = "gain",
    **solver_options,
) -> jax.Array:
    """The estimate f̂(S) of fine-tuning on each subset (Algorithm 1): f32[m].

    Args:
      features, subsets, l2, holdout: as in `solve_subsets`.
      score_on: "train" (default) scores θ̂_S on the samples it was fitted on (the paper's eq. 3;
        with holdout=0 that is every sample); "heldout" on the held-out samples of the tasks in
        S. Chosen by agreement with real fine-tuning (Spearman of f̂ vs the true return gain over
        200 subsets, `experiments.validate`): train 0.79 / 0.78 vs held-out 0.64 / −0.11 on
        CartPole (two draws of transitions), 0.36 vs 0.03 on lunarlander-swapped; a task's
        held-out share is the data of few envs, a few correlated episodes.
      score: "gain" (default): f̂(S) = L̂_S(0) − L̂_S(θ̂_S), the loss reduction the adaptation
        buys over the unadapted θ*; "loss": the paper's f̂(S) = −L̂_S(θ̂_S). They differ by
        L̂_S(0) = log 2 · (mean |Â| over the samples of S), which only reflects the scale of the
        advantages of the tasks in S, not how well they train together; on CartPole its spread
        across subsets is ~30× that of the gain and drowns it (see experiments/validate.py).
      **solver_options: `tol`, `max_iter`, `method`, `devices` of `solve_subsets`.
    """
    if score_on not in SCORE_ON:
        raise ValueError(f"score_on must be one of {SCORE_ON}, got {score_on!r}")
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if score_on == "heldout" and holdout == 0:
        raise ValueError("score_on='heldout' needs holdout > 0; use score_on='train' for holdout=0")
    solution = solve_subsets(features, subsets, l2=l2, holdout=holdout, **solver_options)
    return subset_scores(solution, score_on, score)


def subset_scores(solution: SubsetSolution, score_on: str = "train", score: str = "gain"):
    """f̂ from a `SubsetSolution` (see `estimate_subsets` for `score_on` and `score`): f32[m]."""
    held = score_on == "heldout"
    loss = solution.heldout_loss if held else solution.train_loss
    if score == "loss":
        return -loss
    return (solution.heldout_loss_at_zero if held else solution.train_loss_at_zero) - loss


def member_gains(solution: SubsetSolution):
    """Per-task (directed) f̂: for each subset S and member task i, the reduction of task i's own
    train loss that θ̂_S buys, L̂_{S,i}(0) − L̂_{S,i}(θ̂_S): f32[m, n], NaN for tasks outside S.

    How much fine-tuning on S is estimated to help each of its tasks; `directed_affinity` turns
    it into "how much j's presence helps i" (the transfer of j onto i)."""
    return solution.task_train_loss_at_zero - solution.task_train_loss
