"""StageRunner.batch: stages computed together, stored and reused one by one."""

import numpy as np
import pytest

from experiments._runner import StageRunner, StaleStageError


class Config:
    steps = 3


def test_batch_computes_only_the_missing_stages_and_stores_each(tmp_path):
    calls = []

    def compute(missing):
        calls.append(list(missing))
        return {name: {"value": np.full(2, float(name[-1]) * Config.steps)} for name in missing}

    def run(names, **kwargs):
        stage = StageRunner(tmp_path, Config(), log=lambda _: None, **kwargs)
        return stage, stage.batch(names, compute, uses=("steps",),
                                  extras=[{"seed": int(n[-1])} for n in names])

    _, first = run(["learner.s0", "learner.s1"])
    assert calls == [["learner.s0", "learner.s1"]]
    stage, second = run(["learner.s0", "learner.s1", "learner.s2"])  # one more seed
    assert calls[-1] == ["learner.s2"] and stage.resumed == ["learner.s0", "learner.s1"]
    np.testing.assert_array_equal(second["learner.s1"]["value"], first["learner.s1"]["value"])
    np.testing.assert_array_equal(second["learner.s2"]["value"], [6.0, 6.0])
    assert sorted(p.name for p in (tmp_path / "stages").iterdir()) == [
        "learner.s0.npz", "learner.s1.npz", "learner.s2.npz"]
    run(["learner.s0", "learner.s1", "learner.s2"])
    assert len(calls) == 2  # everything stored: nothing computed
    run(["learner.s1"], restart_from="learner")  # a prefix restarts every one of them
    assert calls[-1] == ["learner.s1"]
    Config.steps = 4
    try:
        with pytest.raises(StaleStageError, match="--steps: 3 → 4"):
            run(["learner.s0"])
        run(["learner.s0", "learner.s2"], force=True)
        assert calls[-1] == ["learner.s0", "learner.s2"]
    finally:
        Config.steps = 3
    with pytest.raises(ValueError, match="distinct"):
        run(["learner.s0", "learner.s0"])
    # An extra setting may not hide a config field it shares a name with.
    with pytest.raises(RuntimeError, match="shadow"):
        StageRunner(tmp_path, Config(), log=lambda _: None).batch(
            ["learner.s0"], compute, uses=("steps",), extras=[{"steps": 0}])
