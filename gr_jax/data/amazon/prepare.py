"""Amazon Scientific as a run's dataset: read, add MiniLM text features, write the tables."""

from __future__ import annotations

import os
import time

import numpy as np
from absl import logging

from gr_jax import io_utils
from gr_jax.data import schema
from gr_jax.data.amazon import reader
from gr_jax.data.text import features


def prepare_amazon(out: str, amazon_dir: str, cache_dir: str, manifest: str) -> str:
  """Loads Amazon Scientific, adds MiniLM features and writes it to `out`.

  Args:
    out: the data directory (WORKDIR/data).
    amazon_dir: folder of the Scientific.* files.
    cache_dir: embedding cache folder.
    manifest: summary file name, written last (its presence marks `out` complete).

  Returns:
    `out`.
  """
  start = time.perf_counter()
  catalog, logs, info = reader.load_amazon_scientific(amazon_dir)
  load_seconds = time.perf_counter() - start
  start = time.perf_counter()
  catalog.features, logs.query_features = features.text_features(catalog, logs, cache_dir)
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
  io_utils.write_json(os.path.join(out, manifest), summary)
  logging.info("data: amazon %s", summary)
  return out
