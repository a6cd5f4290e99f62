"""Data job: materialise the run's dataset (built-in world or real data) in WORKDIR/data."""

from __future__ import annotations

import os
import time

import gin
import jax
import numpy as np
from absl import logging

from gr_jax import io_utils
from gr_jax.data import amazon, schema, text_encoder, world
from gr_jax.jobs import paths

SOURCES = ("world", "amazon")
# Written last by the Amazon path: a data directory holding it is complete.
AMAZON_MANIFEST = "amazon.json"


@gin.configurable
def prepare_data(
  workdir: str,
  source: str = "world",
  preset: str = "small",
  overrides=None,
  amazon_dir: str | None = None,
  feature_cache_dir: str | None = None,
):
  """Writes catalog.npz and logs.npz (and, for the world, its latents) to WORKDIR/data.

  Args:
    workdir: the run's work directory.
    source: 'world' (the built-in simulator; item features = latent vectors) or
      'amazon' (Amazon Scientific files; features = MiniLM text embeddings).
    preset: world preset (tiny, small, medium, paper).
    overrides: dict of WorldConfig fields changed from the preset (e.g. title_noise).
    amazon_dir: folder of the Scientific.* files (source 'amazon' only).
    feature_cache_dir: where MiniLM embeddings are memoised (source 'amazon';
      default WORKDIR/data/text_cache). Share one folder across runs to encode once.

  Returns:
    The data directory.

  Raises:
    ValueError: unknown source, or source 'amazon' without amazon_dir.
  """
  out = paths.data_dir(workdir)
  if source not in SOURCES:
    raise ValueError(f"prepare_data.source: unknown source '{source}' {SOURCES}")
  for manifest in ("world.json", AMAZON_MANIFEST):
    if os.path.exists(os.path.join(out, manifest)):
      logging.info("data: reusing the dataset in %s", out)
      return out
  if source == "amazon":
    if not amazon_dir:
      raise ValueError(
        "prepare_data.amazon_dir: required for source 'amazon' (the Scientific.* folder)"
      )
    return prepare_amazon(out, amazon_dir, feature_cache_dir or os.path.join(out, "text_cache"))
  start = time.perf_counter()
  config = world.world_preset(preset, **dict(overrides or {}))
  generated = world.generate_world(config)
  world.save_world(generated, out)
  logging.info(
    "data: %s world, %d items, %d requests in %.1fs",
    preset,
    generated.catalog.num_items,
    generated.logs.num_requests,
    time.perf_counter() - start,
  )
  return out


def item_texts(catalog: schema.Catalog) -> list[str]:
  """The text embedded per item: "title. category > path. brand" (empty parts left out)."""
  texts = []
  for title, path, brand in zip(catalog.title, catalog.category_path, catalog.brand):
    parts = [str(title), " > ".join(path), str(brand)]
    texts.append(". ".join(p for p in parts if p))
  return texts


def text_features(
  catalog: schema.Catalog, logs: schema.SearchLogs, cache_dir: str
) -> tuple[np.ndarray, np.ndarray]:
  """MiniLM embeddings of every item text and of every request's pseudo-query.

  Queries are encoded once per distinct text and gathered back per request.

  Returns:
    (item features [N, 384], query features [R, 384]), float32 unit rows.
  """
  distinct, request_query = np.unique(logs.query.astype(str), return_inverse=True)
  # The encoder feeds host token batches to its jitted model by design.
  with jax.transfer_guard("allow"):
    encoder = text_encoder.TextEncoder()
    item_features = encoder.encode_cached(item_texts(catalog), cache_dir)  # [N, D]
    query_features = encoder.encode_cached(list(distinct), cache_dir)  # [Q, D]
  return item_features, query_features[request_query.reshape(-1)]  # [R, D]


def prepare_amazon(out: str, amazon_dir: str, cache_dir: str) -> str:
  """Loads Amazon Scientific, adds MiniLM features and writes it to `out`.

  Args:
    out: the data directory (WORKDIR/data).
    amazon_dir: folder of the Scientific.* files.
    cache_dir: embedding cache folder.

  Returns:
    `out`.
  """
  start = time.perf_counter()
  catalog, logs, info = amazon.load_amazon_scientific(amazon_dir)
  load_seconds = time.perf_counter() - start
  start = time.perf_counter()
  catalog.features, logs.query_features = text_features(catalog, logs, cache_dir)
  encode_seconds = time.perf_counter() - start
  os.makedirs(out, exist_ok=True)
  schema.save_catalog(catalog, os.path.join(out, "catalog.npz"))
  schema.save_logs(logs, os.path.join(out, "logs.npz"))
  summary = {
    "source": "amazon",
    "amazon_dir": os.path.abspath(amazon_dir),
    "num_items": info.num_items,
    "num_users": info.num_users,
    "split_rows": info.split_rows,
    "num_category_paths": info.num_category_paths,
    "num_category_nodes": info.num_category_nodes,
    "items_without_category": info.items_without_category,
    "distinct_queries": int(len(np.unique(logs.query.astype(str)))),
    "feature_dim": int(catalog.features.shape[1]),
    "load_seconds": load_seconds,
    "encode_seconds": encode_seconds,
  }
  io_utils.write_json(os.path.join(out, AMAZON_MANIFEST), summary)
  logging.info("data: amazon %s", summary)
  return out


def load_data(workdir: str) -> tuple[schema.Catalog, schema.SearchLogs]:
  """The run's catalog and logs, as written by `prepare_data`."""
  directory = paths.data_dir(workdir)
  catalog_path = os.path.join(directory, "catalog.npz")
  if not os.path.exists(catalog_path):
    raise FileNotFoundError(
      f"{catalog_path}: no dataset in this work directory; run the data job first "
      "(gin_configs/runs/data.gin)"
    )
  catalog = schema.load_catalog(catalog_path)
  logs = schema.load_logs(os.path.join(directory, "logs.npz"))
  if catalog.features is not None:
    catalog.features = np.asarray(catalog.features, np.float32)
  return catalog, logs
