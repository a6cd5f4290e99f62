"""Training an item tokenizer on a dataset: batches, the two-step variant's encoder,
the codebooks (RQ-VAE family through the sharded trainer, or RQ-KMeans), and the
catalog's assignment with its diagnostics.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
from absl import logging

from gr_jax import errors
from gr_jax.data import schema
from gr_jax.sid import assign, contrastive_encoder, diagnostics, kmeans, rqvae
from gr_jax.train import trainer

# Input encoder (`train_tokenizer.encoder`):
#   'joint'     the paper body's form: the tokenizer reads the text features and the
#               query-item InfoNCE acts on the RQ-VAE encoder's own latents.
#   'two_step'  first train the two-tower contrastive encoder
#               (`contrastive_encoder.TwoTowerTask`, query-item InfoNCE + category
#               SupCon) on the same batches, then run the tokenizer on its item / query
#               embeddings. The encoder is stored with the SID artefacts, so
#               incremental assignment maps new items' raw features the same way.
ENCODERS = ("joint", "two_step")


def check_encoder(encoder: str) -> None:
  """Raises errors.UserError unless `encoder` is one of ENCODERS."""
  if encoder not in ENCODERS:
    raise errors.UserError(f"train_tokenizer.encoder must be one of {ENCODERS}, got '{encoder}'")


def check_features(catalog: schema.Catalog, logs: schema.SearchLogs, data_dir: str) -> None:
  """Raises ValueError when the dataset has no item or query features to tokenize from."""
  if catalog.features is None or logs.query_features is None:
    raise ValueError(
      f"{data_dir}: the tokenizer needs item and query features; build the dataset with features"
    )


def item_query_pairs(catalog: schema.Catalog, logs: schema.SearchLogs, split: str = "train"):
  """(item, request) pairs where the request's query led to a click or purchase of the item.

  Returns:
    (pair_request [P] int64 sorted by item, item_start [N+1] int64 CSR offsets).
  """
  rows = logs.split == schema.SPLITS.index(split)
  engaged = np.concatenate([logs.clicked[rows], logs.purchased[rows]], axis=1)  # [R', 2M]
  request = np.repeat(np.flatnonzero(rows), engaged.shape[1])
  item = engaged.reshape(-1)
  keep = item >= 0
  item, request = item[keep], request[keep]
  pairs = np.unique(np.stack([item, request], 1), axis=0)  # de-duplicate click + purchase
  item_start = np.searchsorted(pairs[:, 0], np.arange(catalog.num_items + 1))
  return pairs[:, 1], item_start


def tokenizer_batches(catalog: schema.Catalog, logs: schema.SearchLogs, batch_size: int, seed: int):
  """Step-indexed batches of items, each with one engaged query when it has any."""
  pair_request, item_start = item_query_pairs(catalog, logs)
  query_counts = np.diff(item_start)
  features = np.asarray(catalog.features, np.float32)
  query_features = np.asarray(logs.query_features, np.float32)
  category_id = np.asarray(catalog.category_id, np.int32)
  num_items = catalog.num_items
  batch_size = min(batch_size, num_items)

  def batch_fn(step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, step])
    items = rng.choice(num_items, batch_size, replace=False)  # [B]
    counts = query_counts[items]
    has_query = counts > 0
    pick = item_start[items] + np.floor(rng.random(batch_size) * np.maximum(counts, 1))
    request = pair_request[np.minimum(pick.astype(np.int64), max(len(pair_request) - 1, 0))]
    return {
      "features": features[items],
      "category_id": category_id[items],
      "query_features": np.where(has_query[:, None], query_features[request], 0.0),
      "has_query": has_query,
    }

  return batch_fn


def heldout_pairs(catalog, logs, limit: int = 4096, seed: int = 0):
  """Test-split (query features, clicked item features) pairs for the retrieval diagnostic."""
  pair_request, item_start = item_query_pairs(catalog, logs, split="test")
  item = np.repeat(np.arange(catalog.num_items), np.diff(item_start))
  order = np.random.default_rng(seed).permutation(len(item))[:limit]
  return logs.query_features[pair_request[order]], catalog.features[item[order]]


def train_two_tower(
  train_dir: str,
  catalog,
  logs,
  batch_size: int,
  seed: int,
  config: trainer.TrainerConfig,
  mesh,
  rules,
):
  """Step 1 of the two-step variant: the two-tower encoder, through the sharded trainer.

  Returns:
    ((variables, TwoTowerConfig), item embeddings [N, D], query embeddings [R, D]), or
    None when preempted (the checkpoint resumes it).
  """
  encoder_config = contrastive_encoder.TwoTowerConfig(feature_dim=int(catalog.features.shape[1]))
  runner = trainer.Trainer(
    contrastive_encoder.TwoTowerTask(encoder_config),
    train_dir,
    config=config,
    mesh=mesh,
    rules=rules,
  )
  result = runner.fit(tokenizer_batches(catalog, logs, batch_size, seed))
  runner.close()
  if result.preempted:
    return None
  variables = jax.tree.map(np.asarray, jax.device_get({"params": result.state.params}))
  logging.info("two-tower encoder: %s", result.last_metrics)
  with jax.transfer_guard("allow"):
    items = contrastive_encoder.embed(variables, encoder_config, catalog.features, tower="item")
    queries = contrastive_encoder.embed(
      variables, encoder_config, logs.query_features, tower="query"
    )
  return (variables, encoder_config), items, queries


def config_for_features(config: rqvae.TokenizerConfig, feature_dim: int) -> rqvae.TokenizerConfig:
  """The tokenizer config with its input width taken from the data."""
  if config.feature_dim == feature_dim:
    return config
  logging.info("tokenizer: feature_dim %d from the data", feature_dim)
  replace = {"feature_dim": int(feature_dim)}
  if config.method == "rq_kmeans":
    replace["latent_dim"] = replace["feature_dim"]
  return dataclasses.replace(config, **replace)


def fit_codebooks(
  config: rqvae.TokenizerConfig,
  catalog,
  logs,
  category_id,
  *,
  train_dir: str,
  trainer_config: trainer.TrainerConfig,
  mesh,
  rules,
  batch_size: int,
  seed: int,
):
  """Trains the tokenizer (or fits RQ-KMeans) -> (host variables, final train metrics).

  Returns:
    (variables, metrics), or None when preempted (the checkpoint resumes it).
  """
  if config.method == "rq_kmeans":
    with jax.transfer_guard("allow"):
      codebook = kmeans.rq_kmeans_codebooks(
        catalog.features, category_id, config.codebook_sizes, seed, config.kmeans_iters
      )
    return {"codebook": codebook}, {}
  runner = trainer.Trainer(
    rqvae.TokenizerTask(config), train_dir, config=trainer_config, mesh=mesh, rules=rules
  )
  result = runner.fit(tokenizer_batches(catalog, logs, batch_size, seed))
  runner.close()
  if result.preempted:
    return None
  variables = {"params": result.state.params, **result.state.model_state}
  return jax.tree.map(np.asarray, jax.device_get(variables)), result.last_metrics


def assign_catalog(variables, config, catalog, logs, category_id, batch_size: int):
  """SIDs of the whole catalog and their diagnostics.

  Returns:
    (SidTables, diagnostics dict, seconds the assignment took).
  """
  start = time.perf_counter()
  # Assignment and diagnostics feed host arrays to jitted functions on purpose.
  with jax.transfer_guard("allow"):
    codes, sid_tables = assign.build_catalog_sids(
      variables, config, catalog.features, category_id, batch_size
    )
    assign_seconds = time.perf_counter() - start
    query_features, item_features = heldout_pairs(catalog, logs)
    diag = diagnostics.compute_diagnostics(
      variables,
      config,
      catalog.features,
      category_id,
      codes,
      sid_tables,
      heldout_query_features=query_features,
      heldout_item_features=item_features,
    )
  return sid_tables, diag, assign_seconds
