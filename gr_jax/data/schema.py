"""In-memory form of the data contracts (DESIGN.md, "Data contracts").

Every source (the built-in world, Amazon Scientific, a user's TFDS builder) is
turned into these two tables before any stage reads it. Ragged id lists are
stored padded with PAD_ITEM (-1) so that every array is rectangular and
vectorised code never loops over rows.
"""

from __future__ import annotations

import dataclasses
import os

import gin
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


# Text columns are stored at variable length: `<name>__utf8` (the UTF-8 bytes of every
# row, concatenated) and `<name>__offsets` ([N+1] int64). A fixed-width numpy string
# column would give every row the width of the longest one, so one hostile row could
# blow the file up by orders of magnitude. Each row is also capped at MAX_TEXT_CHARS.
MAX_TEXT_CHARS = 4096
_UTF8, _OFFSETS = "__utf8", "__offsets"


def _text_arrays(name: str, texts, max_chars: int) -> dict[str, np.ndarray]:
  encoded = [str(t)[:max_chars].encode("utf-8") for t in texts]
  offsets = np.zeros(len(encoded) + 1, np.int64)
  np.cumsum([len(e) for e in encoded], out=offsets[1:])
  blob = np.frombuffer(b"".join(encoded), np.uint8)
  return {name + _UTF8: blob, name + _OFFSETS: offsets}


def _read_text(data, name: str) -> np.ndarray:
  blob, offsets = data[name + _UTF8].tobytes(), data[name + _OFFSETS]
  out = np.empty(len(offsets) - 1, dtype=object)
  out[:] = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
  return out


def _save_table(
  table, path: str, max_text_chars: int = MAX_TEXT_CHARS, extra_arrays: dict | None = None
) -> None:
  """Writes a dataclass of arrays (+ `extra_arrays`) to one .npz, atomically (temp name,
  then rename)."""
  arrays = dict(extra_arrays or {})
  for f in dataclasses.fields(table):
    value = getattr(table, f.name)
    if value is None:
      continue
    if value.dtype == object or value.dtype.kind == "U":
      # Tuples of str (category paths) are joined with a separator no text holds.
      if f.name == "category_path":
        value = np.array(["\x1f".join(v) for v in value], dtype=object)
      arrays.update(_text_arrays(f.name, value, max_text_chars))
      continue
    arrays[f.name] = value
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def _load_table(cls, path: str):
  with np.load(path, allow_pickle=False) as data:
    kwargs = {}
    for f in dataclasses.fields(cls):
      if f.name + _OFFSETS in data:
        value = _read_text(data, f.name)
      elif f.name in data:
        value = data[f.name]  # numeric, or text of files written by older versions
      else:
        kwargs[f.name] = None
        continue
      if value.dtype.kind in "UO":
        value = value.astype(object)
        if f.name == "category_path":
          value = np.array(
            [tuple(v.split("\x1f")) if v else () for v in value] + [None], dtype=object
          )[:-1]
      kwargs[f.name] = value
  return cls(**kwargs)


@gin.configurable(allowlist=["max_text_chars"])
def save_catalog(
  catalog: Catalog,
  path: str,
  max_text_chars: int = MAX_TEXT_CHARS,
  extra_arrays: dict | None = None,
) -> None:
  """Writes the catalog; text rows longer than `max_text_chars` are cut (module docs).
  `extra_arrays` are stored beside its fields in the same atomic write."""
  _save_table(catalog, path, max_text_chars, extra_arrays)


def load_catalog(path: str) -> Catalog:
  return _load_table(Catalog, path)


@gin.configurable(allowlist=["max_text_chars"])
def save_logs(logs: SearchLogs, path: str, max_text_chars: int = MAX_TEXT_CHARS) -> None:
  """Writes the logs; query rows longer than `max_text_chars` are cut."""
  _save_table(logs, path, max_text_chars)


def load_logs(path: str) -> SearchLogs:
  return _load_table(SearchLogs, path)
