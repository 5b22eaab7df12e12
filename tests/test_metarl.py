"""The meta-RL protocol that can tell groupings apart (`experiments.metarl`): the pool of source
sets, the headroom ANOVA against a least-squares fit, cross-fitted oracles against brute force,
the paired comparison against scipy, the power computation against simulated experiments, and a
tiny end-to-end run."""

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats

from experiments import metarl
from experiments._runner import SettingError


def test_one_per_group_sets_are_every_choice_of_one_task_per_group():
    labels = np.array([0, 1, 0, 2, 1, 2, 2])
    sets = metarl.one_per_group_sets(labels)
    brute = sorted({tuple(sorted(c)) for c in itertools.combinations(range(7), 3)
                    if sorted(labels[list(c)]) == [0, 1, 2]})
    assert [tuple(row) for row in sets] == brute and len(brute) == 2 * 2 * 3


def test_the_pool_holds_every_set_or_a_sample_plus_every_grouping_choice():
    groupings = {"ours": np.array([0, 0, 1, 1, 2, 2]), "other": np.array([0, 1, 2, 0, 1, 2])}
    full = metarl.source_pool(6, 3, groupings, 0, np.random.default_rng(0))
    assert len(full["sets"]) == math.comb(6, 3) and full["random"].all()
    sample = metarl.source_pool(6, 3, groupings, 5, np.random.default_rng(0))
    assert sample["random"].sum() == 5
    for name, labels in groupings.items():
        chosen = {tuple(r) for r in metarl.one_per_group_sets(labels)}
        assert {tuple(r) for r in sample["sets"][sample[name]]} == chosen
    assert len(sample["sets"]) == len({tuple(r) for r in sample["sets"]})


def test_headroom_is_the_two_way_anova_of_sets_after_the_seed_effect():
    rng = np.random.default_rng(1)
    S, P = 6, 8
    R = rng.normal(size=(S, 1)) * 5 + np.linspace(0, 1, P) + rng.normal(size=(S, P))
    room = metarl.headroom(R)
    # Reference: nested least-squares fits, seeds only vs seeds + sets.
    seeds = np.kron(np.eye(S), np.ones((P, 1)))
    sets = np.kron(np.ones((S, 1)), np.eye(P))[:, 1:]
    y = R.ravel()

    def rss(X):
        return np.sum((y - X @ np.linalg.lstsq(X, y, rcond=None)[0]) ** 2)

    full, reduced = rss(np.hstack([seeds, sets])), rss(seeds)
    F = (reduced - full) / (P - 1) / (full / ((S - 1) * (P - 1)))
    np.testing.assert_allclose(room["F"], F, rtol=1e-9)
    np.testing.assert_allclose(room["p_value"], stats.f.sf(F, P - 1, (S - 1) * (P - 1)), rtol=1e-9)
    np.testing.assert_allclose(room["ratio"] ** 2, F, rtol=1e-9)  # spread/noise = √F
    # A huge seed effect shared by every set changes nothing (the seeds are paired).
    shifted = metarl.headroom(R + 1000 * np.arange(S)[:, None])
    np.testing.assert_allclose(shifted["ratio"], room["ratio"], rtol=1e-6)


def test_cross_fitted_extremes_choose_on_one_half_and_score_on_the_other():
    R = np.array([[1.0, 5.0, 3.0], [2.0, 6.0, 1.0], [9.0, 1.0, 4.0], [8.0, 2.0, 5.0]])
    out = metarl.cross_fitted_extremes(R)
    # Seeds 0, 1 pick set 1 as best and set 0 as worst, scored on seeds 2, 3; seeds 2, 3 pick
    # set 0 and set 1, scored on seeds 0, 1. Halves that disagree put the oracle below.
    np.testing.assert_array_equal(out["oracle"], [1.0, 2.0, 1.0, 2.0])
    np.testing.assert_array_equal(out["anti_oracle"], [5.0, 6.0, 9.0, 8.0])
    assert out["chosen"] == {"oracle": [1, 0], "anti_oracle": [0, 1]}


def test_paired_comparison_matches_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(1, 1, 12), rng.normal(0.5, 1, 12)
    d = metarl.paired(a, b, 0.95, 0.8)
    ref = stats.ttest_rel(a, b)
    np.testing.assert_allclose(d["p_value"], ref.pvalue, rtol=1e-9)
    np.testing.assert_allclose(d["t"], ref.statistic, rtol=1e-9)
    low, high = ref.confidence_interval(0.95)
    np.testing.assert_allclose([d["low"], d["high"]], [low, high], rtol=1e-9)


@pytest.mark.parametrize("n,power", [(10, 0.8), (6, 0.5)])
def test_the_detectable_difference_is_found_with_the_stated_power(n, power):
    """Simulated experiments with a true difference equal to the detectable one: the paired t-test
    rejects in `power` of them (4000 experiments: standard error ≤ 0.008)."""
    sd = 2.5
    delta = metarl.detectable_difference(sd, n, 0.05, power)
    rng = np.random.default_rng(3)
    d = rng.normal(delta, sd, size=(4000, n))
    rejected = stats.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05
    assert abs(rejected.mean() - power) < 0.03
    assert metarl.detectable_difference(sd, 4 * n, 0.05, power) < delta  # more seeds, smaller


def test_bad_settings_are_refused():
    for argv, message in ((["--seeds", "1"], "--seeds"), (["--power", "1.5"], "--power"),
                          (["--set-chunk", "0"], "--set-chunk"), (["--preset", "huge"], "preset"),
                          (["--k", "10"], "--k"),
                          (["--maml-init", "theta_star"], "--maml-init must be 'random'")):
        with pytest.raises(SettingError, match=message):
            metarl.main(argv)


def test_tiny_protocol_run_writes_a_report_whose_rows_are_the_stored_runs(tmp_path):
    argv = ["--run", "tiny", "--out", str(tmp_path), "--half-lengths", "0.3", "0.6", "1.2", "2.0",
            "--steps-per-task", "1024", "--num-envs", "2", "--eval-envs", "2",
            "--collect-steps", "100", "--dim", "16", "--subsets", "8", "--k", "2", "--seeds", "3",
            "--targets", "2", "--adapt-steps", "2", "--maml-outer-steps", "2", "--maml-envs", "2",
            "--maml-horizon", "20", "--sets", "0"]
    metrics = metarl.main(argv)
    run_dir = tmp_path / "cartpole" / "tiny"
    for name in ("report.md", "metrics.json", "adaptation.png", "meta_training.png"):
        assert (run_dir / name).stat().st_size > 0
    report = (run_dir / "report.md").read_text()
    assert "Headroom" in report and "oracle − anti-oracle" in report
    saved = json.loads((run_dir / "metrics.json").read_text())
    sets = np.asarray(saved["sets"])
    assert len(sets) == math.comb(4, 2)
    curves = np.stack([np.load(run_dir / "stages" / f"sets.seed{s}.npz")["adapted"]
                       for s in range(3)])  # [seeds, sets, adapt_steps + 1]
    assert curves.shape == (3, len(sets), 3)
    ours = {tuple(r) for r in metarl.one_per_group_sets(np.asarray(saved["groups"]["ours"]))}
    mask = np.array([tuple(r) in ours for r in sets])
    for score, R in (("final", curves[..., -1]), ("curve_mean", curves.mean(-1))):
        rows = saved["scores"][score]["rows"]
        np.testing.assert_allclose(rows["ours"], R[:, mask].mean(1), rtol=1e-6)
        np.testing.assert_allclose(rows["random"], R.mean(1), rtol=1e-6)
        assert np.all(np.asarray(rows["oracle"]) >= R.min(1))
        assert metrics["scores"][score]["headroom"]["spread"] >= 0
