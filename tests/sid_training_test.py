"""End to end on synthetic clustered items: train, assign, split, re-assign, diagnose."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gr_jax.sid import assign, diagnostics, rqvae, tables

NUM_ITEMS = 2048
FEATURE_DIM = 16
NUM_CATEGORIES = 8
BATCH = 256
STEPS = 300


def synthetic_items(num_items, seed):
  """Items = category centre + sub-cluster offset + noise; queries = noisy item copies."""
  rng = np.random.default_rng(seed)
  centres = 3.0 * np.random.default_rng(100).normal(size=(NUM_CATEGORIES, FEATURE_DIM))
  offsets = np.random.default_rng(101).normal(size=(NUM_CATEGORIES, 16, FEATURE_DIM))
  category = rng.integers(0, NUM_CATEGORIES, num_items)
  sub = rng.integers(0, 16, num_items)
  features = (
    centres[category] + offsets[category, sub] + 0.3 * rng.normal(size=(num_items, FEATURE_DIM))
  )
  queries = features + 0.3 * rng.normal(size=features.shape)
  return {
    "features": features.astype(np.float32),
    "category_id": category.astype(np.int32),
    "query_features": queries.astype(np.float32),
    "has_query": rng.random(num_items) < 0.7,
  }


CONFIG = rqvae.TokenizerConfig(
  feature_dim=FEATURE_DIM,
  latent_dim=8,
  encoder_hidden=(64,),
  decoder_hidden=(64,),
  codebook_sizes=(NUM_CATEGORIES, 16, 16),
  split_max_items=8,
  split_max_groups=100,
  kmeans_iters=10,
)


def _batch(data, step):
  start = (step * BATCH) % NUM_ITEMS
  return {key: value[start : start + BATCH] for key, value in data.items()}


@pytest.fixture(scope="module")
def trained():
  data = synthetic_items(NUM_ITEMS, seed=0)
  task = rqvae.TokenizerTask(CONFIG)
  boxed_variables = task.init(jax.random.PRNGKey(0), _batch(data, 0))
  variables = nn.meta.unbox(boxed_variables)
  optimizer = optax.adam(3e-3)
  opt_state = optimizer.init(variables["params"])

  @jax.jit
  def train_step(variables, opt_state, batch, rng):
    def loss_fn(params):
      loss, (metrics, collections) = task.loss({**variables, "params": params}, batch, rng)
      return loss, (metrics, collections)

    grads, (metrics, collections) = jax.grad(loss_fn, has_aux=True)(variables["params"])
    updates, opt_state = optimizer.update(grads, opt_state, variables["params"])
    return (
      {"params": optax.apply_updates(variables["params"], updates), **collections},
      opt_state,
      metrics,
    )

  history = []
  for step in range(STEPS):
    variables, opt_state, metrics = train_step(
      variables, opt_state, _batch(data, step), jax.random.PRNGKey(step)
    )
    history.append({k: float(v) for k, v in metrics.items()})
  return data, task, variables, history, boxed_variables


def test_training_lowers_recon_and_uses_codebooks(trained):
  data, _, variables, history, _ = trained
  assert all(h["finite"] == 1.0 for h in history)
  assert history[-1]["recon"] < 0.2 * history[0]["recon"]
  codes = assign.assign_codes(variables, CONFIG, data["features"], data["category_id"])
  usage = diagnostics.code_usage(codes, CONFIG.codebook_sizes)
  assert usage["usage_l1"] >= 0.9 and usage["usage_l2"] >= 0.9, usage
  assert usage["perplexity_l1"] > 8 and usage["perplexity_l2"] > 8, usage
  np.testing.assert_array_equal(codes[:, 0], data["category_id"])


def test_reassignment_reproduces_sids_and_new_items_join_existing(trained):
  data, _, variables, _, _ = trained
  codes, sid_tables = assign.build_catalog_sids(
    variables, CONFIG, data["features"], data["category_id"], batch_size=512
  )
  assert sid_tables.item_sid.shape == (NUM_ITEMS, 4)
  sizes = np.bincount(np.unique(sid_tables.item_sid, axis=0, return_inverse=True)[1].reshape(-1))
  assert sizes.max() <= CONFIG.split_max_items

  again, stats = assign.assign_new_items(
    variables, CONFIG, sid_tables, data["features"], data["category_id"], batch_size=512
  )
  np.testing.assert_array_equal(again[:, :3], codes)
  assert stats["share_own_codes_existed"] == 1.0
  groups_per_tuple = {}
  for sid in sid_tables.sids:
    groups_per_tuple.setdefault(tuple(sid[:3]), set()).add(int(sid[3]))
  unsplit = np.array([len(groups_per_tuple[tuple(c)]) == 1 for c in codes])
  np.testing.assert_array_equal(again[unsplit], sid_tables.item_sid[unsplit])
  # Split clusters: a deterministic existing group of the right cluster.
  assert np.all(tables.sid_index(sid_tables, again) >= 0)

  new = synthetic_items(300, seed=7)
  new["category_id"][:20] = -1
  new_sids, _ = assign.assign_new_items(
    variables, CONFIG, sid_tables, new["features"], new["category_id"]
  )
  assert np.all(tables.sid_index(sid_tables, new_sids) >= 0)
  known = new["category_id"] >= 0
  np.testing.assert_array_equal(new_sids[known, 0], new["category_id"][known])
  extended = tables.extend_sid_tables(sid_tables, new_sids)
  np.testing.assert_array_equal(extended.item_sid[:NUM_ITEMS], sid_tables.item_sid)
  assert extended.num_sids == sid_tables.num_sids


def test_diagnostics_and_retrieval(trained):
  data, _, variables, _, _ = trained
  codes, sid_tables = assign.build_catalog_sids(
    variables, CONFIG, data["features"], data["category_id"]
  )
  held_out = synthetic_items(256, seed=9)
  result = diagnostics.compute_diagnostics(
    variables,
    CONFIG,
    data["features"],
    data["category_id"],
    codes,
    sid_tables,
    held_out["query_features"],
    held_out["features"],
    retrieval_batch_size=128,
  )
  assert result["share_level1_equals_category"] == 1.0
  assert result["num_items"] == NUM_ITEMS
  assert 0 < result["recon_mse"] < 1.0
  # Queries are close copies of their items: far above chance (1/128, 10/128).
  assert result["retrieval_top1"] > 0.3 and result["retrieval_top10"] > 0.8, result


def test_sharded_loss_equals_unsharded_loss(trained):
  data, task, variables, _, _ = trained
  batch = {k: jnp.asarray(v) for k, v in _batch(data, 3).items()}
  rng = jax.random.PRNGKey(5)
  loss, (metrics, collections) = task.loss(variables, batch, rng)
  mesh = Mesh(np.array(jax.devices()).reshape(-1, 1, 1), ("data", "fsdp", "model"))
  batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
  replicated = NamedSharding(mesh, P())
  sharded_batch = jax.device_put(batch, batch_sharding)
  sharded_loss, (sharded_metrics, sharded_collections) = jax.jit(
    task.loss, in_shardings=(replicated, batch_sharding, replicated)
  )(variables, sharded_batch, rng)
  assert float(sharded_loss) == pytest.approx(float(loss), rel=1e-4)
  for key in ("recon", "nce", "usage_l1", "perplexity_l2"):
    assert float(sharded_metrics[key]) == pytest.approx(float(metrics[key]), rel=1e-4)
  np.testing.assert_allclose(
    np.asarray(sharded_collections["codebook"]["level_2"]["embeddings"]),
    np.asarray(collections["codebook"]["level_2"]["embeddings"]),
    rtol=1e-4,
    atol=1e-5,
  )


def test_garbage_in_rows_without_query_does_not_reach_gradients(trained):
  data, task, variables, _, _ = trained
  batch = {k: jnp.asarray(v) for k, v in _batch(data, 1).items()}
  batch["has_query"] = batch["has_query"].at[0].set(False)
  batch["query_features"] = batch["query_features"].at[0].set(jnp.nan)
  grads = jax.grad(
    lambda p: task.loss({**variables, "params": p}, batch, jax.random.PRNGKey(0))[0]
  )(variables["params"])
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_nan_batch_is_flagged_by_the_finite_metric(trained):
  data, task, variables, _, _ = trained
  batch = {k: jnp.asarray(v) for k, v in _batch(data, 0).items()}
  batch["features"] = batch["features"].at[0, 0].set(jnp.nan)
  _, (metrics, _) = task.loss(variables, batch, jax.random.PRNGKey(0))
  assert float(metrics["finite"]) == 0.0


def test_init_params_carry_logical_axes(trained):
  variables = trained[4]
  specs = nn.get_partition_spec(variables["params"])
  kernel = specs["encoder"]["hidden_0"]["kernel"]
  assert tuple(kernel) == ("embed", "mlp")
  assert tuple(specs["encoder"]["output"]["kernel"]) == ("mlp", "latent")
  assert variables["codebook"]["level_1"]["embeddings"].shape == (16, 8)


def test_new_items_descend_the_trie_of_existing_sids(trained):
  data, _, variables, _, _ = trained
  # Tables from a few items only, so many items' own code tuples do not exist in them.
  subset = slice(0, 200)
  _, small_tables = assign.build_catalog_sids(
    variables, CONFIG, data["features"][subset], data["category_id"][subset]
  )
  latents, own_codes = assign.encode_and_assign(
    variables, CONFIG, data["features"], data["category_id"]
  )
  sids, stats = assign.assign_new_items(
    variables, CONFIG, small_tables, data["features"], data["category_id"]
  )
  assert np.all(tables.sid_index(small_tables, sids) >= 0)
  existing = {tuple(s[:3]) for s in small_tables.sids}
  own_exists = np.array([tuple(c) in existing for c in own_codes])
  assert 0 < own_exists.mean() < 1
  assert stats["share_own_codes_existed"] == pytest.approx(own_exists.mean())
  np.testing.assert_array_equal(sids[own_exists, :3], own_codes[own_exists])
  # Oracle, item by item: each level picks the nearest code among existing children.
  codebooks = [np.asarray(c) for c in rqvae.codebooks_of(variables, CONFIG)]
  for item in np.flatnonzero(~own_exists)[:40]:
    residual = latents[item].astype(np.float64)
    prefix = ()
    for level in range(3):
      children = sorted({s[level] for s in existing if s[:level] == prefix})
      if level == 0 and data["category_id"][item] in children:
        choice = int(data["category_id"][item])
      else:
        distances = [np.sum((residual - codebooks[level][c]) ** 2) for c in children]
        choice = int(children[int(np.argmin(distances))])
      assert sids[item, level] == choice
      residual = residual - codebooks[level][choice]
      prefix = prefix + (choice,)
