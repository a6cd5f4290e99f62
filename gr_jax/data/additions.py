"""Items added to a run's catalog after its dataset was made (the daily update).

The data job writes data/catalog.npz once. The item-assignment job appends new items to
data/catalog_additions.npz: the added rows in the catalog's own format plus a ledger of
the files they came from (one atomic write, so rows and ledger never disagree). Item
ids continue after the dataset's N items in the order the files were added, and are
the same for every tokenizer: `workdir.load_data` returns the dataset's items followed
by the additions, and a tokenizer's SID table must cover all of them before a job uses
it (the assignment job extends one tokenizer at a time).

The ledger names the dataset it extends (its fingerprint): a dataset remade by the data
job removes the additions with it, and additions of another dataset are refused. A file
added once is recognised by its fingerprint, so assigning it to a second tokenizer, or
rerunning an interrupted update, reuses its ids instead of adding the items twice.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from gr_jax import errors
from gr_jax.data import schema

ADDITIONS_FILE = "catalog_additions.npz"
_LEDGER = "ledger__json"  # extra array of the additions file: UTF-8 bytes of the ledger


@dataclasses.dataclass(frozen=True)
class AddedFile:
  """One file of added items: its fingerprint and path, first item id and row count."""

  fingerprint: str
  source: str
  first_id: int
  count: int


@dataclasses.dataclass
class Additions:
  """The added rows (a Catalog of M items) and the files they came from, in order."""

  dataset: str  # fingerprint of the catalog + logs these items extend
  rows: schema.Catalog
  files: list[AddedFile]

  def find(self, fingerprint: str) -> AddedFile | None:
    return next((f for f in self.files if f.fingerprint == fingerprint), None)


def read_new_items(path: str, base: schema.Catalog) -> schema.Catalog:
  """The items of a new-items .npz as catalog rows (M items).

  Fields: `features` [M, D] float (required); `category_id` [M] int (-1 unknown; its
  path is the one the dataset's items of that category have); `title`, `brand` [M] str
  ('' when absent); `efficiency_score` [M] float (0 when absent).

  Raises:
    UserError: missing file or field, wrong shapes or dtypes, non-finite rows, category
      ids the catalog does not have.
  """
  if not os.path.exists(path):
    raise errors.UserError(f"assign_items: new-items file not found: {path}")
  try:
    data = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise errors.UserError(f"{path}: not a readable .npz file ({e})") from e
  with data:
    if "features" not in data.files:
      raise errors.UserError(f"{path}: field 'features' missing (found {sorted(data.files)})")
    fields = {name: data[name] for name in data.files}
  features = fields["features"]
  if features.ndim != 2 or not np.issubdtype(features.dtype, np.floating):
    raise errors.UserError(
      f"{path}: field 'features' must be a float [M, D] array, got {features.dtype} "
      f"{features.shape}"
    )
  count = features.shape[0]
  bad = np.flatnonzero(~np.all(np.isfinite(features), axis=1))
  if bad.size:
    raise errors.UserError(f"{path}: row {bad[0]}: field 'features' holds NaN or Inf")

  def column(name: str, kind: str, default):
    if name not in fields:
      return np.full(count, default, dtype=object if kind == "U" else None)
    value = fields[name]
    kinds = {"i": "iu", "f": "fiu", "U": "U"}[kind]
    if value.shape != (count,) or value.dtype.kind not in kinds:
      want = {"i": "an int", "f": "a float", "U": "a str"}[kind]
      raise errors.UserError(
        f"{path}: field '{name}' must be {want} [{count}] array, got {value.dtype} {value.shape}"
      )
    return value.astype(object) if kind == "U" else value

  category_id = column("category_id", "i", -1).astype(np.int32)
  outside = np.flatnonzero((category_id < -1) | (category_id >= base.num_categories))
  if outside.size:
    raise errors.UserError(
      f"{path}: row {outside[0]}: field 'category_id' is {category_id[outside[0]]}; the "
      f"catalog's categories are 0..{base.num_categories - 1} (-1 unknown)"
    )
  efficiency = column("efficiency_score", "f", 0.0).astype(np.float32)
  if not np.all(np.isfinite(efficiency)):
    row = np.flatnonzero(~np.isfinite(efficiency))[0]
    raise errors.UserError(f"{path}: row {row}: field 'efficiency_score' holds NaN or Inf")
  return schema.Catalog(
    title=column("title", "U", ""),
    category_path=_category_paths(base, category_id),
    category_id=category_id,
    brand=column("brand", "U", ""),
    efficiency_score=efficiency,
    category_names=base.category_names,
    features=features.astype(np.float32),
  )


def _category_paths(base: schema.Catalog, category_id: np.ndarray) -> np.ndarray:
  """[M] paths: the path the dataset's items of each leaf category have (() if unknown)."""
  first = {}
  for item in range(base.num_items - 1, -1, -1):  # keeps each category's first item
    first[int(base.category_id[item])] = base.category_path[item]
  paths = np.empty(len(category_id), dtype=object)
  paths[:] = [tuple(first.get(int(c), ())) if c >= 0 else () for c in category_id]
  return paths


def concatenate(a: schema.Catalog, b: schema.Catalog) -> schema.Catalog:
  """The items of `a` followed by those of `b` (same categories)."""
  joined = {}
  for field in dataclasses.fields(schema.Catalog):
    left, right = getattr(a, field.name), getattr(b, field.name)
    if field.name == "category_names":
      joined[field.name] = left
    elif left is None or right is None:
      joined[field.name] = None
    else:
      joined[field.name] = np.concatenate([left, right])
  return schema.Catalog(**joined)


def load(data_dir: str, dataset: str) -> Additions | None:
  """The additions of the dataset in `data_dir` (fingerprint `dataset`), or None.

  Raises:
    ArtefactError: the additions file is unreadable or extends another dataset.
  """
  path = os.path.join(data_dir, ADDITIONS_FILE)
  if not os.path.exists(path):
    return None
  try:
    rows = schema.load_catalog(path)
    with np.load(path, allow_pickle=False) as data:
      ledger = json.loads(data[_LEDGER].tobytes().decode("utf-8"))
  except Exception as e:  # noqa: BLE001 - any failure to read means a damaged file
    raise errors.ArtefactError(
      f"{path}: unreadable, truncated or corrupt ({type(e).__name__}: {e}); rerun the "
      "item-assignment jobs that made it"
    ) from e
  if ledger["dataset"] != dataset:
    raise errors.ArtefactError(
      f"{path}: these added items extend another dataset than data/catalog.npz + "
      "logs.npz (the dataset was remade); delete the file and assign the new items again"
    )
  files = [AddedFile(**f) for f in ledger["files"]]
  return Additions(dataset, rows, files)


def add(
  data_dir: str, dataset: str, base_items: int, rows: schema.Catalog, fingerprint: str, source: str
) -> tuple[AddedFile, bool]:
  """(the entry of `source`'s items, whether they were added now) after appending them.

  A file already in the ledger (same fingerprint) is not added again.
  """
  current = load(data_dir, dataset)
  if current is not None:
    known = current.find(fingerprint)
    if known is not None:
      return known, False
  first_id = base_items + (current.rows.num_items if current else 0)
  entry = AddedFile(fingerprint, os.path.abspath(source), first_id, rows.num_items)
  joined = concatenate(current.rows, rows) if current else rows
  files = [*(current.files if current else []), entry]
  ledger = {"dataset": dataset, "files": [dataclasses.asdict(f) for f in files]}
  blob = np.frombuffer(json.dumps(ledger).encode("utf-8"), np.uint8)
  schema.save_catalog(joined, os.path.join(data_dir, ADDITIONS_FILE), extra_arrays={_LEDGER: blob})
  return entry, True
