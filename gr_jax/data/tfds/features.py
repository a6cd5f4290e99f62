"""TFDS feature specs of the two contract tables (DESIGN.md, "Data contracts"), shared by
every builder; builders differ only in id dtypes and in carrying feature vectors.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from gr_jax.data import schema


def catalog_features(
  id_dtype=np.int64, feature_dim: int | None = None
) -> tfds.features.FeaturesDict:
  """The catalog: one example per item; `features` [D] float32 when feature_dim is given."""
  spec = {
    "item_id": np.int64,
    "title": tfds.features.Text(),
    "category_path": tfds.features.Sequence(tfds.features.Text()),
    "category_id": id_dtype,
    "brand": tfds.features.Text(),
    "efficiency_score": np.float32,
  }
  if feature_dim is not None:
    spec["features"] = tfds.features.Tensor(shape=(feature_dim,), dtype=np.float32)
  return tfds.features.FeaturesDict(spec)


def log_features(id_dtype=np.int64, feature_dim: int | None = None) -> tfds.features.FeaturesDict:
  """The search logs: one example per request; `query_features` [D] when feature_dim is given."""
  item_ids = tfds.features.Sequence(np.int64)
  spec = {
    "request_id": np.int64,
    "user_id": id_dtype,
    "user_profile": tfds.features.Tensor(shape=(2,), dtype=id_dtype),
    "recent_clicks": item_ids,
    "query": tfds.features.Text(),
    "exposed": item_ids,
    "clicked": item_ids,
    "purchased": item_ids,
    "split": tfds.features.ClassLabel(names=list(schema.SPLITS)),
  }
  if feature_dim is not None:
    spec["query_features"] = tfds.features.Tensor(shape=(feature_dim,), dtype=np.float32)
  return tfds.features.FeaturesDict(spec)


def catalog_examples(catalog: schema.Catalog, with_features: bool = False):
  """(key, example) per item, matching `catalog_features`."""
  for item in range(catalog.num_items):
    example = {
      "item_id": item,
      "title": catalog.title[item],
      "category_path": list(catalog.category_path[item]),
      "category_id": int(catalog.category_id[item]),
      "brand": catalog.brand[item],
      "efficiency_score": float(catalog.efficiency_score[item]),
    }
    if with_features:
      example["features"] = catalog.features[item]
    yield item, example


def log_examples(
  logs: schema.SearchLogs, id_dtype=np.int64, split: str | None = None, with_features=False
):
  """(key, example) per request, matching `log_features`; `split` overrides each row's."""
  for row in range(logs.num_requests):
    example = {
      "request_id": int(logs.request_id[row]),
      "user_id": int(logs.user_id[row]),
      "user_profile": logs.user_profile[row].astype(id_dtype),
      "query": logs.query[row],
      "split": split if split is not None else int(logs.split[row]),
    }
    for name in ("recent_clicks", "exposed", "clicked", "purchased"):
      ids = getattr(logs, name)[row]  # [M] PAD_ITEM-padded
      example[name] = ids[ids != schema.PAD_ITEM].astype(np.int64)
    if with_features:
      example["query_features"] = logs.query_features[row]
    yield int(logs.request_id[row]), example
