"""Multi-objective and planted task families, and the registry every experiment reads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax.envs import highway_family, lunar_lander_family
from pgx_jax.envs.highway import reward as highway_reward
from pgx_jax.envs.lunar_lander import SCALAR_WEIGHTS
from pgx_jax.envs.registry import FAMILIES
from pgx_jax.envs.reward_weight import planted_weights, reward_weight_family


def random_steps(family, steps: int, seed: int = 0):
    """Random-action rollout of every task of `family` in one vmap: per-step outputs [T, n]."""
    env, params = family.env, family.params
    keys = jax.random.split(jax.random.key(seed), family.num_tasks)
    obs, state = jax.vmap(env.reset)(keys, params)

    def step(carry, key):
        state = carry
        k_act, k_step = jax.random.split(key)
        action = jax.random.randint(k_act, (family.num_tasks,), 0, family.action_dim)
        obs, state, reward, terminated, truncated, info = jax.vmap(env.step)(
            jax.random.split(k_step, family.num_tasks), state, action, params)
        return state, (reward, terminated, info)

    _, out = jax.lax.scan(step, state, jax.random.split(jax.random.key(seed + 1), steps))
    return out


def test_lunar_lander_reward_vector_under_gymnasium_weights_is_the_scalar_reward():
    family = lunar_lander_family((-10.0, -4.0, -11.0))
    reward, terminated, info = random_steps(family, 400)
    vector = np.asarray(info["reward_vector"])
    weighted = vector @ np.asarray(SCALAR_WEIGHTS)
    reward, terminated = np.asarray(reward), np.asarray(terminated)
    assert terminated.any() and (~terminated).any()
    # Every step but the terminal one: wᵀr is Gymnasium's scalar reward.
    np.testing.assert_allclose(weighted[~terminated], reward[~terminated], rtol=1e-5, atol=1e-4)
    # The terminal step: the scalar is ±100 alone, MO-Gymnasium's vector keeps the other terms.
    np.testing.assert_array_equal(vector[terminated][:, 0], reward[terminated])
    assert set(np.unique(vector[..., 0])) <= {-100.0, 0.0, 100.0}
    assert set(np.unique(vector[..., 2])) <= {-1.0, 0.0} and set(np.unique(vector[..., 3])) <= {-1.0, 0.0}


def test_highway_reward_vector_is_mo_highways_and_maps_affinely_to_the_scalar():
    family = highway_family((0.5, 1.0, 2.0))
    reward, _, info = random_steps(family, 30)
    vector = np.asarray(info["reward_vector"])
    on_road = 1.0  # the default road has no off-road positions for the ego's lanes
    expected = (0.4 * vector[..., 0] + 0.1 * vector[..., 1] + 1.0 * vector[..., 2] + on_road) / 1.5
    np.testing.assert_allclose(np.asarray(reward), expected, rtol=1e-5, atol=1e-6)
    assert highway_reward is not None and (vector[..., 2] <= 0).all()


def test_reward_weight_family_reward_is_the_weighted_vector():
    weights = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0.2, 0.3, 0.4, 0.1]])
    family = reward_weight_family(lunar_lander_family((-10.0,)), weights)
    assert family.num_tasks == 3 and family.obs_dim == 8
    reward, _, info = random_steps(family, 200)
    np.testing.assert_allclose(np.asarray(reward), np.einsum(
        "tnk,nk->tn", np.asarray(info["reward_vector"]), weights), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(info["original_reward"].shape, reward.shape)


@pytest.mark.parametrize("weights, message", [
    (np.ones((3, 3)), r"weights must be \[n, 4\]"),
    (np.ones(4), r"weights must be \[n, 4\]"),
    (-np.ones((2, 4)), "must be >= 0"),
    (np.zeros((2, 4)), r"rows \[0, 1\] are all zero"),
    (np.full((2, 4), np.nan), "NaN"),
])
def test_reward_weight_family_rejects_bad_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        reward_weight_family(lunar_lander_family((-10.0,)), weights)


def test_reward_weight_family_needs_one_task_or_one_per_weight_and_a_reward_vector():
    with pytest.raises(ValueError, match="needs 1 .* or 3"):
        reward_weight_family(lunar_lander_family((-10.0, -5.0)), np.ones((3, 4)))
    from pgx_jax.envs import cartpole_family

    with pytest.raises(ValueError, match="no reward vector"):
        reward_weight_family(cartpole_family((0.5,)), np.ones((2, 1)))


def test_planted_weights_lie_on_the_simplex_near_their_centres():
    centres = np.eye(3) * 0.8 + 0.1
    weights = planted_weights(0, centres, (3, 3, 4), spread=0.05)
    assert weights.shape == (10, 3)
    np.testing.assert_allclose(weights.sum(1), 1.0)
    nearest = np.argmin(((weights[:, None] - centres[None] / centres.sum(1)[:, None]) ** 2).sum(-1), 1)
    np.testing.assert_array_equal(nearest, [0, 0, 0, 1, 1, 1, 2, 2, 2, 2])


def test_swapped_side_engines_exchange_actions_1_and_3():
    normal = lunar_lander_family((-10.0,))
    swapped = lunar_lander_family((-10.0,), swap_side_engines=True)
    assert swapped.names == ("gravity=-10,swapped",)
    env, key = normal.env, jax.random.key(3)
    params_n, params_s = normal.task_params(0), swapped.task_params(0)
    _, state = env.reset(key, params_n)
    for action, mirrored in ((1, 3), (3, 1), (2, 2), (0, 0)):
        a = env.step_env(jax.random.key(9), state, jnp.int32(action), params_s)
        b = env.step_env(jax.random.key(9), state, jnp.int32(mirrored), params_n)
        np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
        np.testing.assert_allclose(a[2], b[2], rtol=1e-6)


def test_every_registered_family_builds_with_its_planted_groups():
    for name, spec in FAMILIES.items():
        family = spec.family()
        assert family.num_tasks >= 2, name
        if spec.planted is not None:
            assert len(spec.planted) == family.num_tasks, name
        assert spec.defaults.get("k", 3) <= family.num_tasks


def test_every_registered_family_defaults_make_valid_experiment_settings():
    """Each family's PPO settings pass θ*'s and the validation's checks (fine-tuning included:
    its envs × steps split into θ*'s minibatches), for both presets."""
    from experiments import validate

    for name in FAMILIES:
        for preset in ("default", "quick"):
            config = validate.parse(["--env", name, "--preset", preset])
            assert config.env == name
            assert config.finetune().num_minibatches == config.ppo().num_minibatches
