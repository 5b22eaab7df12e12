"""Whole-pipeline seeds through the executor (`experiments.seeds`): each seed is a validation run
of its own, the table across seeds is computed from those runs' metrics, a rerun computes
nothing, and Ray gives the in-process results."""

import json

import numpy as np
import pytest

from experiments import seeds
from experiments._runner import SettingError

TINY = ["--half-lengths", "0.3", "0.6", "1.2", "2.0", "--steps-per-task", "1024", "--num-envs", "2",
        "--eval-envs", "2", "--collect-steps", "100", "--dim", "16", "--subsets", "12", "--k", "2",
        "--finetune-steps", "256", "--finetune-envs", "2", "--truth-seeds", "2",
        "--table1-subsets", "2", "--table1-subset-size", "2", "--ablation-dims", "8",
        "--ablation-sizes", "2", "--ablation-subsets", "12", "--ablation-repeats", "1",
        "--hessian-steps", "2", "--hessian-checkpoints", "1", "--hessian-products", "3",
        "--hessian-collect-steps", "100", "--bootstrap", "3", "--null-draws", "50"]


def without_timings(metrics: dict) -> dict:
    """metrics.json less its wall-clock figures (the stages' and the ablations' seconds)."""
    out = {k: v for k, v in metrics.items() if k != "stage_seconds"}
    out["ablations"] = {k: v for k, v in out["ablations"].items() if k != "seconds"}
    return out


def test_seeds_are_whole_validation_runs_and_the_summary_is_theirs(tmp_path, capsys):
    argv = ["--seeds", "0", "1", "--run", "s", "--out", str(tmp_path), *TINY]
    summary = seeds.main(argv)
    per_seed = {s: json.loads((tmp_path / "cartpole" / f"s.seed{s}" / "metrics.json").read_text())
                for s in (0, 1)}
    assert per_seed[0]["groups"] != per_seed[1]["groups"] or \
        per_seed[0]["estimated_f_train"] != per_seed[1]["estimated_f_train"]  # θ* differs
    # The summary against the seeds' own metrics files.
    ours = [m["vs_truth"]["gain"]["nmi"]["ours"] for m in per_seed.values()]
    chance = [m["chance"]["ours"]["nmi"]["mean"] for m in per_seed.values()]
    usable = [not m["truth_degenerate"] for m in per_seed.values()]
    assert summary["seeds"] == [s for s, ok in zip((0, 1), usable) if ok]
    if all(usable):
        np.testing.assert_allclose(summary["figures"]["ours"]["mean"], np.mean(ours))
        np.testing.assert_allclose(summary["figures"]["ours"]["std"], np.std(ours, ddof=1))
        diff = np.subtract(ours, chance)
        np.testing.assert_allclose(summary["paired"]["ours − chance"]["mean"], diff.mean())
        np.testing.assert_allclose(summary["paired"]["ours − chance"]["se"],
                                   diff.std(ddof=1) / np.sqrt(2))
    text = (tmp_path / "cartpole" / "s" / "seeds.md").read_text()
    assert "| cartpole seed 0 (k = 2, 2 truth seeds) |" in text
    assert "| cartpole seed 1 (k = 2, 2 truth seeds) |" in text
    assert json.loads((tmp_path / "cartpole" / "s" / "seeds.json").read_text())["seeds"] == \
        summary["seeds"]
    # A rerun loads every seed from the driver's store and runs no validation.
    capsys.readouterr()
    again = seeds.main(argv)
    assert again == summary
    assert "loaded from" in capsys.readouterr().out
    # Other validation settings are another run: refused, not mixed.
    with pytest.raises(SettingError, match="null_draws: 50 → 51"):
        seeds.main(argv[:-1] + ["51"])


def test_bad_seed_settings_are_refused_before_any_work(tmp_path):
    out = ["--out", str(tmp_path)]
    for argv, message in (([*out, "--seeds", "3"], "≥ 2"),
                          ([*out, "--seeds", "1", "1"], "repeat"),
                          ([*out, "--seed", "4"], "set by experiments.seeds"),
                          ([*out, "--hessian-products", "4"], "multiple of 3"),
                          ([*out, "--executor", "dask"], "--executor must be one of")):
        with pytest.raises(SettingError, match=message):
            seeds.parse(argv)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow  # ~3.5 min: the same two seeds in-process and on a local Ray
def test_ray_seeds_equal_in_process_seeds(local_ray, tmp_path):
    argv = ["--seeds", "0", "1", "--run", "s", *TINY]
    seeds.main([*argv, "--out", str(tmp_path / "inprocess")])
    seeds.main([*argv, "--out", str(tmp_path / "ray"), "--executor", "ray"])
    for s in (0, 1):
        a, b = (json.loads((tmp_path / where / "cartpole" / f"s.seed{s}" / "metrics.json")
                           .read_text()) for where in ("inprocess", "ray"))
        assert without_timings(a) == without_timings(b)
