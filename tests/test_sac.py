"""Multitask networks (Soft Modularization, PaCo, CARE, multi-head) and multitask SAC."""

import collections
import dataclasses
import math

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from scipy import stats

from pgx_jax.envs.family import TaskFamily
from pgx_jax.rl.networks import CARENetwork, MultiHeadMLP, PaCoNetwork, SoftModularNetwork
from pgx_jax.rl.sac import (
    NETWORKS,
    Batch,
    ReplayBuffer,
    SACConfig,
    critic_target,
    evaluate,
    init_sac,
    make_sac_agent,
    make_train,
    reset_task_weights,
    tanh_gaussian_log_prob,
    task_loss_mask,
    update,
)


def _inputs(key, batch, obs_dim, num_tasks):
    obs = jax.random.normal(key, (batch, obs_dim))
    return jnp.concatenate([obs, jax.nn.one_hot(jnp.arange(batch) % num_tasks, num_tasks)], -1)


def test_soft_modularization_shapes_routing_and_gradients():
    net = SoftModularNetwork(output_dim=6, num_tasks=4, num_layers=3, num_modules=3, module_dim=16)
    x = _inputs(jax.random.key(0), 8, 5, 4)
    params = net.init(jax.random.key(1), x)
    out, routing = net.apply(params, x, return_routing=True)
    assert out.shape == (8, 6) and routing.shape == (8, 2, 3, 3)
    assert np.all(np.asarray(routing) >= 0)
    np.testing.assert_allclose(routing.sum(-1), 1.0, rtol=1e-5)
    # Routing depends on the task: same observation, two one-hots.
    same_obs = jnp.concatenate([jnp.tile(x[:1, :5], (2, 1)), jnp.eye(4)[:2]], -1)
    _, two = net.apply(params, same_obs, return_routing=True)
    assert not np.allclose(two[0], two[1])
    # Every parameter (each module of each layer, routing, embeddings) gets a gradient.
    grads = jax.grad(lambda p: jnp.sum(net.apply(p, x) ** 2))(params)
    for name, g in traverse_util.flatten_dict(grads["params"], sep="/").items():
        g = np.asarray(g)
        if name.startswith("modules_") and name.endswith("kernel"):
            assert all(np.abs(g[module]).sum() > 0 for module in range(3)), name
        assert np.abs(g).sum() > 0, name
    with pytest.raises(ValueError, match="num_layers"):
        SoftModularNetwork(output_dim=2, num_tasks=4, num_layers=1).init(jax.random.key(0), x)


def _soft_modular_reference(params, x, num_tasks, num_layers, m):
    """Soft Modularization written directly from its equations in NumPy (float64, per-module
    loops, the routing mix as m × m matrix products): the reference for the fused layers."""
    p = {k: np.asarray(v, np.float64) for k, v in
         traverse_util.flatten_dict(params["params"], sep="/").items()}
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    dense = lambda name, v: v @ p[f"{name}/kernel"] + p.get(f"{name}/bias", 0.0)  # noqa: E731
    obs, task = np.asarray(x[:, :-num_tasks], np.float64), np.asarray(x[:, -num_tasks:], np.float64)
    state = dense("state_embedding_out", relu(dense("state_embedding_0", obs)))
    gate = state * (task @ p["task_embedding/kernel"])
    logits, weights = dense("routing_0", relu(gate)), []
    for layer in range(num_layers - 1):
        if layer > 0:
            logits = dense(f"routing_{layer}", relu(dense(f"routing_up_{layer}", logits)) * gate)
        e = np.exp(logits.reshape(-1, m, m) - logits.reshape(-1, m, m).max(-1, keepdims=True))
        weights.append(e / e.sum(-1, keepdims=True))
    inputs = [relu(state)] * m
    for layer in range(num_layers):
        outputs = [relu(inputs[i] @ p[f"modules_{layer}_kernel"][i] + p[f"modules_{layer}_bias"][i])
                   for i in range(m)]
        if layer < num_layers - 1:
            stacked = np.stack(outputs, 1)  # [B, m, width]
            inputs = list(np.moveaxis(np.matmul(weights[layer], stacked), 1, 0))
        else:
            inputs = outputs
    return dense("head", np.mean(inputs, 0))


@pytest.mark.parametrize("layers, modules", [(2, 1), (2, 2), (3, 4)])
def test_fused_soft_modularization_equals_its_equations(layers, modules):
    net = SoftModularNetwork(output_dim=5, num_tasks=4, num_layers=layers, num_modules=modules,
                             module_dim=12)
    x = _inputs(jax.random.key(3), 7, 6, 4)
    params = net.init(jax.random.key(4), x)
    np.testing.assert_allclose(net.apply(params, x), _soft_modular_reference(params, x, 4, layers,
                                                                              modules),
                               rtol=1e-4, atol=1e-5)
    # Extra leading axes (e.g. [n, E, ...] env grids) give the same rows.
    grid = net.apply(params, x[None].repeat(2, 0))
    np.testing.assert_allclose(grid[1], net.apply(params, x), rtol=1e-6, atol=1e-6)


def test_multi_head_mlp_uses_the_head_of_the_task():
    net = MultiHeadMLP(output_dim=3, num_tasks=4, hidden=(16,))
    x = _inputs(jax.random.key(2), 8, 5, 4)
    params = net.init(jax.random.key(3), x)
    head = params["params"]["Dense_1"]
    torso = jax.nn.relu(x @ params["params"]["Dense_0"]["kernel"] + params["params"]["Dense_0"]["bias"])
    all_heads = (torso @ head["kernel"] + head["bias"]).reshape(8, 4, 3)
    expected = all_heads[jnp.arange(8), jnp.arange(8) % 4]
    np.testing.assert_allclose(net.apply(params, x), expected, rtol=1e-5, atol=1e-6)
    # A loss on task 0's samples moves only task 0's head.
    task0 = x[jnp.arange(8) % 4 == 0]
    grads = jax.grad(lambda p: jnp.sum(net.apply(p, task0)))(params)["params"]["Dense_1"]["kernel"]
    grads = np.asarray(grads).reshape(16, 4, 3)
    assert np.abs(grads[:, 0]).sum() > 0 and np.all(grads[:, 1:] == 0)


def test_paco_task_network_is_the_weighted_sum_of_the_shared_sets():
    net = PaCoNetwork(output_dim=3, num_tasks=4, hidden=(16, 8), num_sets=5)
    x = _inputs(jax.random.key(2), 8, 5, 4)
    params = net.init(jax.random.key(3), x)
    # Biases start at zero: give them values too, then check θ_τ = Φ w_τ against a plain MLP with
    # those parameters.
    noise = jax.tree_util.tree_leaves(params)
    keys = jax.random.split(jax.random.key(4), len(noise))
    params = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), [
        leaf + 0.3 * jax.random.normal(k, leaf.shape) for leaf, k in zip(noise, keys)])
    layers = params["params"]
    w = np.asarray(layers["task_weights"]["kernel"], np.float64)  # [n, K]
    out = np.asarray(net.apply(params, x))
    for row in range(8):
        h = np.asarray(x[row], np.float64)
        for index in range(3):
            layer = layers[f"layer_{index}"]
            w_task = w[row % 4]
            h = (h @ np.tensordot(w_task, np.asarray(layer["kernel"], np.float64), 1)
                 + w_task @ np.asarray(layer["bias"], np.float64))
            h = np.maximum(h, 0) if index < 2 else h
        np.testing.assert_allclose(out[row], h, rtol=1e-4, atol=1e-4)
    # Task 0's loss moves only w_0 among the task weights.
    grads = jax.grad(lambda p: jnp.sum(net.apply(p, x[::4])))(params)
    g = np.asarray(grads["params"]["task_weights"]["kernel"])
    assert np.abs(g[0]).sum() > 0 and np.all(g[1:] == 0)
    with pytest.raises(ValueError, match="num_sets"):
        PaCoNetwork(output_dim=3, num_tasks=4, num_sets=0).init(jax.random.key(0), x)


def test_care_attention_sums_to_one_and_follows_the_task_context():
    net = CARENetwork(output_dim=3, num_tasks=4, num_encoders=3, encoder_width=8, hidden=(16,))
    x = _inputs(jax.random.key(2), 8, 5, 4)
    params = net.init(jax.random.key(3), x)
    out, attention = net.apply(params, x, return_attention=True)
    assert attention.shape == (8, 3) and out.shape == (8, 3)
    np.testing.assert_allclose(attention.sum(-1), 1.0, rtol=1e-6)
    # α is the task's (same for rows of one task whatever the state), and differs across tasks.
    np.testing.assert_allclose(attention[:4], attention[4:], rtol=1e-6)
    assert np.abs(np.asarray(attention[0] - attention[1])).max() > 1e-4
    # The same state under another task's context gives another output.
    other = x.at[:, -4:].set(jnp.roll(x[:, -4:], 1, axis=-1))
    assert np.abs(np.asarray(net.apply(params, other) - out)).max() > 1e-4
    for bad in ({"num_encoders": 0}, {"encoder_width": 0}):
        with pytest.raises(ValueError, match="CARENetwork"):
            CARENetwork(output_dim=3, num_tasks=4, **bad).init(jax.random.key(0), x)


def test_paco_maskout_and_w_reset():
    loss = jnp.array([1.0, 50.0, 2.0, 70.0, 1.0, 0.5])
    task = jnp.array([0, 1, 0, 1, 2, 2])
    keep, flagged = task_loss_mask(loss, task, 4, threshold=10.0)
    np.testing.assert_array_equal(keep, [1, 0, 1, 0, 1, 1])
    np.testing.assert_array_equal(flagged, [False, True, False, False])  # task 3: no samples
    w = jax.random.normal(jax.random.key(0), (4, 5))
    params = {"params": {"task_weights": {"kernel": w}, "layer_0": {"kernel": w + 1}}}
    new = reset_task_weights(params, flagged, jax.random.key(1))
    new_w = np.asarray(new["params"]["task_weights"]["kernel"])
    np.testing.assert_array_equal(new["params"]["layer_0"]["kernel"], w + 1)  # not a w
    np.testing.assert_array_equal(new_w[[0, 2, 3]], np.asarray(w)[[0, 2, 3]])
    # Task 1's new w is a convex combination of the others': least squares, then the simplex.
    others = np.asarray(w)[[0, 2, 3]].T
    coef, *_ = np.linalg.lstsq(others, new_w[1], rcond=None)
    np.testing.assert_allclose(others @ coef, new_w[1], atol=1e-5)
    assert np.all(coef >= -1e-5) and abs(coef.sum() - 1) < 1e-5
    everyone = reset_task_weights(params, jnp.ones(4, bool), jax.random.key(1))
    np.testing.assert_array_equal(everyone["params"]["task_weights"]["kernel"], w)
    # In an update: a task whose loss blows up is masked and reset; the rest train.
    config, agent, state, batch = _tiny_setup("paco", paco_loss_threshold=1e5)
    batch = batch.replace(reward=jnp.where(batch.task == 1, 1e4, 0.0))
    new, metrics = update(agent, config, state, batch, jax.random.key(3))
    assert float(metrics["masked_tasks"]) == 1
    for params in (new.actor, new.critic, new.target_critic):  # w_1 between the trained w_0, w_2
        for name, w in traverse_util.flatten_dict(params).items():
            if "task_weights" in name:
                w = np.asarray(w, np.float64)
                a = np.dot(w[1] - w[2], w[0] - w[2]) / np.dot(w[0] - w[2], w[0] - w[2])
                np.testing.assert_allclose(a * w[0] + (1 - a) * w[2], w[1], atol=1e-5)
                assert -1e-5 <= a <= 1 + 1e-5
    # The masked task's samples give no gradient: a larger blow-up changes nothing (unmasked, it
    # would change the update).
    def after(config, scale):
        louder = batch.replace(reward=batch.reward * scale)
        return jax.tree_util.tree_leaves(update(agent, config, state, louder,
                                                jax.random.key(3))[0].critic)

    for a, b in zip(after(config, 1.0), after(config, 2.0)):
        np.testing.assert_array_equal(a, b)
    free = dataclasses.replace(config, paco_loss_threshold=1e12)
    assert any(np.any(a != b) for a, b in zip(after(free, 1.0), after(free, 2.0)))


def test_tanh_gaussian_log_prob_is_the_change_of_variables():
    rng = np.random.default_rng(0)
    mean, log_std = rng.normal(size=(5, 2)), rng.normal(scale=0.5, size=(5, 2))
    pre_tanh = rng.normal(scale=3.0, size=(5, 2))  # large |u| stresses the stable form
    expected = (stats.norm.logpdf(pre_tanh, mean, np.exp(log_std))
                - np.log(1 - np.tanh(pre_tanh) ** 2)).sum(-1)
    np.testing.assert_allclose(tanh_gaussian_log_prob(mean, log_std, pre_tanh), expected,
                               rtol=1e-4)


def _tiny_setup(network="mlp", **overrides):
    config = SACConfig(network=network, hidden=(8,), softmod_width=8, init_alpha=0.5,
                       **overrides)
    agent = make_sac_agent(config, num_tasks=3, action_dim=2)
    state = init_sac(agent, config, obs_dim=4, key=jax.random.key(0))
    state = state.replace(log_alpha=jnp.log(jnp.array([0.5, 0.1, 2.0])))
    keys = jax.random.split(jax.random.key(1), 3)
    batch = Batch(obs=_inputs(keys[0], 6, 4, 3),
                  action=jax.random.uniform(keys[1], (6, 2), minval=-1, maxval=1),
                  reward=jnp.arange(6.0), next_obs=_inputs(keys[2], 6, 4, 3),
                  terminated=jnp.array([0, 0, 1, 0, 1, 0.0]), task=jnp.arange(6) % 3)
    return config, agent, state, batch


def test_critic_target_equals_a_hand_computation():
    config, agent, state, batch = _tiny_setup()
    key = jax.random.key(7)
    target = np.asarray(critic_target(agent, config, state, batch, key))
    # By hand: the same noise, the tanh-Gaussian density in NumPy, min of the target critics.
    mean, log_std = (np.asarray(v, np.float64) for v in agent.actor.apply(state.actor, batch.next_obs))
    noise = np.asarray(jax.random.normal(key, mean.shape), np.float64)
    pre_tanh = mean + np.exp(log_std) * noise
    action = np.tanh(pre_tanh)
    log_prob = (stats.norm.logpdf(pre_tanh, mean, np.exp(log_std))
                - np.log(1 - action**2)).sum(-1)
    q = np.asarray(agent.critic.apply(state.target_critic, batch.next_obs, jnp.asarray(action, jnp.float32)))
    alpha = np.array([0.5, 0.1, 2.0])[np.asarray(batch.task)]
    expected = (np.asarray(batch.reward) + 0.99 * (1 - np.asarray(batch.terminated))
                * (q.min(0) - alpha * log_prob))
    np.testing.assert_allclose(target, expected, rtol=1e-4, atol=1e-4)


# The temperatures' update sees only the actor's log-probabilities, whatever the network; every
# network's update runs in test_update_keeps_the_state_types... below. PaCo is kept for its
# per-task loss masks, which act in the same update.
@pytest.mark.parametrize("network", ["mlp", "paco"])
def test_temperature_moves_toward_the_target_entropy(network):
    # Policy entropy per action dim ≈ 1.4 at init: far above H̄ = −2, far below H̄ = +20.
    for target, direction in ((-2.0, -1), (20.0, +1)):
        config, agent, state, batch = _tiny_setup(network, target_entropy=target)
        batch = batch.replace(task=jnp.array([0, 0, 0, 2, 2, 2]))  # task 1 absent
        new, metrics = jax.jit(update, static_argnums=(0, 1))(agent, config, state, batch,
                                                              jax.random.key(3))
        change = np.asarray(new.log_alpha - state.log_alpha)
        assert np.all(np.sign(change[[0, 2]]) == direction), change
        assert change[1] == 0  # a task without samples keeps its temperature
        assert np.isfinite(float(metrics["critic_loss"]))
        # Targets move by τ toward the updated critics.
        old, fresh, moved = (traverse_util.flatten_dict(t) for t in (
            state.target_critic, new.critic, new.target_critic))
        for name in old:
            np.testing.assert_allclose(moved[name], (1 - config.tau) * old[name]
                                       + config.tau * fresh[name], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("network", NETWORKS)
def test_update_keeps_the_state_types_so_one_compile_serves_every_step(network):
    """The state an update returns has the dtypes, shapes and weak types of the state it was
    given (a weak-typed log α once made the second update recompile the whole step); two
    updates of every network run."""
    config = SACConfig(network=network, hidden=(8,), batch_size=4, softmod_width=8,
                       care_width=8)
    agent = make_sac_agent(config, 3, 2)
    state = init_sac(agent, config, 5, jax.random.key(0))
    batch = Batch(obs=agent.observe(jnp.ones((4, 5)), jnp.arange(4) % 3), action=jnp.zeros((4, 2)),
                  reward=jnp.ones(4), next_obs=agent.observe(jnp.ones((4, 5)), jnp.arange(4) % 3),
                  terminated=jnp.zeros(4), task=jnp.arange(4) % 3)
    step = jax.jit(lambda s, k: update(agent, config, s, batch, k)[0])
    after = step(state, jax.random.key(1))
    assert jax.tree_util.tree_map(jax.typeof, after) == jax.tree_util.tree_map(jax.typeof, state)
    step(after, jax.random.key(2))
    assert step._cache_size() == 1


def test_replay_buffer_matches_a_ring_of_python_rows():
    example = Batch.example(2, 1)
    buffer = ReplayBuffer.create(5, example)
    reference = collections.deque(maxlen=5)
    counter = 0
    for count, padding in ((3, 0), (1, 2), (4, 0), (2, 3)):
        # `padding` rows after the first `count` (learners padded to one width) are dropped.
        rewards = jnp.concatenate([jnp.arange(counter, counter + count, dtype=jnp.float32),
                                   jnp.full(padding, -1.0)])
        counter += count
        rows = jax.tree_util.tree_map(
            lambda x: jnp.zeros((count + padding,) + x.shape[1:], x.dtype), example)
        buffer = buffer.add(rows.replace(reward=rewards), count if padding else None)
        reference.extend(np.asarray(rewards[:count]).tolist())
        assert int(buffer.size) == len(reference)
        assert sorted(np.asarray(buffer.data.reward)[:int(buffer.size)].tolist()) == sorted(reference)
    sample = buffer.sample(jax.random.key(0), 1000)
    assert set(np.asarray(sample.reward).tolist()) == set(reference)
    # Traced counts under jit and vmap (learners of different widths): the same as one by one.
    rows = jax.tree_util.tree_map(lambda x: jnp.zeros((4,) + x.shape[1:], x.dtype), example)
    rows = rows.replace(reward=jnp.arange(4.0) + 100)
    counts = jnp.array([4, 1, 0])
    stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x] * 3), buffer)
    added = jax.jit(jax.vmap(ReplayBuffer.add, in_axes=(0, None, 0)))(stacked, rows, counts)
    for index, count in enumerate((4, 1, 0)):
        alone = buffer.add(rows, count)
        for together, single in zip(jax.tree_util.tree_leaves(added), jax.tree_util.tree_leaves(alone)):
            np.testing.assert_array_equal(together[index], single)
    with pytest.raises(ValueError, match="count must lie"):
        buffer.add(rows, 5)
    with pytest.raises(ValueError, match="exceed the capacity"):
        buffer.add(jax.tree_util.tree_map(lambda x: jnp.zeros((6,) + x.shape[1:], x.dtype),
                                          example))


def _pendulum_family():
    env, params = gymnax.make("Pendulum-v1")
    stacked = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], params)
    return TaskFamily(env=env, params=stacked, names=("pendulum",), discrete=False,
                      action_dim=1, obs_dim=3)


def test_short_sac_run_on_pendulum_beats_random_clearly():
    family = _pendulum_family()
    config = SACConfig(hidden=(64, 64), total_steps=6000, learning_starts=500, batch_size=128)
    agent = make_sac_agent(config, 1, 1)
    reported = []
    result = jax.jit(make_train(config, family, action_scale=2.0,
                                progress=lambda step, ret: reported.append(int(step))))(
        jax.random.key(0))
    assert reported == list(range(99, 6000, 100))
    before = float(evaluate(agent, init_sac(agent, config, 3, jax.random.key(0)), family,
                            jax.random.key(1), action_scale=2.0)[0])
    after = float(evaluate(agent, result.state, family, jax.random.key(1), action_scale=2.0)[0])
    # Random/initial policies score about −1200 to −1600 on Pendulum; a learned swing-up > −600.
    assert before < -1000 and after > -600 and after > before + 600, (before, after)
    assert math.isfinite(float(result.metrics["critic_loss"][-1]))


def test_config_validation():
    for bad in ({"network": "cnn"}, {"batch_size": 0}, {"tau": 0.0}, {"learning_starts": -1},
                {"total_steps": 10, "learning_starts": 20}, {"actor_lr": 0}, {"paco_sets": 0},
                {"care_encoders": 0}, {"care_width": -1}, {"paco_loss_threshold": 0}):
        with pytest.raises(ValueError, match="SACConfig"):
            SACConfig(**bad)
