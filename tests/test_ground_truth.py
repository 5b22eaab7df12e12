"""Ground-truth fine-tuning of many subsets in one call, and the validation experiment."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax.envs import cartpole_family
from pgx_jax.rl.ground_truth import fine_tune_subsets, subset_members, task_returns
from pgx_jax.rl.ppo import PPOConfig, evaluate, make_agent, make_finetune


def test_batched_fine_tuning_equals_one_run_at_a_time():
    """The vmapped runs (2 subsets × 2 seeds) equal separate runs of make_finetune + evaluation."""
    family = cartpole_family((0.3, 0.6, 1.2))
    config = PPOConfig(steps_per_task=512, num_envs=2, num_steps=64, num_minibatches=2)
    agent = make_agent(family, config)
    start = agent.init(jax.random.key(0), family.obs_dim)
    subsets = np.array([[1, 1, 0], [0, 1, 1]], bool)
    key = jax.random.key(1)
    batched = fine_tune_subsets(config, family, start, subsets, key, seeds=2, eval_envs=3,
                                max_steps=50)
    np.testing.assert_array_equal(batched.members, [[0, 1], [1, 2]])
    assert batched.returns.shape == (2, 2, 2) and batched.relative_distance.shape == (2, 2)
    key_train, key_eval = jax.random.split(key)
    run = jax.jit(make_finetune(config, family))
    train_keys = jax.random.split(key_train, 4)
    for j, ids in enumerate(([0, 1], [1, 2])):
        ids = jnp.asarray(ids, jnp.int32)
        for seed in range(2):
            alone = run(train_keys[2 * j + seed], ids, start)
            for leaf_batched, leaf_alone in zip(jax.tree_util.tree_leaves(batched.params),
                                                jax.tree_util.tree_leaves(alone.params)):
                np.testing.assert_allclose(leaf_batched[j, seed], leaf_alone, rtol=1e-4, atol=1e-5)
            # Task t is evaluated on episodes seeded by fold_in(key_eval, t): one task alone.
            for position, task in enumerate(np.asarray(ids)):
                alone_return = evaluate(agent, alone.params, family, jax.random.fold_in(key_eval, task),
                                        num_envs=3, max_steps=50, task_ids=[task], greedy=True)
                np.testing.assert_allclose(batched.returns[j, seed, position], alone_return[0], rtol=1e-5)
    np.testing.assert_allclose(batched.mean_return, batched.returns.mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(batched.gain, batched.mean_return - batched.start_returns.mean(-1),
                               rtol=1e-5, atol=1e-5)
    assert np.all(batched.relative_distance > 0)


def test_evaluation_uses_common_random_numbers():
    """Task 1 sits in both subsets: θ* gets the same return there, and equal to evaluating it alone."""
    family = cartpole_family((0.3, 0.6, 1.2))
    agent = make_agent(family, PPOConfig())
    start = agent.init(jax.random.key(3), family.obs_dim)
    key = jax.random.key(4)
    returns = task_returns(agent, start, family, jnp.asarray([2, 1, 0]), key, 4, 60, False)
    again = task_returns(agent, start, family, jnp.asarray([1]), key, 4, 60, False)
    np.testing.assert_allclose(returns[1], again[0], rtol=1e-6)
    other = task_returns(agent, start, family, jnp.asarray([1]), jax.random.key(5), 4, 60, False)
    assert not np.allclose(again, other)  # a different key draws different episodes


def test_evaluation_stops_at_the_episode_limit_with_the_same_returns():
    """Steps past the family's truncation limit are skipped: only first episodes count, so the
    start returns equal an evaluation that runs far longer."""
    import dataclasses

    family = cartpole_family((0.3, 0.6))
    family = dataclasses.replace(family, params=family.params.replace(
        max_steps_in_episode=jnp.array([12, 20])))
    assert family.episode_limit == 20
    config = PPOConfig(steps_per_task=256, num_envs=2, num_steps=64, num_minibatches=2)
    agent = make_agent(family, config)
    start = agent.init(jax.random.key(0), family.obs_dim)
    key = jax.random.key(1)
    result = fine_tune_subsets(config, family, start, [[1, 1]], key, eval_envs=3, max_steps=500)
    longer = task_returns(agent, start, family, jnp.asarray([0, 1]), jax.random.split(key)[1], 3,
                          200, True)
    np.testing.assert_allclose(result.start_returns[0], longer, rtol=1e-6)
    assert np.all(np.asarray(longer) <= np.array([12, 20]))


def test_subset_members_validation():
    np.testing.assert_array_equal(subset_members([[1, 0, 1], [0, 1, 1]]), [[0, 2], [1, 2]])
    with pytest.raises(ValueError, match="equal-size"):
        subset_members([[1, 0, 1], [0, 1, 0]])
    family = cartpole_family((0.3, 0.6))
    with pytest.raises(ValueError, match="seeds"):
        fine_tune_subsets(PPOConfig(steps_per_task=1024), family, {}, [[1, 0]], jax.random.key(0),
                          seeds=0)


def test_tiny_validation_run_writes_the_report(tmp_path, capsys):
    from experiments import validate
    from experiments._runner import StaleStageError

    argv = ["--run", "tiny", "--out", str(tmp_path), "--half-lengths", "0.3", "0.6", "1.2", "2.0",
            "--steps-per-task", "1024", "--num-envs", "2", "--eval-envs", "2", "--collect-steps", "100",
            "--dim", "16", "--subsets", "12", "--k", "2", "--finetune-steps", "256",
            "--finetune-envs", "2", "--truth-seeds", "2", "--table1-subsets", "2",
            "--table1-subset-size", "2", "--ablation-dims", "8", "16", "--ablation-sizes", "2",
            "--ablation-subsets", "2", "12", "--ablation-repeats", "2", "--hessian-steps", "4",
            "--hessian-checkpoints", "2", "--hessian-products", "3", "--hessian-collect-steps", "100",
            "--bootstrap", "3", "--null-draws", "50"]
    metrics = validate.main(argv)
    run_dir = tmp_path / "cartpole" / "tiny"
    for name in ("report.md", "metrics.json", "scatter.png", "affinity.png", "generalization.png"):
        assert (run_dir / name).stat().st_size > 0
    report = (run_dir / "report.md").read_text()
    for heading in ("NMI, estimated vs true groups", "## All truths", "## Ablations", "Table 1",
                    "Figure 2", "Can the truth be trusted?", "Estimator choices"):
        assert heading in report
    assert "planted" not in report  # CartPole has no groups by construction
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert set(saved["vs_truth"]) == set(validate.TRUTHS)
    assert 0 <= saved["truth_self_agreement"]["q05"] <= saved["truth_self_agreement"]["q95"] <= 1
    assert saved["chance"]["ours"]["nmi"]["p_value"] > 0 and saved["vs_planted"] is None
    # 8 choices of score × split × per-task treatment, + 2 l2 and 2 sample shares × 2 treatments,
    # + the directed per-task gains
    assert len(saved["choices"]["nmi"]) == 17
    assert saved["choices"]["task_effects"][-1] == "directed"
    for name in ("keep", "remove", "directed"):
        treated = saved["treatments"][name]
        assert 0 <= treated["truth_split"] <= 1 and 0 <= treated["ours"] <= 1
    assert -1 <= saved["treatments"]["decompose"]["levels_halves"] <= 1
    for result in saved["vs_truth"].values():
        assert 0 <= result["nmi"]["ours"] <= 1 and -1 <= result["self_spearman"] <= 1
    assert np.asarray(saved["true_f_per_seed"]["gain"]).shape == (12, 2)
    # m = 2 cannot cover the pairs of 4 tasks: that ablation row is left empty, the others are full.
    nmi = np.asarray(metrics["ablations"]["nmi"], float)
    assert nmi.shape == (5, 2) and np.isnan(nmi[3]).all() and np.isfinite(np.delete(nmi, 3, 0)).all()
    assert np.asarray(saved["table1_linearization_error"]).shape == (4, 2)
    # The cross-family summary reads the finished run.
    from experiments import table3
    summary = table3.main(["--out", str(tmp_path), "--run", "tiny"])
    assert "| cartpole (k = 2, 2 truth seeds) |" in summary
    assert f"**{saved['vs_truth']['gain']['nmi']['ours']:.2f}**" in summary
    assert (tmp_path / "table3-tiny.md").read_text() == summary
    # Resuming loads every stage and gives the same numbers.
    again = validate.main(argv)
    assert again["vs_truth"]["gain"]["nmi"] == metrics["vs_truth"]["gain"]["nmi"]
    # A changed fine-tuning setting stops at the ground truth; a changed estimator setting, with
    # --force, recomputes the estimate and what reads it, never the ground truth.
    with pytest.raises(StaleStageError, match="stage 'ground_truth.s0.seed0' .*--finetune-lr: 0.0001 → 0.001"):
        validate.main(argv + ["--finetune-lr", "1e-3"])
    capsys.readouterr()
    validate.main(argv + ["--l2", "0.1", "--force"])
    ran = {line.split("]")[0][1:] for line in capsys.readouterr().out.splitlines()
           if line.endswith("running ...")}
    assert ran == {"estimate", "cluster", "agreement", "choices", "treatments", "ablations",
                   "generalization", "cost"}
    # The Python entry for a user's own family returns the same keys (here it resumes the run).
    config = validate.parse_config(validate.Config, argv + ["--l2", "0.1"])
    again = validate.run(cartpole_family((0.3, 0.6, 1.2, 2.0)), config, run_dir)
    assert set(again) == set(saved)


@pytest.mark.slow
def test_quick_preset_finds_the_planted_groups_of_the_swapped_engine_family(tmp_path):
    from experiments import validate

    metrics = validate.main(["--env", "lunarlander-swapped", "--preset", "quick", "--run", "q",
                             "--out", str(tmp_path)])
    assert metrics["planted_groups"] == [0] * 5 + [1] * 5
    assert metrics["vs_planted"]["ours"]["nmi"] > 0.99


def test_truth_decomposition_separates_levels_from_pairwise_signal():
    """Levels that every seed shares and pairwise noise that no two seeds share: the levels are
    reproducible, the residual is not; an estimate equal to the truth's levels predicts them."""
    import pgx_jax as pgx
    from experiments._truth import decompose, member_matrix, task_levels

    n, m, K = 8, 60, 4
    subsets = np.asarray(pgx.sample_subsets(jax.random.key(1), n, m, 3))
    rng = np.random.default_rng(0)
    levels = rng.normal(size=n) * 5
    f = (subsets / 3) @ levels
    per_seed = f[:, None] + rng.normal(size=(m, K))
    parts = decompose(subsets, per_seed, f)
    assert parts["levels_halves"] > 0.9 and abs(parts["pairwise_halves"]) < 0.4
    assert parts["levels_estimate"] > 0.9 and parts["levels_share"] > 0.8
    # The residuals are remove_task_effects' (up to its centring constant).
    _, residual = task_levels(subsets, per_seed[:, 0])
    np.testing.assert_allclose(residual - residual.mean(),
                               pgx.remove_task_effects(subsets, per_seed[:, 0]), atol=1e-4)
    # Members in subset order land in their task's column.
    values = np.arange(m * 3, dtype=float).reshape(m, 3)
    matrix = member_matrix(subsets, values)
    for row in range(m):
        np.testing.assert_array_equal(matrix[row, subset_members(subsets)[row]], values[row])
        assert np.isnan(matrix[row, ~subsets[row]]).all()


def test_seeds_needed_follows_spearman_brown():
    from experiments._truth import seeds_needed

    # One seed's reliability 0.2 → halves of 2 seeds correlate at 2·0.2/(1 + 0.2) = 1/3; 0.8 needs
    # 0.8·0.8/(0.2·0.2) = 16 seeds per half.
    assert seeds_needed(1 / 3, 2, 0.8) == 32
    assert seeds_needed(0.8, 4, 0.8) <= 8 and seeds_needed(-0.1, 4, 0.8) == float("inf")


def test_a_truth_that_fine_tuning_never_moved_is_flagged():
    from experiments.validate import truth_degenerate

    start = np.full((5, 3), 20.0)
    assert truth_degenerate(np.full((5, 4), 9.5e-7), start)
    assert not truth_degenerate(np.full((5, 4), 0.05), start)
