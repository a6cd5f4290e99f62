"""Tokenizer gin configs and the RQ-KMeans baseline."""

import gin
import numpy as np
import pytest

from gr_jax.sid import assign, contrastive_encoder, diagnostics, rqvae

FEATURE_DIM = 16


def _clustered(num_items, seed):
  """Items around 8 well separated category centres."""
  rng = np.random.default_rng(seed)
  centres = 5.0 * rng.normal(size=(8, FEATURE_DIM))
  category = rng.integers(0, 8, num_items)
  features = centres[category] + rng.normal(size=(num_items, FEATURE_DIM))
  return features.astype(np.float32), category.astype(np.int32)


def test_rq_kmeans_baseline_assigns_codes():
  features, category = _clustered(512, seed=2)
  config = rqvae.TokenizerConfig(
    feature_dim=FEATURE_DIM,
    latent_dim=FEATURE_DIM,
    codebook_sizes=(8, 8),
    method="rq_kmeans",
    force_category=False,
    nce_weight=0.0,
    kmeans_iters=5,
  )
  variables = assign.fit_rq_kmeans(config, features, None, seed=0)
  codes = assign.assign_codes(variables, config, features, None)
  usage = diagnostics.code_usage(codes, config.codebook_sizes)
  assert usage["usage_l0"] == 1.0 and usage["usage_l1"] >= 0.75
  # Categories are far apart: level 1 should follow them closely.
  purity = np.mean(
    [np.bincount(category[codes[:, 0] == c]).max() / np.sum(codes[:, 0] == c) for c in range(8)]
  )
  assert purity > 0.9
  with pytest.raises(ValueError, match="rq_kmeans"):
    rqvae.TokenizerTask(config)


@pytest.mark.parametrize(
  "name, force_category, nce_weight, suffix, method",
  [
    ("cq_sid", True, 0.001, "cluster_split", "rqvae"),
    ("cq_sid_wo_cate", False, 0.001, "cluster_split", "rqvae"),
    ("cq_sid_wo_qi", True, 0.0, "cluster_split", "rqvae"),
    ("rqvae", False, 0.0, "cluster_split", "rqvae"),
    ("rqvae_unique", False, 0.0, "unique", "rqvae"),
    ("rq_kmeans", False, 0.0, "cluster_split", "rq_kmeans"),
  ],
)
def test_gin_configs(name, force_category, nce_weight, suffix, method):
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings(
      [f"gin_configs/sid/{name}.gin"], ["CODEBOOK_SIZES = (64, 64, 64)"]
    )
    config = rqvae.TokenizerConfig()
  finally:
    gin.clear_config()
  assert config.force_category == force_category
  assert config.nce_weight == nce_weight
  assert config.suffix == suffix and config.method == method
  assert config.codebook_sizes == (64, 64, 64)
  assert config.split_max_items == 50 and config.split_max_groups == 100
  if method == "rqvae":
    assert config.ema_decay == 0.99 and config.commitment_weight == 1.0


def test_two_tower_gin_config():
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings(["gin_configs/sid/two_tower.gin"], ["EMBED_DIM = 32"])
    config = contrastive_encoder.TwoTowerConfig()
  finally:
    gin.clear_config()
  assert config.embed_dim == 32  # feature_dim comes from the data (training.py)
  assert config.temperature == 0.1 and config.category_weight == 0.1
