"""The host-stepped Meta-World adapter, host PPO's normalizers and bookkeeping, and a tiny MT10 run."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from experiments._runner import StaleStageError
from pgx_jax.envs.metaworld import MetaWorldFamily
from pgx_jax.rl.host import (
    RewardScaler,
    RunningMoments,
    collect_transitions_on_host,
    evaluate_on_host,
    init_host_train,
    scale_rewards,
    track_episodes,
    train_on_host,
)
from pgx_jax.rl.ppo import PPOConfig, make_agent

pytest.importorskip("metaworld")

TASKS = ("reach-v3", "push-v3")


@pytest.fixture(scope="module")
def envs():
    with MetaWorldFamily(names=TASKS, envs_per_task=2, seed=3).make_envs() as live:
        yield live


def test_steps_have_the_task_grid_layout_and_meta_world_semantics(envs):
    obs = envs.reset()
    assert obs.shape == (2, 2, 39) and obs.dtype == np.float32
    rng = np.random.default_rng(0)
    ended = None
    for t in range(500):
        obs, reward, terminated, truncated, final_obs, success = envs.step(
            rng.uniform(-1.5, 1.5, (2, 2, 4)))  # out of range on purpose: the adapter clips
        assert obs.shape == final_obs.shape == (2, 2, 39)
        assert reward.shape == terminated.shape == truncated.shape == success.shape == (2, 2)
        assert np.all(np.isfinite(reward)) and np.all(reward >= 0)
        assert not terminated.any()  # Meta-World's training setting: no termination on success
        if truncated.any():
            ended = t
            break
        np.testing.assert_array_equal(final_obs, obs)
    assert ended == 499 and truncated.all()  # every episode is 500 steps
    assert not np.allclose(final_obs, obs)  # obs is the next episode's first observation


def test_envs_of_one_seed_and_stream_replay_the_same_episodes():
    family = MetaWorldFamily(names=TASKS, envs_per_task=2, seed=3)
    actions = np.random.default_rng(4).uniform(-1, 1, (30, 2, 2, 4))

    def play(stream):
        with family.make_envs(stream) as live:
            first = live.reset()
            return first, np.stack([live.step(a)[1] for a in actions])

    first, rewards = play(0)
    again, rewards_again = play(0)
    other, _ = play(1)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(rewards, rewards_again)
    assert not np.allclose(first[1], other[1])  # push-v3: another object position and goal
    assert not np.allclose(first[1, 0], first[1, 1])  # the two envs of a task differ too


def test_success_bookkeeping_matches_a_per_episode_loop():
    rng = np.random.default_rng(1)
    steps, shape = 40, (3, 2)
    reward = rng.uniform(0, 1, (steps,) + shape).astype(np.float32)
    success = rng.uniform(size=(steps,) + shape) < 0.05
    done = rng.uniform(size=(steps,) + shape) < 0.15
    running_return, running_success = np.zeros(shape), np.zeros(shape, bool)
    returns, successes = [], []
    for t in range(steps):
        running_return, running_success, finished_return, finished_success = track_episodes(
            running_return, running_success, reward[t], success[t], done[t])
        returns.append(finished_return)
        successes.append(finished_success)
    returns, successes = np.stack(returns), np.stack(successes)
    for index in np.ndindex(shape):  # brute force: split each env's stream at its dones
        start = 0
        for t in range(steps):
            cell = (t,) + index
            if done[cell]:
                episode = (slice(start, t + 1),) + index
                assert returns[cell] == pytest.approx(reward[episode].sum(), rel=1e-5)
                assert successes[cell] == float(success[episode].any())
                start = t + 1
            else:
                assert np.isnan(returns[cell]) and np.isnan(successes[cell])


def test_running_moments_equal_numpy_over_all_batches():
    rng = np.random.default_rng(2)
    batches = [rng.normal(3.0, 2.0, (n, 5)).astype(np.float32) for n in (7, 1, 30)]
    moments = RunningMoments.create((5,))
    for batch in batches:
        moments = moments.update(batch)
    data = np.concatenate(batches)
    np.testing.assert_allclose(moments.mean, data.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(moments.var, data.var(0), rtol=1e-3)
    normalized = np.asarray(moments.normalize(data))
    np.testing.assert_allclose(normalized.mean(0), 0, atol=1e-3)


def test_reward_scaling_follows_gymnasium_normalize_reward():
    rng = np.random.default_rng(3)
    reward = rng.uniform(0, 10, (30, 2, 2)).astype(np.float32)
    done = (rng.uniform(size=(30, 2, 2)) < 0.1).astype(np.float32)
    scaled, scaler = scale_rewards(RewardScaler.create((2, 2)), reward, done, 0.99)
    discounted, seen, expected = np.zeros((2, 2)), [], []
    for t in range(30):  # Gymnasium: return ← γ·return·(1 − done) + r, per step, then r / std
        discounted = discounted * 0.99 + reward[t]
        seen.append(discounted.copy())
        expected.append(reward[t] / np.sqrt(np.concatenate(seen).var() + 1e-8))
        discounted = discounted * (1 - done[t])
    np.testing.assert_allclose(scaled, np.stack(expected), rtol=2e-3)
    np.testing.assert_allclose(scaler.discounted, discounted, rtol=1e-5)


def test_host_ppo_collection_and_evaluation(envs):
    family = MetaWorldFamily(names=TASKS, envs_per_task=2)
    config = PPOConfig(steps_per_task=400, num_envs=2, num_steps=50, update_epochs=1,
                       num_minibatches=2, hidden=(16,), task_onehot=True)
    agent = make_agent(family, config)
    state = init_host_train(agent, config, 2, 39, jax.random.key(0))
    saved = []
    result = train_on_host(agent, config, envs, state, checkpoint=lambda s, m: saved.append(
        (int(s.update), len(m["learn_seconds"]))), checkpoint_every=3)
    assert saved == [(3, 3), (4, 4)]  # every 3 updates and at the end
    assert result.metrics["episode_return"].shape == (4, 2)
    assert result.metrics["env_seconds"].shape == (4,) and np.all(result.metrics["env_seconds"] > 0)
    assert float(result.obs_moments.count) == pytest.approx(4 * 50 * 4, rel=1e-3)
    batch = collect_transitions_on_host(agent, result.params, result.obs_moments,
                                        result.reward_scaler, envs, jax.random.key(1),
                                        steps_per_task=40, gamma=0.99, gae_lambda=0.97)
    assert batch.obs.shape == (80, 41) and batch.action.shape == (80, 4)
    np.testing.assert_array_equal(batch.task, np.repeat([0, 1], 40))
    np.testing.assert_array_equal(batch.obs[:, 39:], np.repeat(np.eye(2), 40, axis=0))
    for task in range(2):  # standardized per task
        advantage = np.asarray(batch.advantage)[np.asarray(batch.task) == task]
        assert abs(advantage.mean()) < 1e-4 and abs(advantage.std() - 1) < 1e-3
    success, returns = evaluate_on_host(agent, result.params, result.obs_moments, envs,
                                        jax.random.key(2), max_episode_steps=500)
    assert success.shape == returns.shape == (2,)
    assert np.all((success >= 0) & (success <= 1)) and np.all(returns > 0)


def test_family_validation():
    for bad in ({"names": ()}, {"names": ["reach-v3"]}, {"names": ("reach-v3", "reach-v3")},
                {"envs_per_task": 0}, {"seed": -1}, {"vector_strategy": "threads"}):
        with pytest.raises(ValueError):
            MetaWorldFamily(**bad)
    with pytest.raises(ValueError, match="unknown Meta-World tasks"):
        MetaWorldFamily(names=("reach-v3", "fly-v3")).make_envs()
    assert MetaWorldFamily().subset([9, 0]).names == ("window-close-v3", "reach-v3")


def test_missing_meta_world_and_bad_downstream_settings_fail_early(monkeypatch):
    import importlib

    from experiments import mt10

    with pytest.raises(ValueError, match="SACConfig.network"):
        mt10.main(["--downstream", "--sac-network", "cnn", "--out", "/nonexistent"])
    real_import = importlib.import_module

    def without_metaworld(name, *args):
        if name == "metaworld":
            raise ImportError("No module named 'metaworld'")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_metaworld)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[metaworld\]"'):
        MetaWorldFamily(names=("reach-v3",)).make_envs()


def test_presets_fill_the_defaults_and_the_expected_time_counts_every_learner():
    from experiments import mt10
    from experiments._pipeline import parse_config

    medium = parse_config(mt10.Config, ["--preset", "medium", "--sac-seeds", "3"])
    assert (medium.steps_per_task, medium.sac_steps_per_task, medium.downstream) == (
        400_000, 30_000, True)
    assert medium.sac_seeds == 3  # a flag wins over its preset
    assert parse_config(mt10.Config, []) == mt10.Config()

    def minutes(**changes):
        config = dataclasses.replace(mt10.Config(), **changes)
        return mt10.expected_minutes(config, speed=1000.0, episode_steps=500,
                                     update_seconds={"softmod": 0.01, "mlp": 0.001, "paco": 0.004,
                                                     "care": 0.002})

    quick = minutes()
    assert "downstream SAC" not in quick
    # θ*: 10 tasks × 100k steps at the PPO share of 1000 env-steps/s.
    assert quick["θ* (PPO)"] == pytest.approx(10 * 100_000 / (1000 * mt10.PPO_RATE) / 60)
    # Downstream at k = 3, 1 seed: 9 Soft-Mod groups + Soft-Mod on all (40 rows), the MLP, PaCo
    # and CARE on all (10 rows each); 3,000 steps per task at 2 envs, the first 1,000 without
    # updates; 2 greedy episodes of 500 steps per task.
    envs = 70 * (3_000 + 2 * 500) / 1000
    updates = (1_500 - 500) * (10 * 0.01 + 0.001 + 0.004 + 0.002)
    one = minutes(downstream=True)["downstream SAC"]
    assert one == pytest.approx((envs + updates) / 60)
    assert minutes(downstream=True, sac_seeds=2)["downstream SAC"] == pytest.approx(2 * one)
    # A swept k = 2 adds 3 groupings of 2 groups: 6 learners and 30 rows more.
    assert minutes(downstream=True, sweep_k=(2,))["downstream SAC"] == pytest.approx(
        one + (30 * 4 + 1000 * 6 * 0.01) / 60)
    assert minutes(downstream=True, sweep_k=(0, 3))["downstream SAC"] == pytest.approx(one)


def test_tiny_mt10_run_resumes_after_an_interruption_and_writes_the_report(
        tmp_path, capsys, monkeypatch):
    from experiments import mt10

    argv = ["--run", "tiny", "--out", str(tmp_path), "--tasks", "reach-v3", "drawer-close-v3",
            "button-press-topdown-v3", "--steps-per-task", "300", "--envs-per-task", "1",
            "--num-steps", "100", "--num-minibatches", "2", "--hidden", "16", "16",
            "--collect-steps", "60", "--dim", "8", "--subsets", "6", "--subset-size", "2",
            "--k", "2", "--checkpoint-every", "2"]
    run_dir = tmp_path / "tiny"
    report_progress = mt10.UpdateBar.__call__

    def interrupted(bar, update, *args):
        if update == 2:  # the third update: the checkpoint of update 2 is on disk
            raise KeyboardInterrupt
        report_progress(bar, update, *args)

    monkeypatch.setattr(mt10.UpdateBar, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mt10.main(argv)
    assert not (run_dir / "stages" / "train.npz").exists()
    monkeypatch.setattr(mt10.UpdateBar, "__call__", report_progress)
    # The checkpoint belongs to its settings: another learning rate does not pick it up.
    with pytest.raises(StaleStageError, match=r"checkpoint .*--lr: 0.0003 → 0.001"):
        mt10.main(argv + ["--lr", "1e-3"])
    capsys.readouterr()
    metrics = mt10.main(argv)
    assert "resuming meta-training" in capsys.readouterr().out
    for name in ("report.md", "metrics.json", "affinity.png", "learning.png", "theta_star.msgpack"):
        assert (run_dir / name).stat().st_size > 0
    report = (run_dir / "report.md").read_text()
    assert "Smoke run" in report and "drawer-close-v3" in report
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert len(saved["theta_star_success"]) == 3
    assert np.asarray(saved["training_curves"]["episode_return"]).shape == (3, 3)
    for method in ("ours", "gradient_similarity", "random"):
        assert sorted(set(saved["groups"][method])) == [0, 1]
        assert sum(len(g) for g in saved["groups_named"][method]) == 3
    again = mt10.main(argv)
    assert capsys.readouterr().out.count("finished earlier") == 6
    np.testing.assert_array_equal(again["theta_star_returns"], metrics["theta_star_returns"])

    # Downstream (Table 2's MT10 column) on the same run: SAC per group, baselines, a k sweep.
    downstream = mt10.main(argv + [
        "--downstream", "--sac-steps-per-task", "200", "--sac-learning-starts", "100",
        "--sac-hidden", "8", "--softmod-width", "8", "--sac-batch-size", "16", "--sweep-k", "1"])
    report = (run_dir / "report.md").read_text()
    assert "Table 2, MT10 column" in report and "paper, ours" in report
    success = downstream["downstream"]["success"]
    assert set(success) == {f"{m}.k{k}" for m in ("ours", "gradient_similarity", "random")
                            for k in (1, 2)} | {"multitask", "softmod_all", "paco_all",
                                                "care_all"}
    assert all(np.asarray(v).shape == (1, 3) for v in success.values())
    # One stored result per learner (network, group, seed), each once; at k = 1 every grouping
    # is the one group of all tasks: the same learner as Soft-Mod on all tasks.
    stored = sorted(p.name for p in (run_dir / "stages").glob("sac.*"))
    assert "sac.mlp.all.seed0.npz" in stored and "sac.softmod.all.seed0.npz" in stored
    assert [name for name in stored if name.startswith("sac.mlp")] == ["sac.mlp.all.seed0.npz"]
    for method in ("ours", "gradient_similarity", "random"):
        np.testing.assert_array_equal(success[f"{method}.k1"], success["softmod_all"])
    # Learning curves: every row's training success over the budget (mean over tasks), plotted.
    curves = downstream["downstream"]["training_success"]
    assert set(curves) == set(success) and (run_dir / "downstream.png").stat().st_size > 0
    # (NaN where no episode ended in an interval: 200 steps per task end none of 500 steps)
    shapes = {np.asarray(v).shape for v in curves.values()}
    assert len(shapes) == 1 and shapes.pop()[0] == 1  # one seed, the same log intervals
    np.testing.assert_array_equal(curves["ours.k1"], curves["softmod_all"])
    # A rerun with the groups on the MLP and a second seed trains only the learners it lacks:
    # seed 0's baselines load, and at k = 1 the groups are seed 0's MLP on all tasks.
    capsys.readouterr()
    more = mt10.main(argv + [
        "--downstream", "--sac-steps-per-task", "200", "--sac-learning-starts", "100",
        "--sac-hidden", "8", "--softmod-width", "8", "--sac-batch-size", "16", "--sweep-k", "1",
        "--sac-network", "mlp", "--sac-seeds", "2"])
    # the timing table: one line per stage, "resumed" at the end of the loaded ones
    table = {line.split()[0]: line.rstrip().endswith("resumed")
             for line in capsys.readouterr().out.splitlines() if line.startswith("sac.")}
    assert table["sac.mlp.all.seed0"] and table["sac.softmod.all.seed0"]
    assert not table["sac.mlp.all.seed1"] and not table["sac.softmod.all.seed1"]
    more = more["downstream"]["success"]
    assert all(np.asarray(v).shape == (2, 3) for v in more.values())
    np.testing.assert_array_equal(more["softmod_all"][0], success["softmod_all"][0])
    for method in ("ours", "gradient_similarity", "random"):
        np.testing.assert_array_equal(more[f"{method}.k1"], more["multitask"])


def test_fine_tuning_keeps_the_normalizer_and_evaluates_on_the_episodes_of_theta_star():
    from pgx_jax.rl.host import fine_tune_on_host

    family = MetaWorldFamily(names=("reach-v3", "drawer-close-v3", "window-close-v3"),
                             envs_per_task=1, seed=5)
    config = PPOConfig(steps_per_task=100, num_envs=1, num_steps=50, update_epochs=1,
                       num_minibatches=2, hidden=(16,), task_onehot=True, lr=1e-2)
    agent = make_agent(family, config)
    star = init_host_train(agent, config, 3, 39, jax.random.key(0))
    moments = RunningMoments(mean=np.linspace(-1, 1, 39).astype(np.float32),
                             var=np.full(39, 4.0, np.float32), count=np.float32(500.0))
    scaler = RewardScaler(discounted=np.zeros((3, 1), np.float32),
                          moments=RunningMoments(np.float32(2.0), np.float32(9.0), np.float32(7.0)))
    ids = np.array([2, 0])
    with family.make_envs(stream=1, rows=ids) as envs:
        tuned = fine_tune_on_host(agent, config, envs, star.params, moments, scaler,
                                  jax.random.key(1), task_ids=ids)
    assert tuned.metrics["episode_return"].shape == (2, 2)
    np.testing.assert_array_equal(tuned.obs_moments.mean, moments.mean)  # frozen
    np.testing.assert_array_equal(tuned.obs_moments.var, moments.var)
    assert float(tuned.reward_scaler.moments.count) == pytest.approx(7.0 + 2 * 50 * 2)
    moved = jax.tree_util.tree_map(lambda a, b: float(np.abs(a - b).max()), tuned.params,
                                   star.params)
    assert max(jax.tree_util.tree_leaves(moved)) > 0
    # Common random numbers: a task's envs replay the same episodes in any row layout, so θ*
    # scores the same on a subset's rows as in the all-task evaluation.
    evaluate = dict(max_episode_steps=500)
    with family.make_envs(stream=2) as envs:
        all_success, all_returns = evaluate_on_host(agent, star.params, moments, envs,
                                                    jax.random.key(0), **evaluate)
    with family.make_envs(stream=2, rows=ids) as envs:
        success, returns = evaluate_on_host(agent, star.params, moments, envs, jax.random.key(0),
                                            task_ids=ids, **evaluate)
    np.testing.assert_array_equal(returns, all_returns[ids])
    np.testing.assert_array_equal(success, all_success[ids])


@pytest.mark.slow  # ~90 s: 14 fine-tuning runs, each opening MuJoCo envs twice
def test_tiny_mt10_validation_writes_the_report_and_reruns_only_missing_runs(tmp_path, capsys):
    import pickle

    from experiments import _validate_mt10, validate
    from experiments._runner import SettingError
    from pgx_jax.rl.ground_truth import fine_tune_keys

    argv = ["--env", "mt10", "--run", "tiny", "--out", str(tmp_path), "--tasks", "reach-v3",
            "drawer-close-v3", "button-press-topdown-v3", "--steps-per-task", "200",
            "--envs-per-task", "1", "--num-steps", "100", "--num-minibatches", "2", "--hidden",
            "16", "--collect-steps", "60", "--dim", "8", "--subsets", "6", "--subset-size", "2",
            "--k", "2", "--finetune-steps", "200", "--finetune-lr", "1e-2", "--null-draws", "20",
            "--bootstrap", "2"]
    with pytest.raises(SettingError, match="does not train the downstream"):
        validate.main(argv + ["--downstream"])
    with pytest.raises(SettingError, match="--truth-seeds must be an integer >= 2"):
        validate.main(argv + ["--truth-seeds", "1"])
    metrics = validate.main(argv)
    run_dir = tmp_path / "mt10" / "tiny"
    report = (run_dir / "report.md").read_text()
    assert "Validation on MT10" in report and "| drawer-close-v3 |" in report
    assert "truth vs itself" in report and "chance NMI" in report
    for name in ("metrics.json", "scatter.png", "affinity.png"):
        assert (run_dir / name).stat().st_size > 0
    saved = json.loads((run_dir / "metrics.json").read_text())
    gain = np.asarray(saved["true_f_per_seed"]["gain"])
    assert gain.shape == (6, 2) and np.all(np.isfinite(gain)) and not saved["truth_degenerate"]
    assert np.asarray(saved["truth_success"]).shape == (6, 2, 2)
    assert set(saved["vs_truth"]) == set(validate.TRUTHS)
    assert saved["flops"]["full"] > saved["flops"]["estimation"] > 0
    # The gain is measured against θ*'s evaluation: run returns minus θ*'s on the same tasks.
    returns = np.stack([np.load(run_dir / "stages" / f"ground_truth.s{j}.seed{k}.npz")["returns"]
                        for j in range(6) for k in range(2)]).reshape(6, 2, 2)
    start = np.asarray(saved["theta_star_returns"])
    members = np.stack([np.flatnonzero(row) for row in np.load(
        run_dir / "stages" / "subsets.npz")["subsets"]])
    np.testing.assert_allclose(gain, returns.mean(-1) - start[members].mean(-1)[:, None],
                               rtol=1e-5, atol=1e-3)
    # A lost run is trained again, alone; the others load.
    (run_dir / "stages" / "ground_truth.s3.seed1.npz").unlink()
    capsys.readouterr()
    again = validate.main(argv)
    out = capsys.readouterr().out
    assert "[ground_truth.s3.seed1] running" in out and "[ground_truth.s3.seed1] done" in out
    np.testing.assert_array_equal(again["true_f_per_seed"]["gain"], metrics["true_f_per_seed"]["gain"])
    # What a Ray worker gets (pickled) computes the same run bit for bit.
    config = validate.parse_config(_validate_mt10.Config, argv)
    star = dict(np.load(run_dir / "stages" / "train.npz"))  # θ*'s param.*, normalizers.*
    train_keys = fine_tune_keys(jax.random.key(config.seed + 1), 6, 2)[0]
    runs = pickle.loads(pickle.dumps(_validate_mt10.HostTruthRuns(config, star, members,
                                                                  train_keys)))
    one = runs(["ground_truth.s3.seed1"])["ground_truth.s3.seed1"]
    np.testing.assert_array_equal(one["returns"], returns[3, 1])
