"""Host-stepped multitask SAC: many learners in one vmapped update, envs stepping during it."""

import jax
import numpy as np
import pytest

from pgx_jax.envs.metaworld import MetaWorldFamily
from pgx_jax.rl.host_sac import LearnerLayout, evaluate_sac_on_host, train_sac_on_host
from pgx_jax.rl.sac import SACConfig, make_sac_agent

pytest.importorskip("metaworld")

FAMILY = MetaWorldFamily(names=("reach-v3", "drawer-close-v3", "window-close-v3"), seed=5,
                         max_episode_steps=10)  # short episodes: some end in the run
# Tiny networks and a short run: the checks are about bookkeeping, not learning.
# A buffer of 10 rows wraps around within the run (3 tasks add 3 rows per step).
CONFIG = SACConfig(network="mlp", hidden=(16,), batch_size=8, total_steps=24,
                   learning_starts=8, updates_per_step=2, buffer_size=10)


def test_layout_moves_rows_to_padded_learners_and_back():
    layout = LearnerLayout.of([[2, 0], [1], [0, 1, 2]])
    np.testing.assert_array_equal(layout.rows, [2, 0, 1, 0, 1, 2])
    assert layout.width == 3
    np.testing.assert_array_equal(layout.tasks, [[2, 0, 2], [1, 1, 1], [0, 1, 2]])
    rows = np.arange(6 * 2).reshape(6, 2)
    padded = layout.to_learners(rows)
    assert padded.shape == (3, 3, 2)
    np.testing.assert_array_equal(padded[1], [[4, 5], [0, 0], [0, 0]])
    np.testing.assert_array_equal(layout.to_rows(padded), rows)
    per_task = layout.per_learner(np.array([0.5, 1.0, 2.0, 3.0, 4.0, 5.0]), num_tasks=4)
    expected = [[1.0, np.nan, 0.5, np.nan], [np.nan, 2.0, np.nan, np.nan],
                [3.0, 4.0, 5.0, np.nan]]
    np.testing.assert_array_equal(per_task, expected)
    for bad in ([], [[0], []], [[1, 1]]):
        with pytest.raises(ValueError, match="group"):
            LearnerLayout.of(bad)


def _train(groups, keys, overlap=True, stream=7):
    layout = LearnerLayout.of(groups)
    agent = make_sac_agent(CONFIG, FAMILY.num_tasks, FAMILY.action_dim)
    with FAMILY.make_envs(stream, rows=layout.rows) as envs:
        result = train_sac_on_host(agent, CONFIG, envs, layout, keys, log_every=6,
                                   overlap=overlap)
    with FAMILY.make_envs(stream + 1, rows=layout.rows) as envs:
        evaluated = evaluate_sac_on_host(agent, result.state, envs, layout)
    return result, evaluated


def test_vmapped_learners_equal_separate_learners_with_the_same_keys():
    groups = [[0, 2], [1], [2, 1, 0]]  # three sizes: padding, reordering, a shared task
    keys = jax.random.split(jax.random.key(3), len(groups))
    joint, joint_eval = _train(groups, keys)
    for index, group in enumerate(groups):
        alone, alone_eval = _train([group], keys[index:index + 1])
        for together, single in zip(jax.tree_util.tree_leaves(joint.state),
                                    jax.tree_util.tree_leaves(alone.state)):
            np.testing.assert_allclose(together[index], single[0], rtol=2e-5, atol=2e-6)
        for name in ("episode_return", "success", "critic_loss", "actor_loss"):
            np.testing.assert_allclose(joint.metrics[name][:, index], alone.metrics[name][:, 0],
                                       rtol=1e-4, atol=1e-5, err_msg=name)
        for together, single in zip(joint_eval, alone_eval):
            np.testing.assert_allclose(together[index], single[0], rtol=1e-4, atol=1e-4)
    # Tasks a learner lacks are NaN; its own have numbers.
    assert np.isnan(joint_eval[0][1, [0, 2]]).all() and not np.isnan(joint_eval[0][1, 1])
    # Warm-up intervals (8 steps per task = 8 vector steps > the first interval of 6) have no
    # update metrics; later ones do.
    assert np.isnan(joint.metrics["critic_loss"][0]).all()
    assert np.isfinite(joint.metrics["critic_loss"][1:]).all()


def test_overlapping_the_update_with_the_envs_changes_no_number():
    keys = jax.random.split(jax.random.key(4), 2)
    overlapped, _ = _train([[0, 1], [2]], keys, overlap=True)
    waited, _ = _train([[0, 1], [2]], keys, overlap=False)
    for a, b in zip(jax.tree_util.tree_leaves(overlapped.state),
                    jax.tree_util.tree_leaves(waited.state)):
        np.testing.assert_array_equal(a, b)
    for name in ("episode_return", "success", "critic_loss", "actor_loss", "alpha_mean"):
        np.testing.assert_array_equal(overlapped.metrics[name], waited.metrics[name],
                                      err_msg=name)


def test_bad_layouts_and_keys_fail_clearly():
    layout = LearnerLayout.of([[0], [1]])
    agent = make_sac_agent(CONFIG, FAMILY.num_tasks, FAMILY.action_dim)
    with FAMILY.make_envs(0, rows=[0, 2]) as envs:
        with pytest.raises(ValueError, match="rows"):
            train_sac_on_host(agent, CONFIG, envs, layout, jax.random.split(jax.random.key(0), 2))
    with FAMILY.make_envs(0, rows=layout.rows) as envs:
        with pytest.raises(ValueError, match="one per learner"):
            train_sac_on_host(agent, CONFIG, envs, layout, jax.random.split(jax.random.key(0), 3))
    with FAMILY.make_envs(0, rows=[1, 0]) as envs:
        with pytest.raises(ValueError, match="rows"):
            evaluate_sac_on_host(agent, None, envs, layout)
        with pytest.raises(ValueError, match="leaves no update"):
            train_sac_on_host(agent, SACConfig(network="mlp", hidden=(16,), total_steps=8,
                                               learning_starts=8),
                              envs, LearnerLayout.of([[1], [0]]),
                              jax.random.split(jax.random.key(0), 2))
    with pytest.raises(ValueError, match="rows must be"):
        FAMILY.make_envs(0, rows=[3])
    with pytest.raises(ValueError, match="one per row"):
        FAMILY.make_envs([0, 1, 2], rows=[0, 1])


def test_a_row_replays_its_episodes_wherever_it_sits_in_the_vector():
    actions = np.random.default_rng(0).uniform(-1, 1, (3, 1, 4))
    with FAMILY.make_envs([7, 7, 8], rows=[2, 0, 2]) as envs:
        first = [envs.reset()] + [envs.step(actions)[0] for _ in range(3)]
    with FAMILY.make_envs([8, 7], rows=[2, 2]) as envs:
        second = [envs.reset()] + [envs.step(actions[[2, 0]])[0] for _ in range(3)]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a[[2, 0]], b)  # same (task, stream) rows, other places
    assert not np.array_equal(first[0][0], first[0][2])  # another stream: other episodes
