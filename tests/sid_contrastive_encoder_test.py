"""Two-tower contrastive encoder (the two-step variant's feature source)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gr_jax.sid import contrastive_encoder, rqvae

FEATURE_DIM = 16
CONFIG = contrastive_encoder.TwoTowerConfig(
  feature_dim=FEATURE_DIM, embed_dim=8, hidden=(32,), category_weight=0.1
)


def _pairs(num, seed):
  """Queries and items are two different linear views of the same latent intent."""
  rng = np.random.default_rng(seed)
  views = np.random.default_rng(50).normal(size=(2, 6, FEATURE_DIM))
  centres = 2.0 * np.random.default_rng(51).normal(size=(4, 6))
  category = rng.integers(0, 4, num)
  intent = centres[category] + rng.normal(size=(num, 6))
  return {
    "features": (intent @ views[0] + 0.05 * rng.normal(size=(num, FEATURE_DIM))).astype(np.float32),
    "query_features": (intent @ views[1]).astype(np.float32),
    "category_id": category.astype(np.int32),
    "has_query": rng.random(num) < 0.9,
  }


@pytest.fixture(scope="module")
def trained():
  data = _pairs(1024, seed=0)
  task = contrastive_encoder.TwoTowerTask(CONFIG)
  variables = nn.meta.unbox(task.init(jax.random.PRNGKey(0), data))
  optimizer = optax.adam(3e-3)
  opt_state = optimizer.init(variables["params"])

  @jax.jit
  def step(params, opt_state, batch):
    grads, metrics = jax.grad(
      lambda p: (lambda out: (out[0], out[1][0]))(task.loss({"params": p}, batch, None)),
      has_aux=True,
    )(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  params, history = variables["params"], []
  for index in range(150):
    start = (index * 128) % 1024
    batch = {k: v[start : start + 128] for k, v in data.items()}
    params, opt_state, metrics = step(params, opt_state, batch)
    history.append({k: float(v) for k, v in metrics.items()})
  return task, {"params": params}, history


def test_training_matches_queries_to_items_and_loss_is_the_sum(trained):
  task, variables, history = trained
  assert history[-1]["nce"] < 0.5 * history[0]["nce"]
  held_out = {k: jnp.asarray(v) for k, v in _pairs(128, seed=3).items()}
  loss, (metrics, collections) = task.loss(variables, held_out, None)
  assert collections == {}
  assert float(metrics["retrieval_top1"]) > 0.5  # chance is 1/115
  expected = float(metrics["nce"]) + CONFIG.category_weight * float(metrics["category_contrastive"])
  assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_item_embeddings_feed_the_rqvae(trained):
  _, variables, _ = trained
  data = _pairs(200, seed=5)
  items = contrastive_encoder.embed(variables, CONFIG, data["features"], "item", batch_size=64)
  same = contrastive_encoder.embed(variables, CONFIG, data["features"], "item", batch_size=200)
  np.testing.assert_allclose(items, same, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1.0, atol=1e-5)
  queries = contrastive_encoder.embed(variables, CONFIG, data["query_features"], "query")
  tokenizer = rqvae.TokenizerTask(
    rqvae.TokenizerConfig(
      feature_dim=CONFIG.embed_dim,
      latent_dim=4,
      encoder_hidden=(16,),
      decoder_hidden=(16,),
      codebook_sizes=(4, 8),
      kmeans_iters=3,
    )
  )
  batch = {
    "features": items,
    "query_features": queries,
    "category_id": data["category_id"],
    "has_query": data["has_query"],
  }
  tokenizer_variables = tokenizer.init(jax.random.PRNGKey(1), batch)
  codebook = np.asarray(tokenizer_variables["codebook"]["level_1"]["embeddings"])
  assert codebook.shape == (8, 4) and np.all(np.isfinite(codebook))


def test_embed_guards(trained):
  _, variables, _ = trained
  with pytest.raises(ValueError, match="tower"):
    contrastive_encoder.embed(variables, CONFIG, np.zeros((2, FEATURE_DIM)), "user")
  with pytest.raises(ValueError, match=r"expected \[N, 16\]"):
    contrastive_encoder.embed(variables, CONFIG, np.zeros((2, 3)))
  bad = np.zeros((3, FEATURE_DIM))
  bad[2, 0] = np.inf
  with pytest.raises(ValueError, match="row 2"):
    contrastive_encoder.embed(variables, CONFIG, bad)
