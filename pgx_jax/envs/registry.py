"""One registry of task families and the settings every experiment uses for them.

`FAMILIES[name]` says how to build the family's n source tasks, which tasks belong together by
construction (planted families), how to draw unseen targets for meta-RL, and the experiment
defaults that suit it (θ*'s PPO budget, γ, λ, network, collected transitions, k). The
experiments (`cartpole`, `control`, `validate`) read their per-family defaults from here, so
adding a family is one entry.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from pgx_jax.envs.brax_family import brax_family
from pgx_jax.envs.cartpole import CARTPOLE_HALF_LENGTHS, cartpole_family
from pgx_jax.envs.family import TaskFamily
from pgx_jax.envs.highway import HIGHWAY_DENSITIES, highway_family
from pgx_jax.envs.lunar_lander import LUNAR_LANDER_GRAVITIES, lunar_lander_family
from pgx_jax.envs.reward_weight import planted_weights, reward_weight_family

# Planted multi-objective families: 10 weight vectors in groups of 3/3/4 around 3 well-separated
# points of the simplex (seed 0, spread 0.05; listed in every report through the task names).
PLANTED_SIZES = (3, 3, 4)
LUNAR_LANDER_CENTRES = (  # landed/crashed, shaping, main-engine fuel, side-engine fuel
    (0.45, 0.45, 0.05, 0.05),  # land well, fuel nearly free
    (0.15, 0.15, 0.65, 0.05),  # the main engine is expensive
    (0.15, 0.15, 0.05, 0.65),  # the side engines are expensive
)
HIGHWAY_CENTRES = (  # high speed, right lane, −collision
    (0.8, 0.1, 0.1),  # fast
    (0.1, 0.8, 0.1),  # keep right
    (0.1, 0.1, 0.8),  # safe
)
# Swapped side engines: 5 gravities with Gymnasium's engines, the same 5 with actions 1 and 3
# exchanged. The observation does not reveal the swap; gravities within a group are close.
SWAPPED_GRAVITIES = (-10.5, -10.25, -10.0, -9.75, -9.5)
# brax families (`pgx_jax.envs.brax_family`), MAML's locomotion tasks at its horizon of 200 steps.
# HalfCheetah-velocity: 10 target speeds spanning MAML's U[0, 2] m/s; the control cost is MAML's
# 0.05·Σa² = 0.5 × brax's 0.1·Σa² component.
HALFCHEETAH_SPEEDS = tuple(np.round(np.linspace(0.2, 2.0, 10), 2).tolist())
BRAX_EPISODE = 200
BRAX_CTRL_WEIGHT = 0.5
# Direction families, planted by direction: HalfCheetah forward/backward, each with 5 control-cost
# weights; Ant at 5 headings within ±20° of forward and of backward.
DIRECTION_CTRL_WEIGHTS = (0.25, 0.5, 1.0, 1.5, 2.0)
ANT_HEADINGS = (-20.0, -10.0, 0.0, 10.0, 20.0)
HALFCHEETAH_CENTRES = (  # run, control cost (brax's components)
    (0.9, 0.1),  # run
    (0.5, 0.5),  # trot
    (0.15, 0.85),  # spare the motors
)


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    """A task family and its experiment defaults.

    Attributes:
      make: source parameters → TaskFamily.
      sources: the default source parameters (what `make` takes).
      source_flag: the experiments' flag that overrides `sources` ("" when fixed).
      planted: group id per source task when the groups are known by construction, else None.
      sample_targets: (rng, count) → unseen target parameters from the sources' range (meta-RL),
        or None when the family has no target distribution.
      maml_horizon: steps per episode in MAML's batches.
      defaults: experiment Config defaults for this family (flags still win).
      description: one line for reports and `--help`.
    """

    make: Callable[..., TaskFamily]
    sources: tuple
    source_flag: str
    planted: tuple | None
    sample_targets: Callable | None
    maml_horizon: int
    defaults: dict
    description: str

    def family(self, sources=None) -> TaskFamily:
        return self.make(self.sources if sources is None else sources)


def _lunar_lander_weights(weights) -> TaskFamily:
    return reward_weight_family(lunar_lander_family((-10.0,)), weights)


def _highway_weights(weights) -> TaskFamily:
    return reward_weight_family(highway_family((1.0,)), weights)


def _swapped(gravities) -> TaskFamily:
    half = len(gravities) // 2
    return lunar_lander_family(gravities,
                               swap_side_engines=[False] * half + [True] * (len(gravities) - half))


def _halfcheetah_vel(speeds) -> TaskFamily:
    return brax_family("halfcheetah", target_speeds=speeds, episode_length=BRAX_EPISODE,
                       weights=[[1.0, BRAX_CTRL_WEIGHT]] * len(speeds))


def _halfcheetah_dir(tasks) -> TaskFamily:
    """tasks: (direction ±1, control-cost weight) pairs."""
    return brax_family("halfcheetah", episode_length=BRAX_EPISODE,
                       directions=[[sign, 0.0] for sign, _ in tasks],
                       weights=[[1.0, ctrl] for _, ctrl in tasks])


def _ant_dir(headings) -> TaskFamily:
    """headings: degrees from +x."""
    radians = np.radians(np.asarray(headings, dtype=float))
    return brax_family("ant", episode_length=BRAX_EPISODE,
                       directions=np.stack([np.cos(radians), np.sin(radians)], 1))


def _halfcheetah_weights(weights) -> TaskFamily:
    return brax_family("halfcheetah", weights=weights, episode_length=BRAX_EPISODE)


def _direction_targets(rng, count):
    """Unseen HalfCheetah directions: forward for the first half, backward for the rest, with
    control-cost weights in the sources' range."""
    ctrl = np.round(rng.uniform(min(DIRECTION_CTRL_WEIGHTS), max(DIRECTION_CTRL_WEIGHTS), count), 3)
    return tuple((1.0 if i < count // 2 else -1.0, float(c)) for i, c in enumerate(ctrl))


def _heading_targets(rng, count):
    """Unseen Ant headings within ±20° of forward (first half) and of backward (the rest)."""
    offsets = rng.uniform(min(ANT_HEADINGS), max(ANT_HEADINGS), count)
    return tuple(np.round(offsets + np.where(np.arange(count) < count // 2, 0.0, 180.0),
                          2).tolist())


def _planted_ids(sizes) -> tuple:
    return tuple(int(i) for i, size in enumerate(sizes) for _ in range(size))


def _uniform_targets(low, high, digits):
    return lambda rng, count: np.round(rng.uniform(low, high, count), digits)


def _planted_targets(centres):
    """Unseen weightings drawn as the sources are (`planted_weights`: the same centres and
    spread, a fresh draw), `count` of them split as evenly as the centres allow."""
    def sample(rng, count):
        sizes = np.diff(np.linspace(0, count, len(centres) + 1).round().astype(int))
        return tuple(map(tuple, planted_weights(int(rng.integers(2**31)), centres,
                                                tuple(sizes)).round(4).tolist()))
    return sample


def _swapped_targets(rng, count):
    """Unseen gravities in the sources' range; the first half of the targets with Gymnasium's
    side engines, the rest swapped (`_swapped`'s layout)."""
    return tuple(np.round(rng.uniform(min(SWAPPED_GRAVITIES), max(SWAPPED_GRAVITIES), count),
                          3).tolist())


# LunarLander's θ* uses the usual LunarLander PPO settings (γ 0.999, λ 0.98, 2M steps per task):
# with CartPole's (γ 0.99, 500k steps per task) θ*'s mean source return (the pipeline's
# stochastic evaluation) was −25, with these 102 (greedy: 178). Highway's use highway-env's
# usual γ 0.9 and a budget its ~10k PPO steps/s here allow (greedy return 9.5 → 15.6 of 30 at
# 60k per task). CartPole's MAML horizon is 200, as the paper's returns suggest; highway's is its
# 30 s episode; LunarLander's 400 steps leave the heuristic controller time to land.
# Without PPO's value clipping (±0.2 in return units, which holds LunarLander's critic back),
# θ*'s mean source return (stochastic policy, 2M steps per task) rose from 102.1 to 128.6 (seed 0)
# and from 84.4 to 108.3 (seed 1): `experiments.cartpole --env lunarlander [--no-clip-value]`.
_LUNAR_PPO = {"steps_per_task": 2_000_000, "num_envs": 16, "lr": 3e-4, "gamma": 0.999,
              "gae_lambda": 0.98, "clip_value": False}
_HIGHWAY_PPO = {"steps_per_task": 100_000, "num_envs": 32, "num_steps": 64, "lr": 3e-4,
                "gamma": 0.9}
# The ground truth of `experiments.validate`. Highway steps at ~15k PPO steps/s here: 200 subsets
# × 4 seeds × 3 tasks × 20,480 steps took 55 minutes, 10,240 fit the 30-minute budget. On
# LunarLander 4 seeds left the truth's halves at NMI 0.15 on the paper's gravities (0.81 with 8).
_HIGHWAY_TRUTH = {"finetune_steps": 10_240}
_LUNAR_TRUTH = {"truth_seeds": 8}
# brax: θ* sees the task one-hot (a velocity target or heading is not in the observation, and one
# policy for all speeds is worse than standing still on the slowest targets). At 200k steps per
# task, 16 envs × 128 steps and PPO's usual 4 epochs × 4 minibatches, θ* stayed at a random
# policy's return; on two halfcheetah-vel tasks (v* = 1, 2; 100k steps each) what made it learn
# was many more, smaller updates: 8 envs × 64 steps, 10 epochs × 32 minibatches, no entropy
# bonus (greedy −113/−193 vs random −216/−399). Observations are normalized (running moments,
# as brax's PPO; −271 vs −285 without at the 16 × 128 shape) and the value loss is unclipped
# (returns of hundreds, as on LunarLander).
_BRAX_PPO = {"steps_per_task": 200_000, "num_envs": 8, "num_steps": 64, "lr": 3e-4,
             "gamma": 0.99, "gae_lambda": 0.95, "task_onehot": True, "normalize_obs": True,
             "clip_value": False, "ent_coef": 0.0, "update_epochs": 10, "num_minibatches": 32}

FAMILIES: dict[str, FamilySpec] = {
    "cartpole": FamilySpec(
        cartpole_family, CARTPOLE_HALF_LENGTHS, "half_lengths", None,
        lambda rng, count: np.round(np.exp(rng.uniform(
            np.log(min(CARTPOLE_HALF_LENGTHS)), np.log(max(CARTPOLE_HALF_LENGTHS)), count)), 4),
        200, {}, "CartPole-v1, 10 pole half-lengths 0.15–2.4 m (the paper's)"),
    "highway": FamilySpec(
        highway_family, HIGHWAY_DENSITIES, "densities", None,
        _uniform_targets(min(HIGHWAY_DENSITIES), max(HIGHWAY_DENSITIES), 4), 30,
        {**_HIGHWAY_PPO, **_HIGHWAY_TRUTH},
        "highway-fast-v0, 10 traffic densities (the paper's)"),
    "lunarlander": FamilySpec(
        lunar_lander_family, LUNAR_LANDER_GRAVITIES, "gravities", None,
        _uniform_targets(min(LUNAR_LANDER_GRAVITIES), max(LUNAR_LANDER_GRAVITIES), 3), 400,
        {**_LUNAR_PPO, **_LUNAR_TRUTH}, "LunarLander-v3, 10 gravities in (−12, 0) (the paper's)"),
    "lunarlander-weights": FamilySpec(
        _lunar_lander_weights,
        tuple(map(tuple, planted_weights(0, LUNAR_LANDER_CENTRES, PLANTED_SIZES).round(4))), "",
        _planted_ids(PLANTED_SIZES), _planted_targets(LUNAR_LANDER_CENTRES), 400,
        {**_LUNAR_PPO, **_LUNAR_TRUTH},
        "mo-lunar-lander at g = −10, 10 objective weightings around 3 centres (planted 3/3/4)"),
    "highway-weights": FamilySpec(
        _highway_weights,
        tuple(map(tuple, planted_weights(0, HIGHWAY_CENTRES, PLANTED_SIZES).round(4))), "",
        _planted_ids(PLANTED_SIZES), _planted_targets(HIGHWAY_CENTRES), 30,
        {**_HIGHWAY_PPO, **_HIGHWAY_TRUTH},
        "mo-highway at density 1, 10 objective weightings around 3 centres (planted 3/3/4)"),
    "lunarlander-swapped": FamilySpec(
        _swapped, SWAPPED_GRAVITIES * 2, "", _planted_ids((5, 5)), _swapped_targets, 400,
        {**_LUNAR_PPO, **_LUNAR_TRUTH, "k": 2},
        "LunarLander-v3, 5 gravities near −10 with Gymnasium's side engines and the same 5 "
        "with them swapped (planted 5/5, k = 2)"),
    "halfcheetah-vel": FamilySpec(
        _halfcheetah_vel, HALFCHEETAH_SPEEDS, "target_speeds", None,
        _uniform_targets(0.0, 2.0, 3), BRAX_EPISODE, _BRAX_PPO,
        "brax HalfCheetah, 10 target speeds 0.2–2.0 m/s (MAML's HalfCheetahVel; 200 steps)"),
    "halfcheetah-dir": FamilySpec(
        _halfcheetah_dir, tuple((sign, c) for sign in (1.0, -1.0) for c in DIRECTION_CTRL_WEIGHTS),
        "", _planted_ids((5, 5)), _direction_targets, BRAX_EPISODE, {**_BRAX_PPO, "k": 2},
        "brax HalfCheetah, forward or backward × 5 control-cost weights (planted 5/5, k = 2)"),
    "ant-dir": FamilySpec(
        _ant_dir, tuple(h + base for base in (0.0, 180.0) for h in ANT_HEADINGS), "",
        _planted_ids((5, 5)), _heading_targets, BRAX_EPISODE, {**_BRAX_PPO, "k": 2},
        "brax Ant, 5 headings within ±20° of forward and 5 of backward (planted 5/5, k = 2)"),
    "halfcheetah-weights": FamilySpec(
        _halfcheetah_weights,
        tuple(map(tuple, planted_weights(0, HALFCHEETAH_CENTRES, PLANTED_SIZES).round(4))), "",
        _planted_ids(PLANTED_SIZES), _planted_targets(HALFCHEETAH_CENTRES), BRAX_EPISODE,
        _BRAX_PPO, "brax HalfCheetah, 10 weightings of run vs control cost around 3 centres "
        "(planted 3/3/4; MO-Gymnasium's mo-halfcheetah objectives)"),
}
BRAX_FAMILIES = tuple(name for name, spec in FAMILIES.items()
                      if spec.make in (_halfcheetah_vel, _halfcheetah_dir, _ant_dir,
                                       _halfcheetah_weights))
