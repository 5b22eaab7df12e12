"""Runs tell the truth about themselves: settings are checked before any work, a stored stage is
reused only with the settings that made it, and unreadable stage files are recomputed."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from experiments import _mt10_downstream, cartpole, control, mt10, synthetic, validate
from experiments._pipeline import ESTIMATION_STAGES
from experiments._runner import SettingError, StaleStageError

SYNTHETIC_ARGV = ["--tasks", "6", "--samples-per-task", "96", "--dim", "32", "--subsets", "30"]
CARTPOLE_ARGV = ["--half-lengths", "0.3", "0.6", "1.2", "2.0", "--steps-per-task", "1024",
                 "--num-envs", "2", "--eval-envs", "2", "--collect-steps", "100", "--dim", "16",
                 "--subsets", "12", "--k", "2"]


# ---------------------------------------------------------------------------------------------
# Invalid settings: one line naming the flag, before anything is written.

INVALID = [
    (cartpole, ["--k", "20"], r"--k must be <= 10 \(the family has 10 tasks\)"),
    (cartpole, ["--k", "0"], "--k must be an integer >= 1"),
    (cartpole, ["--dim", "-5"], "--dim must be an integer >= 1"),
    (cartpole, ["--subsets", "2"], "--subsets must be >= 17"),
    (cartpole, ["--subset-size", "1"], "--subset-size must be an integer >= 2"),
    (cartpole, ["--subset-size", "11"], "--subset-size must be <= 10"),
    (cartpole, ["--l2", "0"], "--l2 must be a positive number"),
    (cartpole, ["--holdout", "1.0"], r"--holdout must lie in \[0, 1\)"),
    (cartpole, ["--score-on", "test"], "--score-on must be 'train' or 'heldout'"),
    (cartpole, ["--seed", "-1"], "--seed must be an integer >= 0"),
    (cartpole, ["--steps-per-task", "100"], "--steps-per-task must be at least one PPO update"),
    (cartpole, ["--gamma", "1.5"], r"--gamma must lie in \[0, 1\]"),
    (cartpole, ["--lr", "0"], r"--lr must lie in \(0, 1\]"),
    (cartpole, ["--hidden", "64", "0"], "--hidden must be one or more positive"),
    (cartpole, ["--half-lengths", "0.5", "-1"], "--half-lengths: half_lengths must be positive"),
    (cartpole, ["--env", "lunarlander", "--gravities", "-13", "-5"], "--gravities: gravities must"),
    (cartpole, ["--collect-steps", "105"], "--collect-steps must be a multiple of 10"),
    (cartpole, ["--restart-from", "nonsense"], "--restart-from must name a stage"),
    (cartpole, ["--run", "a/b"], "--run must be a plain folder name"),
    (synthetic, ["--tasks", "1"], "--tasks must be an integer >= 2"),
    (synthetic, ["--planted", "7", "--tasks", "6", "--subsets", "30"], "--planted must be <= --tasks"),
    (control, ["--env", "mars"], "--env must be one of cartpole, highway, lunarlander"),
    (control, ["--env", "highway", "--densities", "-1", "1"], "--densities: "),
    (control, ["--adapt-steps", "-1"], "--adapt-steps must be an integer >= 0"),
    (control, ["--maml-init", "zeros"], "--maml-init must be"),
    (control, ["--task-onehot"], "--maml-init theta_star needs a θ\\* without the task one-hot"),
    (control, ["--seeds", "0"], "--seeds must be an integer >= 1"),
    (validate, ["--env", "venus"], "--env must be one of cartpole, highway, lunarlander, "
                                   "lunarlander-weights"),
    (control, ["--env", "venus"], "--env must be one of cartpole, highway, lunarlander, "
                                  "lunarlander-weights, highway-weights, lunarlander-swapped"),
    (validate, ["--truth-seeds", "1"], "--truth-seeds must be an integer >= 2"),
    (validate, ["--hessian-checkpoints", "7"], "--hessian-checkpoints .* must divide"),
    (validate, ["--ablation-sizes", "1"], r"--ablation-sizes must lie in \[2, 10\]"),
    (validate, ["--table1-subset-size", "11"], r"--table1-subset-size must lie in \[1, 10\]"),
    (mt10, ["--preset", "huge"], "--preset must be one of quick, medium, paper"),
    (mt10, ["--envs-per-task", "0"], "--envs-per-task must be an integer >= 1"),
    (mt10, ["--steps-per-task", "10"], "--steps-per-task must be at least one PPO update"),
    (mt10, ["--tasks", "reach-v3", "fly-v3"], r"--tasks: unknown Meta-World tasks \['fly-v3'\]"),
    (mt10, ["--downstream", "--sac-steps-per-task", "500", "--sac-learning-starts", "1000"],
     "must leave updates after the replay warm-up"),
    (mt10, ["--downstream", "--sac-steps-per-task", "1", "--sac-learning-starts", "0"],
     "must leave updates after the replay warm-up"),
    (mt10, ["--downstream", "--sac-buffer-size", "10"], "--sac-buffer-size .* must hold one"),
    (mt10, ["--downstream", "--sweep-k", "11"], r"--sweep-k values must lie in \[1, 10\]"),
    (mt10, ["--downstream", "--sac-network", "cnn"], "--sac-network.*SACConfig.network"),
]


@pytest.mark.parametrize("module, argv, message", INVALID,
                         ids=[f"{m.__name__.split('.')[-1]}:{' '.join(a)}" for m, a, _ in INVALID])
def test_an_invalid_setting_is_rejected_before_anything_is_written(tmp_path, module, argv, message):
    out = tmp_path / "results"
    with pytest.raises(SettingError, match=message) as error:
        module.main(argv + ["--out", str(out)])
    assert "\n" not in str(error.value)
    assert not out.exists()


def test_the_command_line_prints_one_line_and_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "experiments.cartpole", "--k", "20", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --k must be <= 10 (the family has 10 tasks), got 20"]
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Every flag is a setting of some stage, or declared to steer the run without shaping results.

def stage_uses(*tables) -> set:
    return {name for table in tables for spec in table.values() for name in spec.get("uses", ())}


# Fields that decide which stages run (or define the task family, which enters "train" as
# `family_settings`), not what a stage computes.
FAMILY_FLAGS = {"env", "half_lengths", "densities", "gravities", "target_speeds"}
NOT_STAGE_SETTINGS = {
    cartpole: FAMILY_FLAGS,
    synthetic: set(),
    control: FAMILY_FLAGS | {"seeds"},  # the number of seed stages
    validate: FAMILY_FLAGS,
    mt10: {"preset", "downstream", "sweep_k", "sac_seeds", "sac_network"},  # network: `extra`
}
STAGE_TABLES = {
    cartpole: (cartpole.PIPELINE_STAGES,),
    synthetic: (synthetic.STAGES,),
    control: (cartpole.PIPELINE_STAGES, control.STAGES),
    validate: (cartpole.PIPELINE_STAGES, validate.STAGES),
    mt10: (mt10.STAGES, {"sac": {"uses": _mt10_downstream.SAC_USES}}),
}


@pytest.mark.parametrize("module", list(STAGE_TABLES), ids=lambda m: m.__name__.split(".")[-1])
def test_every_flag_is_a_stage_setting_or_declared_run_control(module):
    fields = {f.name for f in dataclasses.fields(module.Config)}
    uses = stage_uses(*STAGE_TABLES[module])
    declared = set(module.Config.RUN_CONTROL) | NOT_STAGE_SETTINGS[module]
    assert fields - uses - declared == set(), "flags no stage records"
    assert uses - fields == set(), "stage settings that are not flags"
    assert uses & set(module.Config.RUN_CONTROL) == set()
    assert set(ESTIMATION_STAGES) <= set(module.Config.STAGE_NAMES)


# ---------------------------------------------------------------------------------------------
# Resume: a changed flag on an existing run stops at the first stage it affects.

# flag → (changed value, the first stage whose stored settings it changes)
SYNTHETIC_CHANGES = {
    "seed": (["1"], "features"), "tasks": (["7"], "features"), "planted": (["2"], "features"),
    "samples_per_task": (["64"], "features"), "dim": (["16"], "features"),
    "subsets": (["25"], "subsets"), "subset_size": (["4"], "subsets"),
    "l2": (["0.1"], "estimate"), "holdout": (["0.3"], "estimate"),
    "score_on": (["heldout"], "estimate"), "k": (["2"], "cluster"),
    "task_effects": (["remove"], "cluster"),
}
CARTPOLE_CHANGES = {
    "seed": (["1"], "train"), "half_lengths": (["0.3", "0.6", "1.2", "2.5"], "train"),
    "steps_per_task": (["2048"], "train"), "num_envs": (["4"], "train"),
    "num_steps": (["64"], "train"), "lr": (["1e-3"], "train"), "gamma": (["0.9"], "train"),
    "gae_lambda": (["0.9"], "train"), "hidden": (["32", "32"], "train"),
    "task_onehot": ("--task-onehot", "train"), "clip_value": ("--no-clip-value", "train"),
    "normalize_obs": ("--normalize-obs", "train"), "ent_coef": (["0"], "train"),
    "update_epochs": (["2"], "train"), "num_minibatches": (["2"], "train"),
    "eval_envs": (["3"], "evaluate"),
    "env": (["highway", "--densities", "0.5", "1", "1.5", "2"], "train"),
    "densities": (["0.5", "1", "1.5", "2"], None), "gravities": (["-9", "-8"], None),
    "target_speeds": (["0.5", "1"], None),
    "task_effects": (["remove"], "cluster"),
    "collect_steps": (["120"], "features"), "dim": (["8"], "features"),
    "subsets": (["10"], "subsets"), "subset_size": (["2"], "subsets"),
    "l2": (["0.1"], "estimate"), "holdout": (["0.3"], "estimate"),
    "score_on": (["heldout"], "estimate"), "k": (["3"], "cluster"),
}


def changed_argv(argv, name, values):
    """`argv` with flag `name` set to `values` (a string: that flag itself, for booleans)."""
    option = "--" + name.replace("_", "-")
    if isinstance(values, str):
        return argv + [values]
    argv = list(argv)
    if option in argv:
        start = argv.index(option) + 1
        end = start
        while end < len(argv) and not argv[end].startswith("--"):
            end += 1
        del argv[start - 1:end]
    return argv + [option, *values]


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    argv = SYNTHETIC_ARGV + ["--out", str(out), "--run", "r"]
    return argv, out / "r", synthetic.main(argv)


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cartpole")
    argv = CARTPOLE_ARGV + ["--out", str(out), "--run", "r"]
    return argv, out / "r", cartpole.main(argv)


def assert_stale(module, argv, run_dir, name, values, first_stage):
    if first_stage is None:  # a source flag of another family: ignored, everything reused
        module.main(changed_argv(argv, name, values))
        return
    before = (run_dir / "config.json").read_text()
    with pytest.raises(StaleStageError) as error:
        module.main(changed_argv(argv, name, values))
    message = str(error.value)
    assert f"stage '{first_stage}' " in message
    assert ("--" + name.replace("_", "-") + ":" in message
            or (name in NOT_STAGE_SETTINGS[module] and "family:" in message))
    assert "--force" in message and "--run" in message
    assert (run_dir / "config.json").read_text() == before  # the record still tells the truth


@pytest.mark.parametrize("name", sorted(SYNTHETIC_CHANGES))
def test_synthetic_flag_change_stops_at_the_stage_it_affects(synthetic_run, name):
    argv, run_dir, _ = synthetic_run
    assert_stale(synthetic, argv, run_dir, name, *SYNTHETIC_CHANGES[name])


@pytest.mark.parametrize("name", sorted(CARTPOLE_CHANGES))
def test_cartpole_flag_change_stops_at_the_stage_it_affects(cartpole_run, name):
    argv, run_dir, _ = cartpole_run
    assert_stale(cartpole, argv, run_dir, name, *CARTPOLE_CHANGES[name])


def test_every_synthetic_and_cartpole_flag_is_covered():
    for module, changes in ((synthetic, SYNTHETIC_CHANGES), (cartpole, CARTPOLE_CHANGES)):
        fields = {f.name for f in dataclasses.fields(module.Config)}
        assert fields - set(changes) == set(module.Config.RUN_CONTROL)


def ran_and_loaded(text: str):
    ran = {line.split("]")[0][1:] for line in text.splitlines() if line.endswith("running ...")}
    loaded = {line.split("]")[0][1:] for line in text.splitlines() if "finished earlier" in line}
    return ran, loaded


@pytest.mark.parametrize("extra, recomputed", [
    (["--k", "3", "--force"], {"cluster"}),
    (["--eval-envs", "3", "--force"], {"evaluate", "random_policy"}),
    (["--dim", "8", "--force"], {"features", "estimate", "cluster"}),
    (["--restart-from", "estimate"], {"estimate", "cluster"}),
])
def test_force_and_restart_recompute_exactly_the_affected_stages(cartpole_run, tmp_path, capsys,
                                                                 extra, recomputed):
    argv, run_dir, _ = cartpole_run
    copy = tmp_path / "r"
    shutil.copytree(run_dir, copy)
    argv = changed_argv(argv, "out", [str(tmp_path)])
    capsys.readouterr()
    cartpole.main(argv + extra)
    ran, loaded = ran_and_loaded(capsys.readouterr().out)
    assert ran == recomputed and loaded == set(cartpole.Config.STAGE_NAMES) - recomputed
    saved = json.loads((copy / "config.json").read_text())
    assert "force" not in saved and "restart_from" not in saved
    if "--k" in extra:
        assert saved["k"] == 3
    # The new settings are now the run's: a plain rerun with them reuses everything.
    cartpole.main(argv + [a for a in extra if a != "--force"] if "--force" in extra else argv)
    ran, _ = ran_and_loaded(capsys.readouterr().out)
    assert ran == set()


def test_unchanged_resume_reuses_every_stage_and_run_control_flags_change_nothing(
        cartpole_run, capsys):
    argv, _, first = cartpole_run
    capsys.readouterr()
    again = cartpole.main(argv + ["--no-force"])
    ran, loaded = ran_and_loaded(capsys.readouterr().out)
    assert ran == set() and loaded == set(cartpole.Config.STAGE_NAMES)
    np.testing.assert_array_equal(again["groups"]["ours"], first["groups"]["ours"])


def test_a_truncated_or_corrupt_stage_file_is_recomputed(synthetic_run, tmp_path, capsys):
    argv, run_dir, first = synthetic_run
    shutil.copytree(run_dir, tmp_path / "r")
    features = tmp_path / "r" / "stages" / "features.npz"
    features.write_bytes(features.read_bytes()[:200])  # a killed copy
    estimate = tmp_path / "r" / "stages" / "estimate.npz"
    data = bytearray(estimate.read_bytes())
    with np.load(estimate) as arrays:
        start = bytes(data).index(arrays["train_loss"].tobytes())
    data[start + 1] ^= 0xFF  # a flipped byte inside an array: the zip CRC catches it
    estimate.write_bytes(bytes(data))
    capsys.readouterr()
    again = synthetic.main(changed_argv(argv, "out", [str(tmp_path)]))
    out = capsys.readouterr().out
    assert out.count("is unreadable") == 2
    ran, _ = ran_and_loaded(out)
    assert ran == {"features", "estimate"}
    np.testing.assert_array_equal(again["groups"]["ours"], first["groups"]["ours"])
    np.testing.assert_allclose(again["scores_train"], first["scores_train"], rtol=1e-5)


def test_a_stage_from_an_older_version_without_settings_is_stale(synthetic_run, tmp_path):
    argv, run_dir, _ = synthetic_run
    shutil.copytree(run_dir, tmp_path / "r")
    path = tmp_path / "r" / "stages" / "cluster.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if k != "_settings"}
    np.savez(path, **arrays)
    with pytest.raises(StaleStageError, match="not recorded"):
        synthetic.main(changed_argv(argv, "out", [str(tmp_path)]))


_CACHED_PROGRAM = """
import sys, numpy as np, jax, jax.numpy as jnp
from experiments._runner import use_compile_cache
use_compile_cache(sys.argv[1] == "on")
from pgx_jax import sample_subsets, solve_subsets
from pgx_jax.synthetic import planted_features, planted_groups
feats = planted_features(jax.random.key(0), planted_groups(6, 2), 64, 12)
solution = solve_subsets(feats, sample_subsets(jax.random.key(1), 6, 20, 3))
print(np.asarray(solution.theta).tobytes().hex())
"""


def test_compile_cache_on_off_and_corrupt_give_the_same_results(tmp_path):
    """The solve with the persistent cache off, cold (writing entries), warm (reading them) and
    after its entries are overwritten with garbage (JAX warns and compiles again) gives the same
    bits; an unusable cache directory is a warning, not an error."""
    env = dict(os.environ, PGX_JAX_COMPILE_CACHE=str(tmp_path / "cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")

    def run(mode):
        done = subprocess.run([sys.executable, "-c", _CACHED_PROGRAM, mode], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip(), done.stderr

    off, _ = run("off")
    assert not (tmp_path / "cache").exists()
    cold, _ = run("on")
    entries = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert entries
    warm, _ = run("on")
    for entry in entries:
        entry.write_bytes(b"not an executable")
    corrupt, stderr = run("on")
    assert "Error reading persistent compilation cache entry" in stderr
    assert off == cold == warm == corrupt

    (tmp_path / "a_file").write_text("")
    env["PGX_JAX_COMPILE_CACHE"] = str(tmp_path / "a_file")
    unusable, stderr = run("on")
    assert unusable == off and "compilation cache off" in stderr


def test_update_bar_keeps_the_last_return_when_no_episode_ended():
    from experiments._runner import UpdateBar

    bar = UpdateBar(3, "test", steps_per_update=10)
    bar(0, 12.5, 0.4)
    bar(1, 0.0, float("nan"))  # no episode ended in this update
    assert bar.bar.postfix.startswith("mean_return=12.5, success=0.40")
    bar(2, 20.0, 0.6)
    assert bar.bar.postfix.startswith("mean_return=20.0, success=0.60")
    bar.close()
    # The JAX PPO's bar (no success): NaN return = no episode ended, shown at every 10th update.
    bar = UpdateBar(20, "test", steps_per_update=10)
    for update in range(10):
        bar(update, -150.0 if update == 3 else float("nan"))
    assert bar.bar.postfix.startswith("mean_return=-150.0")
    bar.close()
