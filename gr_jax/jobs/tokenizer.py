"""Stage A job: train an item tokenizer (CQ-SID, RQ-VAE, ablations, RQ-KMeans) and write
the SID artefacts to WORKDIR/sid/<name>/.

The RQ-VAE family trains through the generic sharded trainer (data-parallel over
items, codebooks replicated, checkpointed, resumable); RQ-KMeans has no training
loop. Either way the catalog is then assigned, split (Algorithm 1) and written
atomically with its diagnostics.
"""

from __future__ import annotations

import dataclasses
import os
import time

import gin
import jax
import numpy as np
from absl import logging

from gr_jax import io_utils
from gr_jax.data import schema
from gr_jax.jobs import data as data_job
from gr_jax.jobs import paths
from gr_jax.sid import assign, diagnostics, kmeans, rqvae, tables
from gr_jax.train import trainer


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


@gin.configurable
def train_tokenizer(
  workdir: str,
  name: str = gin.REQUIRED,
  batch_size: int = 512,
  assign_batch_size: int = 8192,
  seed: int = 0,
):
  """Trains tokenizer `name` (configured by TokenizerConfig) and writes WORKDIR/sid/<name>.

  Args:
    workdir: the run's work directory (reads WORKDIR/data).
    name: artefact name, e.g. 'cq_sid', 'rqvae'.
    batch_size: items per training step (global, sharded over the data axes).
    assign_batch_size: items per device call when assigning the catalog.
    seed: batch order seed.

  Returns:
    The diagnostics dict.
  """
  out_dir = paths.sid_dir(workdir, name)
  if os.path.exists(os.path.join(out_dir, "diagnostics.json")):
    logging.info(
      "tokenizer %s: artefacts exist in %s; skipped (delete them to retrain)", name, out_dir
    )
    return io_utils.read_json(os.path.join(out_dir, "diagnostics.json"))
  catalog, logs = data_job.load_data(workdir)
  if catalog.features is None or logs.query_features is None:
    raise ValueError(
      f"{paths.data_dir(workdir)}: the tokenizer needs item and query features; "
      "build the dataset with features"
    )
  config = rqvae.TokenizerConfig()
  if config.feature_dim != catalog.features.shape[1]:
    logging.info("tokenizer: feature_dim %d from the data", catalog.features.shape[1])
    replace = {"feature_dim": int(catalog.features.shape[1])}
    if config.method == "rq_kmeans":
      replace["latent_dim"] = replace["feature_dim"]
    config = dataclasses.replace(config, **replace)
  category_id = catalog.category_id if config.force_category else None
  rqvae.check_tokenizer_inputs(
    config, catalog.features, category_id, source=f"{paths.data_dir(workdir)}/catalog.npz"
  )
  start = time.perf_counter()
  if config.method == "rq_kmeans":
    with jax.transfer_guard("allow"):
      variables = {
        "codebook": kmeans.rq_kmeans_codebooks(
          catalog.features, category_id, config.codebook_sizes, seed, config.kmeans_iters
        )
      }
    train_metrics = {}
  else:
    runner = trainer.Trainer(
      rqvae.TokenizerTask(config),
      paths.sid_train_dir(workdir, name),
      config=trainer.TrainerConfig(),
    )
    result = runner.fit(tokenizer_batches(catalog, logs, batch_size, seed))
    runner.close()
    if result.preempted:
      return {"preempted": True}
    variables = {"params": result.state.params, **result.state.model_state}
    variables = jax.tree.map(np.asarray, jax.device_get(variables))
    train_metrics = result.last_metrics
  train_seconds = time.perf_counter() - start
  start = time.perf_counter()
  # Assignment and diagnostics feed host arrays to jitted functions on purpose.
  with jax.transfer_guard("allow"):
    codes, sid_tables = assign.build_catalog_sids(
      variables, config, catalog.features, category_id, assign_batch_size
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
  diag.update(
    name=name,
    train_seconds=train_seconds,
    assign_seconds=assign_seconds,
    assign_items_per_s=catalog.num_items / max(assign_seconds, 1e-9),
    final_train_metrics=train_metrics,
  )
  tables.write_sid_artefacts(out_dir, sid_tables, diag, variables, config)
  logging.info("tokenizer %s: %s", name, {k: v for k, v in diag.items() if not isinstance(v, dict)})
  return diag
