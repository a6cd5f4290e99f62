"""Daily update job: attach new items to the existing clusters of a trained tokenizer.

Nothing downstream is retrained: every new item receives an EXISTING SID (the rule
is in `gr_jax.sid.assign`), so the generator, its trie of valid SIDs and every
checkpoint stay valid; only SID -> items grows.

Input: an .npz file with
    features     [M, D] float32 raw item features (the ones the catalog was
                 tokenized from; the two-step variant's encoder is applied here)
    category_id  [M] int, optional (-1 unknown); used when the tokenizer forces
                 level 1 to the category
New items get ids N..N+M-1 after the N items the tables already hold, in file
order; the catalog must append them in the same order.

Output: WORKDIR/sid/<output_name> (default: the tokenizer's own directory,
replaced atomically) with the extended tables, the unchanged tokenizer, and the
update appended to diagnostics.json['incremental_updates'];
WORKDIR/sid/<output_name>/new_item_sid.npy holds the new items' SIDs.
"""

from __future__ import annotations

import os
import time

import gin
import jax
import numpy as np
from absl import logging

from gr_jax import gin_utils
from gr_jax.jobs import paths
from gr_jax.sid import assign, tables


def read_new_items(path: str) -> tuple[np.ndarray, np.ndarray | None]:
  """(features [M, D] float32, category_id [M] int32 or None) from an .npz file.

  Raises:
    UserError: missing file or field, wrong shapes or dtypes, non-finite rows.
  """
  if not os.path.exists(path):
    raise gin_utils.UserError(f"assign_items: new-items file not found: {path}")
  try:
    data = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise gin_utils.UserError(f"{path}: not a readable .npz file ({e})") from e
  with data:
    if "features" not in data.files:
      raise gin_utils.UserError(f"{path}: field 'features' missing (found {sorted(data.files)})")
    features = data["features"]
    category_id = data["category_id"] if "category_id" in data.files else None
  if features.ndim != 2 or not np.issubdtype(features.dtype, np.floating):
    raise gin_utils.UserError(
      f"{path}: field 'features' must be a float [M, D] array, got {features.dtype} "
      f"{features.shape}"
    )
  bad = np.flatnonzero(~np.all(np.isfinite(features), axis=1))
  if bad.size:
    raise gin_utils.UserError(f"{path}: row {bad[0]}: field 'features' holds NaN or Inf")
  if category_id is not None:
    if category_id.shape != (features.shape[0],) or not np.issubdtype(
      category_id.dtype, np.integer
    ):
      raise gin_utils.UserError(
        f"{path}: field 'category_id' must be an int [{features.shape[0]}] array, got "
        f"{category_id.dtype} {category_id.shape}"
      )
    category_id = category_id.astype(np.int32)
  return features.astype(np.float32), category_id


@gin.configurable
def assign_items(
  workdir: str,
  name: str = gin.REQUIRED,
  new_items: str = gin.REQUIRED,
  output_name: str | None = None,
  batch_size: int = 4096,
) -> dict:
  """Assigns the items of `new_items` to existing SIDs of tokenizer `name`.

  Args:
    workdir: run directory holding sid/<name>.
    name: the trained tokenizer.
    new_items: .npz path (module docstring).
    output_name: where to write the updated artefacts (default: `name`, in place).
    batch_size: rows per device call.

  Returns:
    The update's stats (also appended to diagnostics.json).
  """
  source = paths.sid_dir(workdir, name)
  artefacts = tables.load_sid_artefacts(source)
  features, category_id = read_new_items(new_items)
  config = artefacts.config
  if not config.force_category:
    category_id = None
  if features.shape[1] != artefacts.raw_feature_dim:
    raise gin_utils.UserError(
      f"{new_items}: field 'features' has {features.shape[1]} columns; tokenizer "
      f"'{name}' was trained on {artefacts.raw_feature_dim}"
    )
  start = time.perf_counter()
  # Assignment feeds host arrays to jitted functions on purpose.
  with jax.transfer_guard("allow"):
    try:
      new_sid, stats = assign.assign_new_items(
        artefacts.variables,
        config,
        artefacts.tables,
        artefacts.tokenizer_features(features),
        category_id,
        batch_size,
      )
    except ValueError as e:
      raise gin_utils.UserError(f"{new_items}: {e}") from e
  seconds = time.perf_counter() - start
  first_id = artefacts.tables.item_sid.shape[0]
  stats.update(
    source=os.path.abspath(new_items),
    first_new_item_id=int(first_id),
    seconds=seconds,
    items_per_s=len(new_sid) / max(seconds, 1e-9),
  )
  extended = tables.extend_sid_tables(artefacts.tables, new_sid)
  diag = dict(artefacts.diagnostics)
  diag["incremental_updates"] = [*diag.get("incremental_updates", []), stats]
  target = paths.sid_dir(workdir, output_name or name)
  tables.write_sid_artefacts(
    target,
    extended,
    diag,
    artefacts.variables,
    config,
    artefacts.input_encoder,
    extra_arrays={"new_item_sid.npy": new_sid},
  )
  logging.info("assign_items: %d new items -> %s: %s", len(new_sid), target, stats)
  return stats
