"""Residual quantizer, EMA codebooks, dead-code restart, k-means and input guards."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gr_jax.sid import kmeans, quantizer, rqvae


def test_residual_quantize_matches_manual_nearest_codes():
  rng = np.random.default_rng(0)
  latents = rng.normal(size=(6, 3)).astype(np.float32)
  codebooks = [
    rng.normal(size=(4, 3)).astype(np.float32),
    rng.normal(size=(5, 3)).astype(np.float32),
  ]
  result = quantizer.residual_quantize(jnp.asarray(latents), [jnp.asarray(c) for c in codebooks])
  residual = latents.copy()
  for level, codebook in enumerate(codebooks):
    expected = np.argmin(((residual[:, None, :] - codebook[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(np.asarray(result.codes[:, level]), expected)
    np.testing.assert_allclose(np.asarray(result.residuals[level]), residual, atol=1e-5)
    residual = residual - codebook[expected]
  np.testing.assert_allclose(np.asarray(result.quantized), latents - residual, atol=1e-5)


def test_top_k_argmin_equals_argmin_including_ties_zeros_and_nan():
  rng = np.random.default_rng(7)
  # Few distinct values: most rows have their minimum several times (ties -> lowest index).
  distances = rng.integers(0, 4, size=(512, 300)).astype(np.float32)  # [B, K]
  distances[0] = 1.0  # the whole row ties
  distances[1, :4] = [0.0, -0.0, 0.0, 1.0]  # signed zeros are equal for argmin
  distances[2, :4] = [-0.0, 0.0, 0.0, 1.0]
  distances[3, :4] = [np.inf, np.nan, 0.0, np.nan]  # argmin takes the first NaN
  distances[4, :4] = [-np.inf, 1.0, -np.nan, 0.0]  # NaN beats -inf, whatever its sign
  distances[5] = np.inf
  distances[6, 7] = -np.inf
  expected = np.argmin(distances, axis=1)
  np.testing.assert_array_equal(expected[:5], [0, 0, 0, 1, 2])
  for fn in (quantizer._argmin_by_top_k, jax.jit(quantizer._argmin_by_top_k)):
    codes = np.asarray(fn(jnp.asarray(distances)))
    assert codes.dtype == np.int32
    np.testing.assert_array_equal(codes, expected)
  np.testing.assert_array_equal(np.asarray(jnp.argmin(jnp.asarray(distances), axis=1)), expected)


def test_nearest_codes_equal_argmin_with_duplicate_codes():
  rng = np.random.default_rng(8)
  # Small integers keep every distance exact, so duplicated codes tie exactly.
  points = rng.integers(-3, 4, size=(1000, 8)).astype(np.float32)  # [B, Z]
  codebook = rng.integers(-3, 4, size=(64, 8)).astype(np.float32)  # [K, Z]
  codebook[:8] = points[:8]  # some exact hits (distance 0)
  codebook[32:] = codebook[:32]  # every code has a later twin
  exact = ((points[:, None, :] - codebook[None]) ** 2).sum(-1)  # [B, K]
  expected = np.argmin(exact, axis=1)
  assert np.all(expected < 32)  # twins never win
  for fn in (quantizer.nearest_codes, jax.jit(quantizer.nearest_codes)):
    np.testing.assert_array_equal(
      np.asarray(fn(jnp.asarray(points), jnp.asarray(codebook))), expected
    )
  # Random float inputs: the same codes as the plain argmin over the same distances.
  points = jnp.asarray(rng.normal(size=(4096, 32)), jnp.float32)
  codebook = jnp.asarray(rng.normal(size=(2048, 32)), jnp.float32)
  by_argmin = jax.jit(lambda p, c: jnp.argmin(quantizer.squared_distances(p, c), axis=-1))
  np.testing.assert_array_equal(
    np.asarray(jax.jit(quantizer.nearest_codes)(points, codebook)),
    np.asarray(by_argmin(points, codebook)),
  )


def test_forced_level1_code_always_equals_known_category():
  rng = np.random.default_rng(1)
  latents = jnp.asarray(rng.normal(size=(64, 4)), jnp.float32)
  codebooks = [jnp.asarray(rng.normal(size=(10, 4)), jnp.float32) for _ in range(3)]
  category = rng.integers(-1, 10, size=64).astype(np.int32)
  result = quantizer.residual_quantize(latents, codebooks, jnp.asarray(category))
  codes = np.asarray(result.codes)
  known = category >= 0
  np.testing.assert_array_equal(codes[known, 0], category[known])
  nearest = np.asarray(quantizer.nearest_codes(latents, codebooks[0]))
  np.testing.assert_array_equal(codes[~known, 0], nearest[~known])
  # The level-2 residual is taken from the forced code, not the nearest one.
  np.testing.assert_allclose(
    np.asarray(result.residuals[1]),
    np.asarray(latents) - np.asarray(codebooks[0])[codes[:, 0]],
    atol=1e-5,
  )


def test_ema_update_equals_formula_on_hand_example():
  state = {
    "embeddings": jnp.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]),
    "ema_count": jnp.array([2.0, 1.0, 0.5]),
    "ema_sum": jnp.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
  }
  residuals = jnp.array([[3.0, 1.0], [1.0, 1.0], [0.0, 4.0]])
  codes = jnp.array([0, 0, 1])
  decay, eps = 0.9, 0.01
  new = quantizer.ema_update(state, residuals, codes, decay, eps)
  count = np.array([0.9 * 2 + 0.1 * 2, 0.9 * 1 + 0.1 * 1, 0.9 * 0.5])
  total = count.sum()
  sums = np.array([[0.9 * 2 + 0.1 * 4, 0.1 * 2], [0.0, 0.9 + 0.1 * 4], [0.9, 0.9]])
  smoothed = (count + eps) / (total + 3 * eps) * total
  np.testing.assert_allclose(np.asarray(new["ema_count"]), count, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(new["ema_sum"]), sums, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(new["embeddings"]), sums / smoothed[:, None], rtol=1e-6)


def test_dead_code_is_restarted_from_batch_residuals():
  state = quantizer.new_codebook_state(
    jnp.array([[0.0, 0.0], [5.0, 5.0], [9.0, 9.0]]), jnp.array([4.0, 0.01, 3.0])
  )
  residuals = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
  new, restarted = quantizer.restart_dead_codes(
    state, residuals, jax.random.PRNGKey(0), threshold=0.5, reset_count=2.0
  )
  assert float(restarted) == 1.0
  embeddings = np.asarray(new["embeddings"])
  # Live codes untouched; the dead one now equals one of the batch residuals.
  np.testing.assert_array_equal(embeddings[[0, 2]], [[0.0, 0.0], [9.0, 9.0]])
  assert any(np.array_equal(embeddings[1], row) for row in np.asarray(residuals))
  assert float(new["ema_count"][1]) == 2.0
  np.testing.assert_allclose(np.asarray(new["ema_sum"][1]), 2.0 * embeddings[1])
  # The reset statistics reproduce the new vector on the next EMA step with no use.
  after = quantizer.ema_update(new, residuals, jnp.array([0, 0, 2, 2]), 0.99, 0.0)
  np.testing.assert_allclose(np.asarray(after["embeddings"][1]), embeddings[1], rtol=1e-5)


def test_usage_and_perplexity_of_a_batch():
  usage, perplexity = quantizer.usage_and_perplexity(jnp.array([0, 0, 1, 1]), 4)
  assert float(usage) == pytest.approx(0.5)
  assert float(perplexity) == pytest.approx(2.0, rel=1e-5)


def test_kmeans_recovers_separated_clusters():
  rng = np.random.default_rng(2)
  centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], np.float32)
  labels = rng.integers(0, 3, 300)
  points = centres[labels] + 0.1 * rng.normal(size=(300, 2)).astype(np.float32)
  centroids, codes = kmeans.kmeans(
    jnp.asarray(points), jax.random.PRNGKey(3), num_clusters=3, num_iters=10
  )
  codes = np.asarray(codes)
  # Each found cluster is one true cluster (a permutation of labels).
  for code in range(3):
    assert len(set(labels[codes == code])) == 1
  np.testing.assert_allclose(np.sort(np.asarray(centroids)[:, 0]), np.sort(centres[:, 0]), atol=0.1)


def test_residual_codebooks_force_category_means():
  rng = np.random.default_rng(4)
  points = rng.normal(size=(40, 3)).astype(np.float32)
  category = np.repeat(np.arange(4), 10).astype(np.int32)
  category[:5] = -1
  codebooks, codes = kmeans.fit_residual_codebooks(
    jnp.asarray(points), jnp.asarray(category), (6, 4), jax.random.PRNGKey(0), 5
  )
  codes = np.asarray(codes)
  np.testing.assert_array_equal(codes[5:, 0], category[5:])
  for cat in range(4):
    np.testing.assert_allclose(
      np.asarray(codebooks[0][cat]), points[category == cat].mean(0), atol=1e-5
    )


def _config(**overrides):
  base = dict(
    feature_dim=4, latent_dim=2, encoder_hidden=(8,), decoder_hidden=(8,), codebook_sizes=(5, 3)
  )
  base.update(overrides)
  return rqvae.TokenizerConfig(**base)


def test_category_outside_level1_codebook_is_a_clear_error():
  features = np.zeros((3, 4), np.float32)
  with pytest.raises(ValueError, match=r"row 2: field 'category_id': 5 does not fit"):
    rqvae.check_tokenizer_inputs(_config(), features, np.array([0, -1, 5]))
  # Without forcing, large category ids are fine (they are not codes).
  rqvae.check_tokenizer_inputs(_config(force_category=False), features, np.array([0, -1, 5]))
  with pytest.raises(ValueError, match="row 1: field 'category_id': -2"):
    rqvae.check_tokenizer_inputs(_config(), features, np.array([0, -2, 1]))


def test_feature_guards():
  with pytest.raises(ValueError, match=r"expected \[rows, 4\]"):
    rqvae.check_tokenizer_inputs(_config(), np.zeros((3, 5), np.float32))
  bad = np.zeros((3, 4), np.float32)
  bad[1, 2] = np.nan
  with pytest.raises(ValueError, match="row 1 holds NaN or Inf"):
    rqvae.check_tokenizer_inputs(_config(), bad)
  queries = np.zeros((3, 4), np.float32)
  queries[0, 0] = np.inf
  # A bad query row only matters when that row has a query.
  rqvae.check_tokenizer_inputs(
    _config(), np.zeros((3, 4)), None, queries, np.array([False, True, True])
  )
  with pytest.raises(ValueError, match="'query_features': row 0"):
    rqvae.check_tokenizer_inputs(_config(), np.zeros((3, 4)), None, queries, np.ones(3, bool))


def test_config_rejects_unknown_choices():
  with pytest.raises(ValueError, match="method"):
    _config(method="vq")
  with pytest.raises(ValueError, match="suffix"):
    _config(suffix="random")
