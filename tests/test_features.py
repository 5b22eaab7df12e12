"""gradient_features and the blockwise projection, against loops of jax.grad and an explicit P."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from pgx_jax import Transitions, gradient_features, project, unproject
from pgx_jax.projection import BLOCK_ROWS
from pgx_jax.rl.policies import CategoricalMLP, GaussianMLP


def explicit_p(key, like, dim):
    blocks = []
    for leaf_index, leaf in enumerate(jax.tree_util.tree_leaves(like)):
        size = math.prod(leaf.shape)
        leaf_rows = [
            np.asarray(
                jax.random.normal(
                    jax.random.fold_in(jax.random.fold_in(key, leaf_index), block), (BLOCK_ROWS, dim)
                )
            )
            / np.sqrt(dim)
            for block in range(-(-size // BLOCK_ROWS))
        ]
        blocks.append(np.concatenate(leaf_rows)[:size])
    return np.concatenate(blocks)


def flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


def categorical_setup(num=13, obs_dim=5, hidden=(7,)):
    policy = CategoricalMLP(num_actions=3, hidden=hidden)
    keys = jax.random.split(jax.random.key(1), 4)
    params = policy.init(keys[0], jnp.zeros(obs_dim))
    batch = Transitions(
        obs=jax.random.normal(keys[1], (num, obs_dim)),
        action=jax.random.randint(keys[2], (num,), 0, 3),
        advantage=jax.random.normal(keys[3], (num,)),
        task=jnp.arange(num, dtype=jnp.int32) % 3,
    )
    return policy, params, batch


def gaussian_setup(num=11, obs_dim=4, hidden=(6, 6)):
    policy = GaussianMLP(action_dim=2, hidden=hidden)
    keys = jax.random.split(jax.random.key(2), 4)
    params = policy.init(keys[0], jnp.zeros(obs_dim))
    batch = Transitions(
        obs=jax.random.normal(keys[1], (num, obs_dim)),
        action=jax.random.normal(keys[2], (num, 2)),
        advantage=jax.random.normal(keys[3], (num,)),
        task=jnp.arange(num, dtype=jnp.int32) % 2,
    )
    return policy, params, batch


@pytest.mark.parametrize("whole_projection", [True, False], ids=["whole-P", "blockwise-P"])
@pytest.mark.parametrize("setup", [categorical_setup, gaussian_setup])
def test_features_equal_loop_of_single_sample_grads_times_explicit_p(setup, whole_projection, key,
                                                                      monkeypatch):
    from pgx_jax import features

    if not whole_projection:  # P too large to keep whole: generated block by block per chunk
        monkeypatch.setattr(features, "WHOLE_PROJECTION_BYTES", 0)
        features._projected_gradients.clear_cache()
    policy, params, batch = setup()
    dim = 6
    feats = gradient_features(policy.log_prob, params, batch, key, dim=dim, chunk=4)
    features._projected_gradients.clear_cache()  # no compiled program outlives the setting
    grads = np.stack([
        flat(jax.grad(policy.log_prob)(params, batch.obs[i], batch.action[i]))
        for i in range(batch.obs.shape[0])
    ])
    expected = grads @ explicit_p(key, params, dim)
    np.testing.assert_allclose(feats.z, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    adv = np.asarray(batch.advantage)
    np.testing.assert_array_equal(feats.y, np.where(adv >= 0, 1.0, -1.0))
    np.testing.assert_allclose(feats.w, np.abs(adv))
    np.testing.assert_array_equal(feats.task, batch.task)


def test_multi_block_leaf_matches_explicit_p(key):
    """A leaf larger than one block (9000 > 8192 rows) exercises full blocks and the remainder."""
    x = {"big": jax.random.normal(key, (3, 90, 100)), "small": jax.random.normal(key, (3, 4))}
    dim = 5
    expected = np.stack([flat(jax.tree_util.tree_map(lambda v: v[i], x)) for i in range(3)])
    expected = expected @ explicit_p(key, jax.tree_util.tree_map(lambda v: v[0], x), dim)
    np.testing.assert_allclose(project(key, x, dim), expected, rtol=1e-5, atol=1e-5)


def test_chunk_size_does_not_change_results(key):
    policy, params, batch = categorical_setup(num=23)
    reference = gradient_features(policy.log_prob, params, batch, key, dim=8, chunk=100).z
    for chunk in (1, 5, 23):
        z = gradient_features(policy.log_prob, params, batch, key, dim=8, chunk=chunk).z
        np.testing.assert_allclose(z, reference, rtol=1e-5, atol=1e-6)


def test_unproject_is_the_adjoint_of_project(key):
    like = {"a": jnp.zeros((30, 4)), "b": jnp.zeros(9000)}
    batch = jax.tree_util.tree_map(
        lambda v: jax.random.normal(jax.random.key(3), (5,) + v.shape), like
    )
    coeffs = jax.random.normal(jax.random.key(4), (2, 7))
    lhs = np.asarray(project(key, batch, 7)) @ np.asarray(coeffs).T
    lifted = unproject(key, coeffs, like)
    assert lifted["a"].shape == (2, 30, 4) and lifted["b"].shape == (2, 9000)
    rhs = np.stack([flat(jax.tree_util.tree_map(lambda v: v[i], batch)) for i in range(5)])
    rhs = rhs @ np.stack([flat(jax.tree_util.tree_map(lambda v: v[k], lifted)) for k in range(2)]).T
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4, atol=1e-4)
    single = unproject(key, coeffs[0], like)
    np.testing.assert_allclose(single["b"], lifted["b"][0], atol=1e-5 * np.abs(single["b"]).max())


def test_projection_preserves_norms_on_average(key):
    """Johnson–Lindenstrauss: E‖Pᵀx‖² = ‖x‖² for P_ij ~ N(0, 1/d)."""
    x = jax.random.normal(jax.random.key(5), (200, 300))
    ratio = jnp.sum(project(key, x, 400) ** 2, 1) / jnp.sum(x**2, 1)
    assert abs(float(ratio.mean()) - 1.0) < 0.03


def test_same_key_same_projection_different_key_different(key):
    x = jax.random.normal(jax.random.key(6), (4, 50))
    np.testing.assert_array_equal(project(key, x, 8), project(key, x, 8))
    assert not np.allclose(project(key, x, 8), project(jax.random.key(1), x, 8))


def test_gradient_features_under_jit(key):
    policy, params, batch = categorical_setup()
    jitted = jax.jit(lambda p, b: gradient_features(policy.log_prob, p, b, key, dim=4).z)
    np.testing.assert_allclose(
        jitted(params, batch),
        gradient_features(policy.log_prob, params, batch, key, dim=4).z,
        rtol=1e-5,
        atol=1e-6,
    )


def test_log_probs_match_closed_forms():
    policy, params, batch = categorical_setup(num=4)
    for i in range(4):
        logits = np.asarray(policy.apply(params, batch.obs[i]), np.float64)
        expected = logits[int(batch.action[i])] - scipy.special.logsumexp(logits)
        np.testing.assert_allclose(policy.log_prob(params, batch.obs[i], batch.action[i]), expected, rtol=1e-5)
    policy, params, batch = gaussian_setup(num=4)
    for i in range(4):
        mean, log_std = (np.asarray(v, np.float64) for v in policy.apply(params, batch.obs[i]))
        expected = scipy.stats.multivariate_normal(mean, np.diag(np.exp(2 * log_std))).logpdf(
            np.asarray(batch.action[i], np.float64)
        )
        np.testing.assert_allclose(policy.log_prob(params, batch.obs[i], batch.action[i]), expected, rtol=1e-5)


def test_bad_inputs_raise_clear_errors(key):
    policy, params, batch = categorical_setup()
    lp = policy.log_prob
    with pytest.raises(ValueError, match="Transitions"):
        gradient_features(lp, params, (batch.obs, batch.action), key)
    with pytest.raises(ValueError, match="advantage.*NaN"):
        gradient_features(lp, params, batch.replace(advantage=batch.advantage.at[2].set(jnp.nan)), key)
    with pytest.raises(ValueError, match="obs.*NaN"):
        gradient_features(lp, params, batch.replace(obs=batch.obs.at[0, 0].set(jnp.inf)), key)
    with pytest.raises(ValueError, match="inconsistent number"):
        gradient_features(lp, params, batch.replace(task=batch.task[:-1]), key)
    with pytest.raises(ValueError, match="dim"):
        gradient_features(lp, params, batch, key, dim=0)
    with pytest.raises(ValueError, match="chunk"):
        gradient_features(lp, params, batch, key, chunk=0)
    with pytest.raises(ValueError, match="task ids must be >= 0"):
        gradient_features(lp, params, batch.replace(task=batch.task - 1), key)
    with pytest.raises(ValueError, match="empty"):
        gradient_features(lp, params, jax.tree_util.tree_map(lambda v: v[:0], batch), key)
    with pytest.raises(ValueError, match="advantage"):
        gradient_features(lp, params, batch.replace(advantage=batch.advantage[:, None]), key)
    nan_params = jax.tree_util.tree_map(lambda v: v * jnp.nan, params)
    with pytest.raises(ValueError, match="per-sample gradients"):
        gradient_features(lp, nan_params, batch, key)
    with pytest.raises(ValueError, match="NaN"):
        project(key, jnp.full((2, 3), jnp.nan), 4)
    with pytest.raises(ValueError, match="leading batch axis"):
        project(key, {"a": jnp.zeros((2, 3)), "b": jnp.zeros((3, 3))}, 4)
    with pytest.raises(ValueError, match="coeffs"):
        unproject(key, jnp.zeros((2, 3, 4)), params)
