"""Text features of a dataset: MiniLM embeddings of item texts and request queries."""

from __future__ import annotations

import jax
import numpy as np

from gr_jax.data import schema
from gr_jax.data.text import encoder as text_encoder


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
    (item features [N, D], query features [R, D]), float32 unit rows (D = 384).
  """
  distinct, request_query = np.unique(logs.query.astype(str), return_inverse=True)
  # The encoder feeds host token batches to its jitted model by design.
  with jax.transfer_guard("allow"):
    encoder = text_encoder.TextEncoder()
    item_features = encoder.encode_cached(item_texts(catalog), cache_dir)  # [N, D]
    query_features = encoder.encode_cached(list(distinct), cache_dir)  # [Q, D]
  return item_features, query_features[request_query.reshape(-1)]  # [R, D]
