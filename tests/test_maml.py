"""MAML-PG against references: closed-form PG step, NumPy batch, Hessian formula, finite differences."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from pgx_jax.envs import cartpole_family
from pgx_jax.envs.family import TaskFamily
from pgx_jax.rl.maml import (
    MAMLConfig,
    PGBatch,
    adapt,
    inner_update,
    make_adapt_eval,
    make_maml_agent,
    make_meta_train,
    meta_loss,
    pg_batch,
    policy_gradient_loss,
    sample_task_batches,
)


@pytest.fixture
def x64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def toy_family(obs_dim=3, num_actions=3):
    """A family that only fixes the policy's shapes (the tests below never step its env)."""
    return TaskFamily(env=None, params={"p": jnp.zeros(1)}, names=("toy",), discrete=True,
                      action_dim=num_actions, obs_dim=obs_dim)


def random_batch(rng, size, obs_dim, num_actions, dtype=np.float32):
    mask = (rng.random(size) < 0.8).astype(dtype)
    return PGBatch(obs=jnp.asarray(rng.normal(size=(size, obs_dim)).astype(dtype)),
                   action=jnp.asarray(rng.integers(num_actions, size=size).astype(np.int32)),
                   advantage=jnp.asarray(rng.normal(size=size).astype(dtype) * mask),
                   mask=jnp.asarray(mask))


def test_inner_update_is_the_closed_form_softmax_policy_gradient_step():
    # hidden=() makes the actor a linear softmax policy: logits = x W + b, whose surrogate
    # gradient is −Σ m Â x (e_a − p)ᵀ / Σ m (and the same without x for b).
    family = toy_family(obs_dim=3, num_actions=3)
    config = MAMLConfig(inner_lr=0.7, hidden=())
    agent = make_maml_agent(family, config)
    params = agent.init(jax.random.key(0), family.obs_dim)
    dense = params["actor"]["params"]["MLP_0"]["Dense_0"]
    dense = {"kernel": jax.random.normal(jax.random.key(1), dense["kernel"].shape),
             "bias": jax.random.normal(jax.random.key(2), dense["bias"].shape)}
    params = {**params, "actor": {"params": {"MLP_0": {"Dense_0": dense}}}}
    batch = random_batch(np.random.default_rng(0), 50, 3, 3)

    W, b = np.asarray(dense["kernel"], np.float64), np.asarray(dense["bias"], np.float64)
    x, a = np.asarray(batch.obs, np.float64), np.asarray(batch.action)
    adv, m = np.asarray(batch.advantage, np.float64), np.asarray(batch.mask, np.float64)
    logits = x @ W + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    residual = np.eye(3)[a] - p  # ∂ log π(a|x) / ∂ logits
    weight = -(m * adv / m.sum())[:, None]
    grad_W, grad_b = x.T @ (weight * residual), (weight * residual).sum(0)
    loss = -(m * adv * np.log(p[np.arange(50), a])).sum() / m.sum()

    np.testing.assert_allclose(policy_gradient_loss(agent.actor, params["actor"], batch), loss,
                               rtol=1e-5)
    for first_order in (False, True):  # the stop_gradient changes derivatives, not the value
        cfg = MAMLConfig(inner_lr=0.7, hidden=(), first_order=first_order)
        new = jax.jit(partial(inner_update, agent, cfg))(params, batch)
        new_dense = new["actor"]["params"]["MLP_0"]["Dense_0"]
        np.testing.assert_allclose(new_dense["kernel"], W - 0.7 * grad_W, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(new_dense["bias"], b - 0.7 * grad_b, rtol=1e-5, atol=1e-6)
        assert new["critic"] == {}


def numpy_pg_batch(obs, reward, done, gamma, lam, reg):
    """Independent reference: loops for the masks and returns, lstsq for the ridge baseline."""
    T, E, d = obs.shape
    mask = np.zeros((T, E))
    for e in range(E):
        for t in range(T):
            mask[t, e] = 1
            if done[t, e]:
                break
    to_go = np.zeros((T + 1, E))
    for t in reversed(range(T)):
        to_go[t] = reward[t] + gamma * (1 - done[t]) * to_go[t + 1]
    clipped = np.clip(obs, -10, 10)
    time = np.broadcast_to((np.arange(T) / T)[:, None, None], (T, E, 1))
    phi = np.concatenate([clipped, clipped**2, time, time**2, time**3, np.ones((T, E, 1))], -1)
    rows, targets = phi[mask == 1], to_go[:T][mask == 1]
    k = phi.shape[-1]
    ridge = reg * np.trace(rows.T @ rows) / k + 1e-8
    # Ridge regression as least squares on rows stacked with √ridge·I.
    w = np.linalg.lstsq(np.vstack([rows, np.sqrt(ridge) * np.eye(k)]),
                        np.concatenate([targets, np.zeros(k)]), rcond=None)[0]
    value = phi @ w
    advantage = np.zeros((T + 1, E))
    for t in reversed(range(T)):
        next_value = value[t + 1] if t + 1 < T else 0.0
        delta = reward[t] + gamma * (1 - done[t]) * next_value - value[t]
        advantage[t] = delta + gamma * lam * (1 - done[t]) * advantage[t + 1]
    advantage = advantage[:T]
    valid = advantage[mask == 1]
    advantage = mask * (advantage - valid.mean()) / (valid.std() + 1e-8)
    returns = (reward * mask).sum(0).mean()
    return mask, advantage, returns


def test_pg_batch_matches_numpy_reference():
    rng = np.random.default_rng(1)
    T, E, d = 15, 4, 2
    obs = rng.normal(size=(T, E, d)).astype(np.float32)
    reward = rng.normal(1.0, 0.5, size=(T, E)).astype(np.float32)
    done = (rng.random((T, E)) < 0.15).astype(np.float32)
    done[:, 0] = 0  # one env runs to the horizon
    action = rng.integers(2, size=(T, E)).astype(np.int32)
    inputs = [jnp.asarray(x) for x in (obs, action, reward, done)]
    batch, returns = jax.jit(partial(pg_batch, gamma=0.95, gae_lambda=0.9, baseline_reg=1e-3))(
        *inputs)
    mask, advantage, expected_returns = numpy_pg_batch(obs.astype(np.float64), reward, done,
                                                       0.95, 0.9, 1e-3)
    assert batch.obs.shape == (T * E, d) and batch.action.shape == (T * E,)
    np.testing.assert_array_equal(batch.mask, mask.reshape(-1))
    np.testing.assert_array_equal(batch.action, action.reshape(-1))
    np.testing.assert_allclose(batch.advantage, advantage.reshape(-1), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(returns, expected_returns, rtol=1e-5)
    # baseline="none", λ = 1: Â is the standardized discounted return-to-go.
    plain, _ = jax.jit(partial(pg_batch, gamma=0.95, gae_lambda=1.0, baseline="none"))(*inputs)
    to_go = np.zeros((T + 1, E))
    for t in reversed(range(T)):
        to_go[t] = reward[t] + 0.95 * (1 - done[t]) * to_go[t + 1]
    valid = to_go[:T][mask == 1]
    expected = mask * (to_go[:T] - valid.mean()) / valid.std()
    np.testing.assert_allclose(plain.advantage, expected.reshape(-1), rtol=1e-4, atol=1e-5)


def _meta_problem(first_order, inner_steps):
    family = toy_family(obs_dim=3, num_actions=3)
    config = MAMLConfig(inner_lr=0.5, inner_steps=inner_steps, hidden=(6,),
                        first_order=first_order)
    agent = make_maml_agent(family, config)
    params = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64),
                                    agent.init(jax.random.key(3), family.obs_dim))
    # Scale the weights up so the policy is far from uniform and the Hessian is not tiny.
    params = jax.tree_util.tree_map(lambda x: 3.0 * x + 0.1, params)
    rng = np.random.default_rng(4)
    supports = [random_batch(rng, 40, 3, 3, np.float64) for _ in range(inner_steps)]
    support = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *supports)
    query = random_batch(rng, 40, 3, 3, np.float64)
    return agent, config, params, support, query


def test_second_order_meta_gradient_matches_finite_differences(x64):
    # Two inner steps: the gradient flows through both (K = 1 is checked exactly below).
    agent, config, params, support, query = _meta_problem(False, 2)
    flat, unravel = ravel_pytree(params["actor"])
    assert flat.dtype == jnp.float64

    @jax.jit
    def loss_of(vector):
        return meta_loss(agent, config, {**params, "actor": unravel(vector)}, support, query)

    grad = jax.jit(jax.grad(loss_of))(flat)
    eps = 1e-5
    for i, direction in enumerate(jax.random.normal(jax.random.key(5), (4, flat.size), jnp.float64)):
        direction = direction / jnp.linalg.norm(direction)
        finite = (loss_of(flat + eps * direction) - loss_of(flat - eps * direction)) / (2 * eps)
        np.testing.assert_allclose(jnp.dot(grad, direction), finite, rtol=1e-7, atol=1e-9,
                                   err_msg=f"direction {i}")


def test_meta_gradient_is_the_hessian_formula_and_first_order_drops_it(x64):
    agent, config, params, support, query = _meta_problem(False, 1)
    _, config_fo, _, _, _ = _meta_problem(True, 1)
    flat, unravel = ravel_pytree(params["actor"])
    support1 = jax.tree_util.tree_map(lambda x: x[0], support)

    @jax.jit
    def compute(flat):
        def support_loss(vector):
            return policy_gradient_loss(agent.actor, unravel(vector), support1)

        def query_loss(vector):
            return policy_gradient_loss(agent.actor, unravel(vector), query)

        adapted = flat - 0.5 * jax.grad(support_loss)(flat)
        query_grad = jax.grad(query_loss)(adapted)
        hessian = jax.hessian(support_loss)(flat)
        expected = query_grad - 0.5 * hessian @ query_grad  # (I − α H) ∇L_q(θ'), H symmetric
        params_ = {**params, "actor": unravel(flat)}
        out = {"expected": expected, "query_grad": query_grad}
        for name, cfg in (("second", config), ("first", config_fo)):
            value, g = jax.value_and_grad(lambda p: meta_loss(agent, cfg, p, support, query))(params_)
            out[name], out[name + "_value"] = ravel_pytree(g["actor"])[0], value
            out[name + "_critic"] = g["critic"]
        return out

    out = compute(flat)
    assert out["second_critic"] == {} and out["first_critic"] == {}
    np.testing.assert_allclose(out["second"], out["expected"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["first"], out["query_grad"], rtol=1e-10, atol=1e-12)
    # The Hessian term is not negligible here, so the two estimators really differ.
    difference = jnp.linalg.norm(out["second"] - out["first"])
    assert difference > 0.05 * jnp.linalg.norm(out["first"])
    # Same meta-loss value either way (stop_gradient only changes derivatives).
    np.testing.assert_allclose(out["first_value"], out["second_value"], rtol=1e-12)


class CountdownEnv:
    """A gymnax-style toy env: episodes last exactly `params["length"]` steps, reward = action.

    obs = [t / 10, previous action]; automatic reset, `final_observation` as in gymnax 1.0.
    """

    def reset(self, key, params):
        return jnp.zeros(2), jnp.int32(0)

    def step(self, key, state, action, params):
        t = state + 1
        done = t >= params["length"]
        obs = jnp.stack([t / 10.0, action.astype(jnp.float32)])
        reward = action.astype(jnp.float32)
        return (jnp.where(done, 0.0, obs), jnp.where(done, 0, t), reward, done, jnp.bool_(False),
                {"final_observation": obs})


def test_sampled_batches_are_first_episodes_and_adapt_learns_from_the_support_batch():
    family = TaskFamily(env=CountdownEnv(), params={"length": jnp.asarray([4, 25])},
                        names=("short", "long"), discrete=True, action_dim=2, obs_dim=2)
    config = MAMLConfig(num_envs=3, num_steps=10, query_num_envs=2, query_num_steps=7,
                        hidden=(8,), inner_lr=0.3)
    agent = make_maml_agent(family, config)
    params = agent.init(jax.random.key(0), family.obs_dim)
    key = jax.random.key(1)
    key_support, _ = jax.random.split(key)

    @jax.jit
    def run(params, task):
        env_params = jax.tree_util.tree_map(lambda leaf: leaf[task], family.params)
        batches = sample_task_batches(agent, config, family.env, env_params, task, params, key)
        adapted = adapt(agent, config, params, family, task, key_support)
        by_hand = inner_update(agent, config, params,
                               jax.tree_util.tree_map(lambda x: x[0], batches[0]))
        return batches, adapted, by_hand

    for task, length in ((0, 4), (1, 25)):
        (support, query, pre, post), adapted, expected = run(params, task)
        assert support.obs.shape == (1, 10 * 3, 2) and query.obs.shape == (7 * 2, 2)
        for batch, steps, envs, episode_return in ((support, 10, 3, pre), (query, 7, 2, post)):
            # [T·E] → [T, E]; only each env's first episode counts, cut at the horizon.
            mask = np.asarray(batch.mask).reshape(-1, steps, envs)[0]
            expected_mask = (np.arange(steps) < length)[:, None] * np.ones(envs)
            np.testing.assert_array_equal(mask, expected_mask)
            action = np.asarray(batch.action).reshape(-1, steps, envs)[0]
            np.testing.assert_allclose(episode_return, (mask * action).sum(0).mean(), rtol=1e-6)
            valid = np.asarray(batch.advantage).reshape(-1)[mask.reshape(-1) == 1]
            assert abs(valid.mean()) < 1e-4 and abs(valid.std() - 1) < 1e-3
            assert np.all(np.asarray(batch.advantage).reshape(-1)[mask.reshape(-1) == 0] == 0)
        # The meta-objective's support batch is the one `adapt` learns from (same keys).
        jax.tree_util.tree_map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), adapted, expected
        )
        assert not np.allclose(ravel_pytree(adapted)[0], ravel_pytree(params)[0])


def test_short_meta_training_improves_post_adaptation_return():
    family = cartpole_family((0.3, 0.6, 1.2))
    config = MAMLConfig(inner_lr=0.3, outer_lr=0.01, meta_batch_size=2, num_envs=10,
                        num_steps=64, hidden=(32,), num_outer_steps=30)
    agent = make_maml_agent(family, config)
    init = agent.init(jax.random.key(0), family.obs_dim)
    reported = []
    result = jax.jit(make_meta_train(config, family, init_params=init,
                                     progress=lambda step, ret: reported.append(int(step))))(
        jax.random.key(1)
    )
    metrics = {name: np.asarray(value) for name, value in result.metrics.items()}
    assert set(metrics) == {"pre_adaptation_return", "post_adaptation_return", "meta_loss"}
    assert all(value.shape == (30,) for value in metrics.values())
    assert sorted(reported) == list(range(30))
    post = metrics["post_adaptation_return"]
    assert post[-5:].mean() > 1.5 * post[:5].mean(), post
    # Independent check on fresh batches, both policies in one vmapped call: 6 adaptation steps
    # on each training task from the initial and from the meta-trained θ (horizon 64).
    evaluate = make_adapt_eval(config, family)
    both = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), init, result.params)
    before, after = np.asarray(jax.jit(jax.vmap(
        lambda params: evaluate(jax.random.key(2), params, jnp.arange(3), 6)))(both))
    assert before.shape == after.shape == (3, 7)
    assert np.all((before >= 1) & (before <= 64))
    assert np.all(after > before + 10), (before, after)
    # Plain adaptation steps improve the initial policy too, if less.
    assert before[:, -2:].mean() > before[:, :2].mean() + 2, before


def test_call_time_task_ids_and_init_reuse_one_executable():
    family = cartpole_family((0.3, 0.6, 1.2, 2.0))
    config = MAMLConfig(num_envs=4, num_steps=16, hidden=(8,), num_outer_steps=2)
    agent = make_maml_agent(family, config)
    init = agent.init(jax.random.key(3), family.obs_dim)
    traces = []
    train = make_meta_train(config, family)  # task ids and init are arguments, not closed over
    counted = jax.jit(lambda key, ids, params: (traces.append(1), train(key, ids, params))[1])
    for ids in ([0, 2], [1, 3]):
        called = counted(jax.random.key(4), jnp.asarray(ids), init)
        closed = jax.jit(make_meta_train(config, family, task_ids=ids, init_params=init))(
            jax.random.key(4))
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                               called, closed)
    assert len(traces) == 1  # the second task set of the same size reused the executable
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        train(jax.random.key(0), [0, 4])
    with pytest.raises(ValueError, match="exceeds"):
        make_meta_train(MAMLConfig(meta_batch_size=2, num_envs=4, num_steps=16), family)(
            jax.random.key(0), [1])


def test_input_validation():
    for bad in ({"inner_steps": 0}, {"num_envs": 1.5}, {"num_steps": True},
                {"meta_batch_size": 0}, {"query_num_steps": -2}, {"inner_lr": -0.1},
                {"outer_lr": 0.0}, {"outer_lr": True}, {"gamma": 1.5}, {"gamma": "0.9"}, {"gae_lambda": -0.1}, {"baseline": "mlp"},
                {"first_order": "yes"}, {"hidden": [64]}, {"hidden": (0,)},
                {"baseline_reg": float("nan")}):
        with pytest.raises(ValueError, match="MAMLConfig"):
            MAMLConfig(**bad)
    family = cartpole_family((0.3, 0.6, 1.2))
    with pytest.raises(ValueError, match="exceeds"):
        make_meta_train(MAMLConfig(meta_batch_size=3), family, task_ids=[0, 2])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        make_meta_train(MAMLConfig(), family, task_ids=[0, 3])
    with pytest.raises(ValueError, match="empty"):
        make_meta_train(MAMLConfig(), family, task_ids=[])
    evaluate = make_adapt_eval(MAMLConfig(), family)
    params = None  # never reached: the arguments are checked first
    with pytest.raises(ValueError, match="adapt_steps"):
        evaluate(jax.random.key(0), params, [0], -1)
    with pytest.raises(ValueError, match="adapt_steps"):
        evaluate(jax.random.key(0), params, [0], 2.0)
    with pytest.raises(ValueError, match="integers"):
        evaluate(jax.random.key(0), params, [0.5], 1)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        adapt(make_maml_agent(family, MAMLConfig()), MAMLConfig(), params, family, -1,
              jax.random.key(0))
    z = jnp.zeros((3, 2))
    with pytest.raises(ValueError, match="baseline"):
        pg_batch(z[..., None], z.astype(jnp.int32), z, z, gamma=0.9, gae_lambda=1.0,
                 baseline="critic")
