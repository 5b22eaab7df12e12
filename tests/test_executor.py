"""The executor seam: runs trained apart equal runs trained together, a batch keeps every part
that finished, and Ray (a local cluster the tests start and stop) gives the in-process results."""

import os
import socket
import time

import jax
import numpy as np
import pytest

from pgx_jax.executor import InProcess, RayExecutor, make_executor
from experiments._runner import SettingError, StageRunner
from pgx_jax.envs import cartpole_family
from pgx_jax.rl.ground_truth import (fine_tune_keys, fine_tune_runs, fine_tune_subsets,
                                     subset_members)
from pgx_jax.rl.ppo import make_agent


def tiny_truth():
    from experiments import validate

    config = validate.Config(half_lengths=(0.3, 0.6, 1.2), finetune_steps=256, finetune_envs=2,
                             num_steps=64, hidden=(16, 16), truth_seeds=2, eval_envs=3)
    family = cartpole_family(config.half_lengths)
    star = make_agent(family, config.finetune()).init(jax.random.key(0), family.obs_dim)
    subsets = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]], bool)
    return config, family, star, subsets


def test_runs_trained_apart_equal_the_same_runs_trained_together():
    config, family, star, subsets = tiny_truth()
    key = jax.random.key(1)
    together = fine_tune_subsets(config.finetune(), family, star, subsets, key, seeds=2,
                                 eval_envs=3)
    train_keys, eval_key = fine_tune_keys(key, len(subsets), 2)
    members = np.repeat(subset_members(subsets), 2, axis=0)
    rows = np.array([5, 0, 3])  # run j·K + s is seed s of subset j
    apart = fine_tune_runs(config.finetune(), family, star, members[rows], train_keys[rows],
                           eval_key, eval_envs=3)
    for i, row in enumerate(rows):
        j, seed = divmod(int(row), 2)
        np.testing.assert_allclose(apart.returns[i], together.returns[j, seed], rtol=1e-6)
        np.testing.assert_allclose(apart.relative_distance[i], together.relative_distance[j, seed],
                                   rtol=1e-5)
        for leaf_apart, leaf_together in zip(jax.tree_util.tree_leaves(apart.params),
                                             jax.tree_util.tree_leaves(together.params)):
            np.testing.assert_allclose(leaf_apart[i], leaf_together[j, seed], rtol=1e-5,
                                       atol=1e-6)
    with pytest.raises(ValueError, match="one train key per row"):
        fine_tune_runs(config.finetune(), family, star, members, train_keys[:2], eval_key)


class OnePerPart:
    """An executor that runs one name per part and stops (as a lost driver would) after
    `parts` parts."""

    name = "test"

    def __init__(self, parts: int | None = None):
        self.parts = parts

    def run(self, fn, names):
        for count, name in enumerate(names):
            if count == self.parts:
                raise KeyboardInterrupt
            yield fn([name])


def test_a_batch_keeps_the_parts_that_finished_and_a_rerun_computes_only_the_rest(tmp_path):
    calls = []

    def square(names):
        calls.append(list(names))
        return {name: {"x": np.array(int(name[1:]) ** 2)} for name in names}

    names = ["r1", "r2", "r3", "r4"]
    seen = []
    with pytest.raises(KeyboardInterrupt):
        StageRunner(tmp_path, log=lambda _: None).batch(names, square, executor=OnePerPart(2),
                                                        progress=lambda *counts: seen.append(counts))
    assert seen == [(0, 4), (1, 4), (2, 4)]
    assert sorted(p.stem for p in (tmp_path / "stages").glob("*.npz")) == ["r1", "r2"]
    calls.clear()
    runner = StageRunner(tmp_path, log=lambda _: None)
    out = runner.batch(names, square)  # in-process: the rest in one call
    assert calls == [["r3", "r4"]]
    assert {name: int(out[name]["x"]) for name in names} == {"r1": 1, "r2": 4, "r3": 9, "r4": 16}
    assert sorted(runner.resumed) == ["r1", "r2"]
    with pytest.raises(RuntimeError, match="no result for"):
        StageRunner(tmp_path / "other", log=lambda _: None).batch(
            names, lambda part: {}, executor=InProcess())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_ray_address_is_a_clear_error_within_seconds(tmp_path):
    pytest.importorskip("ray")
    from experiments import validate

    address = f"127.0.0.1:{closed_port()}"
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="no Ray cluster answers"):
        RayExecutor(address, connect_timeout=2.0)
    assert time.perf_counter() - start < 10
    with pytest.raises(SettingError, match="no Ray cluster answers"):
        validate.run(config=validate.Config(executor="ray", ray_address=address),
                     run_dir=tmp_path)
    with pytest.raises(SettingError, match="--ray-address needs --executor ray"):
        validate.Config(ray_address=address).check()
    with pytest.raises(ValueError, match="executor must be one of"):
        make_executor("dask")


def test_ray_gives_the_in_process_ground_truth(local_ray):
    from experiments import validate

    config, family, star, subsets = tiny_truth()
    members = subset_members(subsets)
    train_keys, eval_key = fine_tune_keys(jax.random.key(1), len(members), 2)
    runs = validate.TruthRuns(config, family, star, members, train_keys, eval_key,
                              show_progress=False)
    def gather(executor):
        out = {}
        for part in executor.run(runs, runs.names):
            out.update(part)
        assert sorted(out) == sorted(runs.names)
        return out

    on_ray = gather(RayExecutor(chunk=2))  # parts of 2 runs, as they finish
    in_parts = gather(InProcess(chunk=2))
    all_at_once = gather(InProcess())
    for name in runs.names:
        for key, value in in_parts[name].items():
            # the same computation in another process: the same bits
            np.testing.assert_array_equal(np.asarray(on_ray[name][key]), value,
                                          err_msg=f"{name} {key}")
            # a batch of 6 runs rounds differently from one of 2
            np.testing.assert_allclose(all_at_once[name][key], value, rtol=1e-4, atol=1e-6,
                                       err_msg=f"{name} {key}")


def test_a_killed_ray_worker_is_retried_and_every_result_arrives(local_ray, tmp_path):
    marker_dir = str(tmp_path)

    def die_once_then_square(names: list) -> dict:  # nested: pickled by value for the workers
        """Kills its own worker process the first time it sees a name (a node lost mid-task)."""
        marker = os.path.join(marker_dir, names[0])
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return {name: {"x": np.array(int(name[1:]) ** 2)} for name in names}

    names = ["r1", "r2", "r3"]
    fn = die_once_then_square
    out = StageRunner(tmp_path / "run", log=lambda _: None).batch(
        names, fn, executor=RayExecutor(chunk=1, max_retries=2))
    assert {name: int(out[name]["x"]) for name in names} == {"r1": 1, "r2": 4, "r3": 9}
    assert sorted(os.listdir(tmp_path / "run" / "stages")) == ["r1.npz", "r2.npz", "r3.npz"]


def test_ray_workers_use_the_drivers_compile_cache(local_ray, tmp_path):
    def cache_dir(names):  # nested: pickled by value for the workers
        return {name: {"dir": np.array(str(jax.config.jax_compilation_cache_dir))}
                for name in names}

    def worker_dirs(driver_dir):
        jax.config.update("jax_compilation_cache_dir", str(driver_dir))
        out = {}
        for part in RayExecutor(chunk=1).run(cache_dir, ["a", "b"]):
            out.update(part)
        return {str(v["dir"]) for v in out.values()}

    before = jax.config.jax_compilation_cache_dir
    try:  # the same (reused) workers follow the driver when its directory changes
        first, second = worker_dirs(tmp_path / "first"), worker_dirs(tmp_path / "second")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
    assert first == {str(tmp_path / "first")} and second == {str(tmp_path / "second")}
