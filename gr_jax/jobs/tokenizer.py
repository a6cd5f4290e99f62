"""Stage A job: train an item tokenizer (CQ-SID, RQ-VAE, ablations, RQ-KMeans) and write
the SID artefacts to WORKDIR/sid/<name>/.

The RQ-VAE family trains through the generic sharded trainer (data-parallel over
items, codebooks replicated, checkpointed, resumable); RQ-KMeans has no training
loop. Either way the catalog is then assigned, split (Algorithm 1) and written
atomically with its diagnostics.

Input encoder (`train_tokenizer.encoder`):
  'joint'     the paper body's form: the tokenizer reads the text features and the
              query-item InfoNCE acts on the RQ-VAE encoder's own latents.
  'two_step'  first train the two-tower contrastive encoder
              (`contrastive_encoder.TwoTowerTask`, query-item InfoNCE + category
              SupCon) on the same batches, then run the tokenizer on its item / query
              embeddings. The encoder is stored with the SID artefacts, so
              incremental assignment maps new items' raw features the same way.
"""

from __future__ import annotations

import dataclasses
import os
import time

import gin
import jax
import numpy as np
from absl import logging

from gr_jax import gin_utils, io_utils
from gr_jax.data import schema
from gr_jax.jobs import data as data_job
from gr_jax.jobs import paths
from gr_jax.sid import assign, contrastive_encoder, diagnostics, kmeans, rqvae, tables
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


ENCODERS = ("joint", "two_step")


def train_two_tower(workdir: str, name: str, catalog, logs, batch_size: int, seed: int, steps: int):
  """Step 1 of the two-step variant: the two-tower encoder, through the sharded trainer.

  Returns:
    ((variables, TwoTowerConfig), item embeddings [N, E], query embeddings [R, E]), or
    None when preempted (the checkpoint resumes it).
  """
  config = contrastive_encoder.TwoTowerConfig(feature_dim=int(catalog.features.shape[1]))
  runner = trainer.Trainer(
    contrastive_encoder.TwoTowerTask(config),
    paths.sid_train_dir(workdir, name) + "_two_tower",
    config=dataclasses.replace(trainer.TrainerConfig(), num_steps=steps),
  )
  result = runner.fit(tokenizer_batches(catalog, logs, batch_size, seed))
  runner.close()
  if result.preempted:
    return None
  variables = jax.tree.map(np.asarray, jax.device_get({"params": result.state.params}))
  logging.info("two-tower encoder: %s", result.last_metrics)
  with jax.transfer_guard("allow"):
    items = contrastive_encoder.embed(variables, config, catalog.features, tower="item")
    queries = contrastive_encoder.embed(variables, config, logs.query_features, tower="query")
  return (variables, config), items, queries


@gin.configurable
def train_tokenizer(
  workdir: str,
  name: str = gin.REQUIRED,
  batch_size: int = 512,
  assign_batch_size: int = 8192,
  seed: int = 0,
  encoder: str = "joint",
  two_tower_steps: int = 1000,
):
  """Trains tokenizer `name` (configured by TokenizerConfig) and writes WORKDIR/sid/<name>.

  Args:
    workdir: the run's work directory (reads WORKDIR/data).
    name: artefact name, e.g. 'cq_sid', 'rqvae'.
    batch_size: items per training step (global, sharded over the data axes).
    assign_batch_size: items per device call when assigning the catalog.
    seed: batch order seed.
    encoder: 'joint' or 'two_step' (module docstring).
    two_tower_steps: training steps of the two-step variant's encoder.

  Returns:
    The diagnostics dict.

  Raises:
    UserError: unknown `encoder`.
    ValueError: data without features.
  """
  if encoder not in ENCODERS:
    raise gin_utils.UserError(f"train_tokenizer.encoder must be one of {ENCODERS}, got '{encoder}'")
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
  start = time.perf_counter()
  input_encoder = None
  if encoder == "two_step":
    step_one = train_two_tower(workdir, name, catalog, logs, batch_size, seed, two_tower_steps)
    if step_one is None:
      return {"preempted": True}
    input_encoder, item_embeddings, query_embeddings = step_one
    catalog = dataclasses.replace(catalog, features=item_embeddings)
    logs = dataclasses.replace(logs, query_features=query_embeddings)
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
    encoder=encoder,
    train_seconds=train_seconds,
    assign_seconds=assign_seconds,
    assign_items_per_s=catalog.num_items / max(assign_seconds, 1e-9),
    final_train_metrics=train_metrics,
  )
  tables.write_sid_artefacts(out_dir, sid_tables, diag, variables, config, input_encoder)
  logging.info("tokenizer %s: %s", name, {k: v for k, v in diag.items() if not isinstance(v, dict)})
  return diag
