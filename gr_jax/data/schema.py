"""In-memory form of the data contracts (DESIGN.md, "Data contracts").

Every source (the built-in world, Amazon Scientific, a user's TFDS builder) is
turned into these two tables before any stage reads it. Ragged id lists are
stored padded with PAD_ITEM (-1) so that every array is rectangular and
vectorised code never loops over rows.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

PAD_ITEM = -1
SPLITS = ("train", "valid", "test")


@dataclasses.dataclass
class Catalog:
  """Items, dense ids 0..N-1.

  Attributes:
    title: [N] object array of str.
    category_path: [N] object array of tuple[str, ...], root first.
    category_id: [N] int32 leaf category id, -1 when unknown.
    brand: [N] object array of str ('' when unknown).
    efficiency_score: [N] float32.
    features: optional [N, D] float32 item feature vectors.
    category_names: [C] object array naming each leaf category id.
  """

  title: np.ndarray
  category_path: np.ndarray
  category_id: np.ndarray
  brand: np.ndarray
  efficiency_score: np.ndarray
  category_names: np.ndarray
  features: np.ndarray | None = None

  @property
  def num_items(self) -> int:
    return len(self.title)

  @property
  def num_categories(self) -> int:
    return len(self.category_names)


@dataclasses.dataclass
class SearchLogs:
  """One row per search request.

  Attributes:
    request_id: [R] int64.
    user_id: [R] int32.
    user_profile: [R, 2] int32 (gender, age band).
    recent_clicks: [R, H] int32 item ids, newest last, left-padded with PAD_ITEM.
    query: [R] object array of str.
    exposed, clicked, purchased: [R, M] int32 item ids padded with PAD_ITEM.
    split: [R] int8 index into SPLITS.
    query_features: optional [R, D] float32 query feature vectors.
  """

  request_id: np.ndarray
  user_id: np.ndarray
  user_profile: np.ndarray
  recent_clicks: np.ndarray
  query: np.ndarray
  exposed: np.ndarray
  clicked: np.ndarray
  purchased: np.ndarray
  split: np.ndarray
  query_features: np.ndarray | None = None

  @property
  def num_requests(self) -> int:
    return len(self.request_id)

  def select(self, mask_or_index: np.ndarray) -> SearchLogs:
    """Rows picked by a boolean mask or an index array."""
    return SearchLogs(
      **{
        f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[mask_or_index])
        for f in dataclasses.fields(self)
      }
    )

  def split_rows(self, name: str) -> SearchLogs:
    if name not in SPLITS:
      raise ValueError(f"unknown split '{name}', expected one of {SPLITS}")
    return self.select(self.split == SPLITS.index(name))


def _save_table(table, path: str) -> None:
  """Writes a dataclass of arrays to one .npz, atomically (temp name, then rename)."""
  arrays = {}
  for f in dataclasses.fields(table):
    value = getattr(table, f.name)
    if value is None:
      continue
    if value.dtype == object:
      # Tuples of str (category paths) are joined with a separator no text holds.
      if f.name == "category_path":
        value = np.array(["\x1f".join(v) for v in value], dtype=object)
      value = np.array([str(v) for v in value], dtype=np.str_)
    arrays[f.name] = value
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def _load_table(cls, path: str):
  with np.load(path, allow_pickle=False) as data:
    kwargs = {}
    for f in dataclasses.fields(cls):
      if f.name not in data:
        kwargs[f.name] = None
        continue
      value = data[f.name]
      if value.dtype.kind == "U":
        value = value.astype(object)
        if f.name == "category_path":
          value = np.array(
            [tuple(v.split("\x1f")) if v else () for v in value] + [None], dtype=object
          )[:-1]
      kwargs[f.name] = value
  return cls(**kwargs)


def save_catalog(catalog: Catalog, path: str) -> None:
  _save_table(catalog, path)


def load_catalog(path: str) -> Catalog:
  return _load_table(Catalog, path)


def save_logs(logs: SearchLogs, path: str) -> None:
  _save_table(logs, path)


def load_logs(path: str) -> SearchLogs:
  return _load_table(SearchLogs, path)
