"""Ground-truth fine-tuning of many subsets in one call, and the validation experiment."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax.envs import cartpole_family
from pgx_jax.rl.ground_truth import fine_tune_subsets, subset_members
from pgx_jax.rl.ppo import PPOConfig, evaluate, make_agent, make_finetune


def test_batched_fine_tuning_equals_one_run_at_a_time():
    """The vmapped runs equal separate runs of make_finetune + evaluate with the same keys."""
    family = cartpole_family((0.3, 0.6, 1.2))
    config = PPOConfig(steps_per_task=512, num_envs=2, num_steps=64, num_minibatches=2)
    agent = make_agent(family, config)
    start = agent.init(jax.random.key(0), family.obs_dim)
    subsets = np.array([[1, 1, 0], [0, 1, 1]], bool)
    key = jax.random.key(1)
    batched = fine_tune_subsets(config, family, start, subsets, key, eval_envs=2, max_steps=50)
    np.testing.assert_array_equal(batched.members, [[0, 1], [1, 2]])
    key_train, key_eval = jax.random.split(key)
    run = jax.jit(make_finetune(config, family))
    for j, ids in enumerate(([0, 1], [1, 2])):
        alone = run(jax.random.split(key_train, 2)[j], jnp.asarray(ids, jnp.int32), start)
        for leaf_batched, leaf_alone in zip(jax.tree_util.tree_leaves(batched.params),
                                            jax.tree_util.tree_leaves(alone.params)):
            np.testing.assert_allclose(leaf_batched[j], leaf_alone, rtol=1e-4, atol=1e-5)
        returns = evaluate(agent, alone.params, family, jax.random.split(key_eval, 2)[j],
                           num_envs=2, max_steps=50, task_ids=ids)
        np.testing.assert_allclose(batched.returns[j], returns, rtol=1e-5)
    assert batched.mean_return.shape == (2,) and np.all(batched.relative_distance > 0)


def test_subset_members_validation():
    np.testing.assert_array_equal(subset_members([[1, 0, 1], [0, 1, 1]]), [[0, 2], [1, 2]])
    with pytest.raises(ValueError, match="equal-size"):
        subset_members([[1, 0, 1], [0, 1, 0]])


def test_tiny_validation_run_writes_the_report(tmp_path):
    from experiments import validate

    argv = ["--run", "tiny", "--out", str(tmp_path), "--half-lengths", "0.3", "0.6", "1.2", "2.0",
            "--steps-per-task", "1024", "--num-envs", "2", "--eval-envs", "2", "--collect-steps", "100",
            "--dim", "16", "--subsets", "12", "--k", "2", "--finetune-steps", "256",
            "--finetune-envs", "2", "--table1-subsets", "2", "--table1-subset-size", "2"]
    metrics = validate.main(argv)
    run_dir = tmp_path / "cartpole" / "tiny"
    for name in ("report.md", "metrics.json", "scatter.png", "affinity.png"):
        assert (run_dir / name).stat().st_size > 0
    report = (run_dir / "report.md").read_text()
    assert "NMI, estimated vs true groups" in report and "0.73" in report
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert len(saved["true_f"]) == 12 and 0 <= saved["nmi_vs_true"]["ours"] <= 1
    assert set(metrics["truth_self_agreement"]) == {"nmi_groups", "spearman_f"}
    assert np.asarray(saved["table1_linearization_error"]).shape == (4, 2)
    assert "Table 1" in report
