"""Daily update job: attach new items to the existing clusters of a trained tokenizer.

Nothing downstream is retrained: every new item receives an EXISTING SID (the rule
is in `gr_jax.sid.assign`), so the generator, its trie of valid SIDs and every
checkpoint stay valid; only SID -> items grows.

Input: an .npz file with
    features          [M, D] float32 raw item features (the ones the catalog was
                      tokenized from; the two-step variant's encoder is applied here)
    category_id       [M] int, optional (-1 unknown); used when the tokenizer forces
                      level 1 to the category
    title, brand      [M] str, optional; efficiency_score [M] float, optional
The new items enter the run's catalog (data/catalog_additions.npz, gr_jax/data/additions.py)
with ids after every item it holds, in file order, the same for every tokenizer: later
jobs (evaluation, serving, RL) see them. Each tokenizer a later job uses must hold them:
run this job once per tokenizer with the same file (its ids are reused, and a rerun of a
finished update changes nothing).

Output: WORKDIR/sid/<output_name> (default: the tokenizer's own directory,
replaced atomically) with the extended tables, the unchanged tokenizer, and the
update appended to diagnostics.json['incremental_updates'];
WORKDIR/sid/<output_name>/new_item_sid.npy holds the new items' SIDs. The
tokenizer's stage record is kept (same id: generators trained on it stay valid),
with the new items file added to its inputs.
"""

from __future__ import annotations

import os
import time

import gin
import jax
from absl import logging

from gr_jax import errors, fingerprint
from gr_jax import workdir as workdir_lib
from gr_jax.data import additions
from gr_jax.sid import assign, tables


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
  catalog, _ = workdir_lib.load_data(workdir)
  source = workdir_lib.sid_dir(workdir, name)
  artefacts = tables.load_sid_artefacts(source)
  record = fingerprint.read_record(source)  # the tokenizer's identity, kept by the update
  items = additions.read_new_items(new_items, catalog)
  features, config = items.features, artefacts.config
  category_id = items.category_id if config.force_category else None
  if features.shape[1] != artefacts.raw_feature_dim:
    raise errors.UserError(
      f"{new_items}: field 'features' has {features.shape[1]} columns; tokenizer "
      f"'{name}' was trained on {artefacts.raw_feature_dim}"
    )
  held = artefacts.tables.item_sid.shape[0]
  first_id, done = workdir_lib.new_items_slot(workdir, name, new_items, held)
  if done:
    logging.info("assign_items: tokenizer '%s' already holds the items of %s", name, new_items)
    return {"num_new_items": items.num_items, "first_new_item_id": first_id, "reused": True}
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
      raise errors.UserError(f"{new_items}: {e}") from e
  seconds = time.perf_counter() - start
  workdir_lib.add_items(workdir, items, new_items)  # before the SIDs: a rerun completes
  stats.update(
    source=os.path.abspath(new_items),
    first_new_item_id=int(first_id),
    seconds=seconds,
    items_per_s=len(new_sid) / max(seconds, 1e-9),
  )
  extended = tables.extend_sid_tables(artefacts.tables, new_sid)
  diag = dict(artefacts.diagnostics)
  diag["incremental_updates"] = [*diag.get("incremental_updates", []), stats]
  target = workdir_lib.sid_dir(workdir, output_name or name)
  tables.write_sid_artefacts(
    target,
    extended,
    diag,
    artefacts.variables,
    config,
    artefacts.input_encoder,
    extra_arrays={"new_item_sid.npy": new_sid},
  )
  workdir_lib.keep_tokenizer_record(record, target, new_items)
  logging.info("assign_items: %d new items -> %s: %s", len(new_sid), target, stats)
  return stats
