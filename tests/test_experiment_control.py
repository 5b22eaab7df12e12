"""A tiny end-to-end run of the meta-RL experiment (4 CartPole sources, 2 unseen targets)."""

import json

import numpy as np
import pytest

from experiments import control
from experiments._runner import StaleStageError


def test_tiny_control_run_writes_the_report(tmp_path):
    argv = ["--run", "tiny", "--out", str(tmp_path), "--half-lengths", "0.3", "0.6", "1.2", "2.0",
            "--steps-per-task", "1024", "--num-envs", "2", "--eval-envs", "2", "--collect-steps", "100",
            "--dim", "16", "--subsets", "12", "--k", "2", "--seeds", "1", "--targets", "2",
            "--adapt-steps", "2", "--maml-outer-steps", "2", "--maml-envs", "2", "--maml-horizon", "20"]
    metrics = control.main(argv)
    run_dir = tmp_path / "cartpole" / "tiny"
    for name in ("report.md", "metrics.json", "adaptation.png"):
        assert (run_dir / name).stat().st_size > 0
    saved = json.loads((run_dir / "metrics.json").read_text())
    sources = set(saved["source_params"])
    assert len(saved["target_params"]) == 2 and not sources & set(saved["target_params"])
    for seed_sets in saved["meta_training_sets"].values():
        # One task per group (k = 2) for ours and gradient similarity; k random tasks.
        assert len(seed_sets["ours"]) == 2 and len(seed_sets["random"]) == 2
        assert len(set(np.asarray(saved["groups"]["ours"])[seed_sets["ours"]])) == 2
    for name in control.SETS:
        curve = np.asarray(metrics["adaptation_curves"][name])
        assert curve.shape == (1, 3) and np.all(np.isfinite(curve)) and np.all(curve >= 0)
    assert "after adaptation" in (run_dir / "report.md").read_text()
    with pytest.raises(StaleStageError, match=r"stage 'adapt\.ours\.seed0' .*--adapt-steps: 2 → 3"):
        control.main(argv + ["--adapt-steps", "3"])
    with pytest.raises(StaleStageError, match="stage 'targets' .*--targets: 2 → 3"):
        control.main(argv + ["--targets", "3"])
