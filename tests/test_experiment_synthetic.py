"""A tiny end-to-end run of experiments.synthetic writes every file and resumes."""

import json

import numpy as np

from experiments import synthetic


def test_tiny_run_writes_results_and_resumes(tmp_path, capsys):
    argv = ["--run", "tiny", "--out", str(tmp_path), "--tasks", "6", "--samples-per-task", "96",
            "--dim", "32", "--subsets", "30", "--k", "3"]
    metrics = synthetic.main(argv)
    run_dir = tmp_path / "tiny"
    for name in ("config.json", "metrics.json", "affinity.png"):
        assert (run_dir / name).stat().st_size > 0
    saved = json.loads((run_dir / "metrics.json").read_text())
    for method in ("ours", "gradient_similarity", "random"):
        groups = np.asarray(saved["groups"][method])
        assert groups.shape == (6,) and set(groups.tolist()) == {0, 1, 2}
        assert 0.0 <= saved["nmi_vs_planted"][method] <= 1.0
    assert np.asarray(saved["affinity"]).shape == (6, 6)
    capsys.readouterr()
    again = synthetic.main(argv)
    out = capsys.readouterr().out
    assert out.count("finished earlier") == 4
    np.testing.assert_array_equal(again["groups"]["ours"], metrics["groups"]["ours"])
