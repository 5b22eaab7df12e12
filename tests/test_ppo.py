"""PPO pieces against references: GAE vs NumPy, learning vs a random policy, transitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax import Transitions
from pgx_jax.envs import cartpole_family
from pgx_jax.rl.ppo import (
    PPOConfig,
    collect_transitions,
    evaluate,
    gae,
    make_agent,
    make_train,
    random_policy_returns,
)


def numpy_gae(reward, value, next_value, terminated, done, gamma, lam):
    advantages = np.zeros_like(reward)
    running = np.zeros_like(reward[0])
    for t in reversed(range(len(reward))):
        delta = reward[t] + gamma * (1 - terminated[t]) * next_value[t] - value[t]
        running = delta + gamma * lam * (1 - done[t]) * running
        advantages[t] = running
    return advantages


def test_gae_equals_numpy_reference():
    rng = np.random.default_rng(0)
    shape = (37, 3, 4)
    reward, value, next_value = (rng.normal(size=shape).astype(np.float32) for _ in range(3))
    terminated = (rng.random(shape) < 0.1).astype(np.float32)
    done = np.maximum(terminated, (rng.random(shape) < 0.05).astype(np.float32))
    advantages, targets = gae(*(jnp.asarray(x) for x in (reward, value, next_value, terminated, done)),
                              0.97, 0.9)
    expected = numpy_gae(reward, value, next_value, terminated, done, 0.97, 0.9)
    np.testing.assert_allclose(advantages, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(targets, expected + value, rtol=1e-5, atol=1e-5)


def test_ppo_learns_one_task_far_better_than_random():
    family = cartpole_family((0.5,))
    config = PPOConfig(steps_per_task=40_000, num_envs=4, num_steps=128, lr=1e-3)
    result = jax.jit(make_train(config, family))(jax.random.key(0))
    agent = make_agent(family, config)
    trained = float(evaluate(agent, result.params, family, jax.random.key(1), num_envs=16)[0])
    random_params = agent.init(jax.random.key(2), family.obs_dim)
    untrained = float(evaluate(agent, random_params, family, jax.random.key(1), num_envs=16)[0])
    assert untrained < 50
    assert trained > 150 and trained > 4 * untrained, (trained, untrained)
    assert result.metrics["episode_return"].shape == (config.num_updates, 1)


def test_random_policy_returns_match_gymnasium_cartpole():
    """The uniformly random policy on our CartPole (Gymnasium's pole) scores what it scores on
    Gymnasium's CartPole-v1 (~22 steps), within 4 standard errors of the two means."""
    gymnasium = pytest.importorskip("gymnasium")
    ours = float(random_policy_returns(cartpole_family((0.5,)), jax.random.key(0),
                                       num_envs=1000, max_steps=500)[0])
    env, rng = gymnasium.make("CartPole-v1"), np.random.default_rng(0)
    lengths = []
    for episode in range(1000):
        env.reset(seed=episode)
        done, length = False, 0
        while not done:
            _, reward, terminated, truncated, _ = env.step(int(rng.integers(2)))
            length, done = length + reward, terminated or truncated
        lengths.append(length)
    # Both means of 1000 episodes; the s.e. of their difference is √2 × one's.
    standard_error = np.sqrt(2) * np.std(lengths) / np.sqrt(len(lengths))
    assert abs(ours - np.mean(lengths)) < 4 * standard_error, (ours, np.mean(lengths))


def test_fine_tuning_a_subset_starts_from_given_params_and_keeps_one_hot_ids():
    family = cartpole_family((0.3, 0.6, 1.2))
    config = PPOConfig(steps_per_task=1024, num_envs=2, num_steps=128, task_onehot=True)
    agent = make_agent(family, config)
    start = agent.init(jax.random.key(0), family.obs_dim)
    result = make_train(config, family, task_ids=[2, 0], init_params=start)(jax.random.key(1))
    assert result.metrics["episode_return"].shape == (config.num_updates, 2)
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), start, result.params)
    assert max(jax.tree_util.tree_leaves(moved)) > 0
    batch = collect_transitions(agent, start, family, jax.random.key(2), steps_per_task=40,
                                num_envs=2, task_ids=[2, 0])
    np.testing.assert_array_equal(batch.task, np.repeat([2, 0], 40))
    np.testing.assert_array_equal(batch.obs[:40, 4:], np.tile([0, 0, 1], (40, 1)))
    np.testing.assert_array_equal(batch.obs[40:, 4:], np.tile([1, 0, 0], (40, 1)))


def test_collect_transitions_shapes_order_and_standardized_advantages():
    family = cartpole_family((0.3, 1.2))
    config = PPOConfig(steps_per_task=1024, num_envs=2, num_steps=128)
    agent = make_agent(family, config)
    params = agent.init(jax.random.key(0), family.obs_dim)
    batch = collect_transitions(agent, params, family, jax.random.key(1), steps_per_task=60, num_envs=3)
    assert isinstance(batch, Transitions)
    assert batch.obs.shape == (120, 4) and batch.action.shape == (120,) and batch.advantage.shape == (120,)
    np.testing.assert_array_equal(batch.task, np.repeat([0, 1], 60))
    for t in range(2):
        adv = np.asarray(batch.advantage[batch.task == t])
        assert abs(adv.mean()) < 1e-4 and abs(adv.std() - 1) < 1e-3
    # env-major: the first 20 samples of task 0 are one env's consecutive steps (x moves smoothly)
    x = np.asarray(batch.obs[:20, 0])
    assert np.all(np.abs(np.diff(x)) < 0.1)
    with pytest.raises(ValueError, match="multiple of num_envs"):
        collect_transitions(agent, params, family, jax.random.key(1), steps_per_task=61, num_envs=3)


def test_config_validation():
    with pytest.raises(ValueError, match="less than one rollout"):
        PPOConfig(steps_per_task=100, num_envs=8, num_steps=128)
    with pytest.raises(ValueError, match="num_minibatches"):
        PPOConfig(num_envs=3, num_steps=5, num_minibatches=4, steps_per_task=1000)
    with pytest.raises(ValueError, match="gamma"):
        PPOConfig(gamma=1.5)


@pytest.mark.parametrize("clip_value", [True, False])
def test_value_loss_with_and_without_value_clipping(clip_value):
    from pgx_jax.rl.ppo import Trajectory, ppo_loss

    family = cartpole_family((0.5,))
    config = PPOConfig(steps_per_task=1024, clip_value=clip_value)
    agent = make_agent(family, config)
    params = agent.init(jax.random.key(0), family.obs_dim)
    obs = jax.random.normal(jax.random.key(1), (16, 4))
    action = jnp.zeros(16, jnp.int32)
    value = agent.critic.apply(params["critic"], obs)
    old_value = value - 5.0  # far outside the ±0.2 clip range
    target = value + 100.0  # returns of hundreds, as on LunarLander
    zeros = jnp.zeros(16)
    batch = Trajectory(obs=obs, action=action, log_prob=agent.actor.log_prob(params["actor"], obs, action),
                       value=old_value, reward=zeros, terminated=zeros, done=zeros, next_value=zeros)
    _, parts = ppo_loss(agent, config, params, batch, jnp.linspace(-1, 1, 16), target)
    clipped = old_value + 0.2
    expected = 0.5 * np.mean(np.maximum(100.0 ** 2, np.asarray(clipped - target) ** 2)) if clip_value \
        else 0.5 * 100.0 ** 2
    assert float(parts["value_loss"]) == pytest.approx(expected, rel=1e-5)


def test_obs_norm_learns_statistics_of_every_rollout_then_freezes_for_fine_tuning():
    from pgx_jax.rl.ppo import TrainState, make_optimizer, reset_envs, rollout, trainable, update_step

    family = cartpole_family((0.3, 1.2))
    config = PPOConfig(steps_per_task=128, num_envs=2, num_steps=32, task_onehot=True,
                       normalize_obs=True)
    agent = make_agent(family, config)
    params = agent.init(jax.random.key(0), family.obs_dim)
    np.testing.assert_array_equal(params["obs_norm"].mean, np.zeros(4))
    # One update by hand: the statistics become the rollout's raw observations' moments (NumPy).
    tx = make_optimizer(config)
    ids = jnp.arange(2)
    state = TrainState(params=params, opt_state=tx.init(trainable(params)),
                       env=reset_envs(family.env, family.params, jax.random.key(1), 2),
                       key=jax.random.key(2))
    after, _ = update_step(agent, config, family.env, family.params, ids, tx, True, state)
    _, trajectory, _ = rollout(agent, family.env, family.params, ids, params, state.env,
                               jax.random.split(state.key, 3)[1], config.num_steps,
                               keep_raw_obs=True)
    raw = np.asarray(trajectory.raw_obs).reshape(-1, 4)
    assert raw.shape == (32 * 2 * 2, 4)
    # raw_obs are the observations the policy saw: normalized, they are its inputs.
    grid = jnp.broadcast_to(ids[:, None], (2, 2))
    np.testing.assert_allclose(
        jax.vmap(lambda o: agent.inputs(params, o, grid))(trajectory.raw_obs), trajectory.obs,
        rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(after.params["obs_norm"].mean, raw.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(after.params["obs_norm"].var, raw.var(0), rtol=1e-3, atol=1e-6)
    # The policy's inputs are clip((s − μ)/σ, ±10) then the one-hot (closed form).
    obs = jnp.asarray(raw[:5] * 50)
    moments = after.params["obs_norm"]
    expected = np.clip((raw[:5] * 50 - moments.mean) / np.sqrt(moments.var + 1e-8), -10, 10)
    inputs = agent.inputs(after.params, obs, jnp.ones(5, jnp.int32))
    np.testing.assert_allclose(inputs[:, :4], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(inputs[:, 4:], np.tile([0, 1], (5, 1)))
    # Without the update flag the statistics stay; training from scratch counts every step.
    frozen, _ = update_step(agent, config, family.env, family.params, ids, tx, False, state)
    np.testing.assert_array_equal(frozen.params["obs_norm"].mean, params["obs_norm"].mean)
    star = make_train(config, family)(jax.random.key(3)).params
    assert float(star["obs_norm"].count) == pytest.approx(2 * 128 + 1e-4)  # n × steps_per_task
    tuned = make_train(config, family, task_ids=[1], init_params=star)(jax.random.key(4)).params
    np.testing.assert_array_equal(tuned["obs_norm"].mean, star["obs_norm"].mean)
    np.testing.assert_array_equal(tuned["obs_norm"].var, star["obs_norm"].var)
    assert float(jnp.abs(tuned["actor"]["params"]["MLP_0"]["Dense_0"]["kernel"]
                         - star["actor"]["params"]["MLP_0"]["Dense_0"]["kernel"]).max()) > 0
    # The estimator's transitions carry the normalized inputs.
    batch = collect_transitions(agent, star, family, jax.random.key(5), steps_per_task=20,
                                num_envs=2)
    assert float(jnp.abs(batch.obs[:, :4]).max()) <= 10.0


def test_progress_reports_nan_until_an_episode_ends():
    """CartPole episodes last ≥ 8 steps, so the first 4-step update ends none: NaN, not 0."""
    family = cartpole_family((0.5, 1.0))
    config = PPOConfig(steps_per_task=64, num_envs=2, num_steps=4, num_minibatches=1)
    reported = []
    result = jax.jit(make_train(config, family, progress=lambda step, ret: reported.append(
        float(ret))))(jax.random.key(0))
    jax.block_until_ready(result.params)
    episodes = np.asarray(result.metrics["episodes"])
    returns = np.asarray(result.metrics["episode_return"])
    assert len(reported) == config.num_updates and np.isnan(reported[0])
    for value, ended, ret in zip(reported, episodes, returns):
        if ended.sum():
            assert value == pytest.approx(ret[ended > 0].mean(), rel=1e-5)
        else:
            assert np.isnan(value)
