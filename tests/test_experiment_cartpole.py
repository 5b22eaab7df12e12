"""A tiny CartPole run writes every file, gives valid groups, and resumes."""

import json

import numpy as np

from experiments import cartpole


def test_tiny_cartpole_run_writes_results_and_resumes(tmp_path, capsys, monkeypatch):
    argv = ["--run", "tiny", "--out", str(tmp_path), "--half-lengths", "0.3", "0.6", "1.2", "2.0",
            "--steps-per-task", "1024", "--num-envs", "2", "--eval-envs", "2",
            "--collect-steps", "100", "--dim", "16", "--subsets", "12", "--k", "2",
            "--gamma", "0.98", "--gae-lambda", "0.9"]
    discounts = []  # the estimator's advantages use θ*'s own γ and λ (the critic's)
    collect = cartpole.collect_transitions

    def recording(*args, **kwargs):
        discounts.append((kwargs["gamma"], kwargs["gae_lambda"]))
        return collect(*args, **kwargs)

    monkeypatch.setattr(cartpole, "collect_transitions", recording)
    metrics = cartpole.main(argv)
    assert discounts == [(0.98, 0.9)]
    run_dir = tmp_path / "tiny"
    for name in ("config.json", "metrics.json", "affinity.png", "theta_star.msgpack"):
        assert (run_dir / name).stat().st_size > 0
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert len(saved["theta_star_returns"]) == 4
    for method in ("ours", "gradient_similarity", "random"):
        assert sorted(set(saved["groups"][method])) == [0, 1]
    assert np.asarray(saved["affinity"]).shape == (4, 4)
    assert len(saved["scores_heldout"]) == 12
    assert set(saved["stage_seconds"]) == {"train", "evaluate", "random_policy", "features",
                                           "subsets", "estimate", "cluster"}
    assert len(saved["random_policy_returns"]) == 4
    capsys.readouterr()
    again = cartpole.main(argv)
    assert capsys.readouterr().out.count("finished earlier") == 7
    np.testing.assert_array_equal(again["groups"]["ours"], metrics["groups"]["ours"])
    np.testing.assert_allclose(again["theta_star_returns"], metrics["theta_star_returns"])


def test_planted_family_run_scores_every_grouping_against_the_planted_groups(tmp_path):
    from pgx_jax.envs.registry import FAMILIES

    metrics = cartpole.main(["--env", "lunarlander-swapped", "--run", "tiny", "--out", str(tmp_path),
                             "--steps-per-task", "1024", "--num-envs", "2", "--num-steps", "64",
                             "--eval-envs", "2", "--collect-steps", "100", "--dim", "16",
                             "--subsets", "40"])
    planted = FAMILIES["lunarlander-swapped"].planted
    import pgx_jax as pgx

    assert metrics["vs_planted"]["ours"] == pgx.nmi(metrics["groups"]["ours"], planted)
    assert set(metrics["vs_planted"]) == {"ours", "gradient_similarity", "random",
                                          "ours, per-task effects keep",
                                          "ours, per-task effects remove", "ours, directed"}
    assert all(0 <= v <= 1 for v in metrics["vs_planted"].values())
