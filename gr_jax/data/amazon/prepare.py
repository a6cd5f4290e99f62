"""An Amazon dataset (UniSRec layout) as a run's dataset: read, add MiniLM features, write."""

from __future__ import annotations

import os
import time

import numpy as np
from absl import logging

from gr_jax import errors, io_utils
from gr_jax.data import schema
from gr_jax.data.amazon import reader
from gr_jax.data.text import features

SKIP_REPORT = "skip_report.json"
ID_MAPS = "id_maps.npz"


def write_load_report(out: str, info: reader.AmazonInfo) -> None:
  """Writes skip_report.json and id_maps.npz (prepare_amazon) and prints the skip counts."""
  os.makedirs(out, exist_ok=True)
  io_utils.write_json(os.path.join(out, SKIP_REPORT), info.skip_report.to_json())
  io_utils.write_npz(
    os.path.join(out, ID_MAPS),
    {"item_asin": info.item_asins.astype(str), "user_key": info.user_keys.astype(str)},
  )
  if info.skip_report.total:
    print(f"data: {info.skip_report.summary()}; every dropped row in {out}/{SKIP_REPORT}")


def resolve_request(
  amazon_dir: str | None, dataset: str | None, category_root: str | None, query: str
) -> tuple[str, str, dict]:
  """(folder, dataset name, settings for the stage record) of an Amazon data request.

  The folder defaults to $GR_JAX_AMAZON_DIR (as for the TFDS builder); the dataset to
  the only one in the folder. Records of Scientific with category queries omit the
  dataset and query keys, so work directories made before they existed still match.

  Raises:
    UserError: no folder, an unknown query mode, or a dataset that cannot be found.
  """
  amazon_dir = amazon_dir or os.environ.get("GR_JAX_AMAZON_DIR")
  if not amazon_dir:
    raise errors.UserError(
      "prepare_data.amazon_dir: required for source 'amazon' (the UniSRec-layout folder; "
      "or set GR_JAX_AMAZON_DIR)"
    )
  if query not in reader.QUERY_MODES:
    raise errors.UserError(
      f"prepare_data.amazon_query: unknown mode '{query}' {reader.QUERY_MODES}"
    )
  dataset = reader.find_dataset(amazon_dir, dataset).name
  knobs = {
    "dataset": dataset != "Scientific" and dataset,
    "category_root": category_root,
    "query": query != "category" and query,
  }
  settings = {"amazon_dir": os.path.abspath(amazon_dir), **{k: v for k, v in knobs.items() if v}}
  return amazon_dir, dataset, settings


def prepare_amazon(
  out: str,
  amazon_dir: str,
  cache_dir: str,
  manifest: str,
  on_error: str = "raise",
  dataset: str | None = None,
  category_root: str | None = None,
  query: str = "category",
) -> str:
  """Loads one Amazon dataset, adds MiniLM features and writes it to `out`.

  Besides catalog.npz and logs.npz it writes skip_report.json (rows dropped in skip
  mode: counts and every dropped row, by reason) and id_maps.npz (item_asin [N] and
  user_key [U]: the original key of each dense id, since skip mode renumbers).

  Args:
    out: the data directory (WORKDIR/data).
    amazon_dir: folder of the UniSRec-layout files.
    cache_dir: embedding cache folder.
    manifest: summary file name, written last (its presence marks `out` complete).
    on_error: 'raise' (stop at the first bad row) or 'skip' (drop and report).
    dataset: the file prefix; None = the only dataset in `amazon_dir`.
    category_root: the category root phrase; None infers it from the texts.
    query: pseudo-query mode (reader.QUERY_MODES).

  Returns:
    `out`.
  """
  start = time.perf_counter()
  catalog, logs, info = reader.load_amazon(
    amazon_dir, dataset, on_error=on_error, category_root=category_root, query=query
  )
  load_seconds = time.perf_counter() - start
  write_load_report(out, info)
  start = time.perf_counter()
  catalog.features, logs.query_features = features.text_features(catalog, logs, cache_dir)
  encode_seconds = time.perf_counter() - start
  os.makedirs(out, exist_ok=True)
  schema.save_catalog(catalog, os.path.join(out, "catalog.npz"))
  schema.save_logs(logs, os.path.join(out, "logs.npz"))
  queries = logs.query.astype(str)
  query_words = np.array([len(q.split()) for q in queries])  # [R]
  summary = {
    "source": "amazon",
    "amazon_dir": os.path.abspath(amazon_dir),
    "dataset": info.dataset,
    "category_root": info.category_root,
    "query_mode": query,
    "num_items": info.num_items,
    "num_users": info.num_users,
    "split_rows": info.split_rows,
    "num_category_paths": info.num_category_paths,
    "num_category_nodes": info.num_category_nodes,
    "items_without_category": info.items_without_category,
    "distinct_queries": int(len(np.unique(queries))),
    "empty_queries": int((query_words == 0).sum()),
    "mean_query_words": float(query_words.mean()) if query_words.size else 0.0,
    "feature_dim": int(catalog.features.shape[1]),
    "skipped_rows": dict(info.skip_report.counts),
    "load_seconds": load_seconds,
    "encode_seconds": encode_seconds,
  }
  io_utils.write_json(os.path.join(out, manifest), summary)
  logging.info("data: amazon %s", summary)
  return out
