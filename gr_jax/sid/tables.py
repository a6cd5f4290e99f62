"""SID tables (item -> SID, SID -> items as CSR) and the sid/ artefact directory.

Layout of WORKDIR/sid/ (all written into a temp dir, then renamed into place):

    item_sid.npy        [N, L+1] int32 SID of each item (codes, then suffix g)
    sid_items.npz       sids [S, L+1] int32 (unique, lexicographic), offsets [S+1] int64,
                        items [N] int32 (items of sids[s] are items[offsets[s]:offsets[s+1]],
                        ascending), level_sizes [L+1] int64 (radix of each SID position)
    diagnostics.json    tokenizer diagnostics
    tokenizer.msgpack   variables ('params' and 'codebook'), flax.serialization
    config.json         TokenizerConfig fields
    input_encoder.msgpack, input_encoder.json
                        two-step variant only: the two-tower encoder (variables,
                        TwoTowerConfig fields) whose item tower maps raw text
                        features to the tokenizer's input features

SIDs here are codes (0-based per level); `models.token_layout.TokenLayout` with
`sid_level_sizes = level_sizes` turns them into generator token ids.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

import flax.linen as nn
import flax.serialization
import jax
import numpy as np

from gr_jax import io_utils
from gr_jax.sid import cluster_split, contrastive_encoder
from gr_jax.sid.rqvae import TokenizerConfig


@dataclasses.dataclass
class SidTables:
  """Both directions of the item <-> SID mapping.

  Attributes:
    item_sid: [N, L+1] int32.
    sids: [S, L+1] int32 unique SIDs sorted lexicographically.
    offsets: [S+1] int64 CSR offsets into `items`.
    items: [N] int32 item ids grouped by SID, ascending within a SID.
    level_sizes: radix (token-space size) of each SID position.
  """

  item_sid: np.ndarray
  sids: np.ndarray
  offsets: np.ndarray
  items: np.ndarray
  level_sizes: tuple[int, ...]

  @property
  def num_sids(self) -> int:
    return int(self.sids.shape[0])

  @property
  def sid_sizes(self) -> np.ndarray:
    """[S] number of items of each SID."""
    return np.diff(self.offsets)


def build_sid_tables(item_sid: np.ndarray, level_sizes: tuple[int, ...]) -> SidTables:
  """Builds the CSR SID -> items table from item -> SID.

  Args:
    item_sid: [N, L+1] int SIDs.
    level_sizes: radix of each SID position (codebook sizes, then suffix size).

  Returns:
    `SidTables`.

  Raises:
    ValueError: a SID value is negative or outside its level size.
  """
  item_sid = np.asarray(item_sid, np.int32)
  level_sizes = tuple(int(s) for s in level_sizes)
  if item_sid.ndim != 2 or item_sid.shape[1] != len(level_sizes):
    raise ValueError(f"item_sid has shape {item_sid.shape}, expected [N, {len(level_sizes)}]")
  bad = np.flatnonzero(np.any((item_sid < 0) | (item_sid >= np.array(level_sizes)), axis=1))
  if bad.size:
    raise ValueError(
      f"item_sid: row {bad[0]} = {item_sid[bad[0]].tolist()} outside level sizes {level_sizes}"
    )
  keys = cluster_split.code_keys(item_sid, level_sizes)
  order = np.argsort(keys, kind="stable")  # stable: items ascending inside a SID
  sorted_keys = keys[order]
  # Runs of equal keys are the SIDs; finding run starts avoids np.unique's second sort
  # (7.2 s -> 5.3 s at 21M items, benchmarks/index_build).
  first = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
  first = first[: len(sorted_keys)]
  offsets = np.append(first, len(sorted_keys)).astype(np.int64)
  return SidTables(
    item_sid=item_sid,
    sids=item_sid[order[first]],
    offsets=offsets,
    items=order.astype(np.int32),
    level_sizes=level_sizes,
  )


def sid_index(tables: SidTables, query_sids: np.ndarray) -> np.ndarray:
  """[M, L+1] SIDs -> [M] int64 row in `tables.sids`, -1 where the SID does not exist."""
  query_sids = np.asarray(query_sids, np.int64).reshape(-1, len(tables.level_sizes))
  in_range = np.all((query_sids >= 0) & (query_sids < np.array(tables.level_sizes)), axis=1)
  table_keys = cluster_split.code_keys(tables.sids, tables.level_sizes)
  query_keys = cluster_split.code_keys(
    np.where(in_range[:, None], query_sids, 0), tables.level_sizes
  )
  position = np.searchsorted(table_keys, query_keys)
  clipped = np.minimum(position, max(tables.num_sids - 1, 0))
  found = in_range & (tables.num_sids > 0) & (table_keys[clipped] == query_keys)
  return np.where(found, clipped, -1)


def items_for_sids(
  tables: SidTables, query_sids: np.ndarray, max_items: int | None = None
) -> np.ndarray:
  """Expansion: [M, L+1] SIDs -> [M, max_items] item ids padded with -1.

  Args:
    tables: `SidTables`.
    query_sids: [M, L+1] SIDs (unknown SIDs expand to nothing).
    max_items: width of the result; defaults to the largest SID. Longer SIDs are cut.

  Returns:
    [M, max_items] int32.
  """
  index = sid_index(tables, query_sids)  # [M]
  if max_items is None:
    max_items = int(np.max(tables.sid_sizes, initial=0))
  safe = np.maximum(index, 0)
  starts = tables.offsets[safe]  # [M]
  counts = np.where(index >= 0, tables.offsets[safe + 1] - starts, 0)  # [M]
  slots = np.arange(max_items)[None, :]  # [1, W]
  positions = np.minimum(starts[:, None] + slots, max(len(tables.items) - 1, 0))
  values = tables.items[positions] if len(tables.items) else np.zeros_like(positions)
  return np.where(slots < counts[:, None], values, -1).astype(np.int32)


def _config_to_json(config) -> str:
  return json.dumps(dataclasses.asdict(config), indent=2)


def write_sid_artefacts(
  directory: str,
  tables: SidTables,
  diagnostics: dict,
  variables: dict,
  config: TokenizerConfig,
  input_encoder: tuple | None = None,
  extra_arrays: dict[str, np.ndarray] | None = None,
) -> None:
  """Writes the sid/ artefacts atomically (temp dir, then rename over `directory`).

  Args:
    directory: target directory (replaced if it exists).
    tables: `SidTables`.
    diagnostics: JSON-serialisable dict.
    variables: tokenizer variables (boxed or not; stored unboxed).
    config: the tokenizer config.
    input_encoder: (variables, TwoTowerConfig) of the two-step variant's encoder, or None.
    extra_arrays: {file name: array} written with np.save beside the tables.
  """
  directory = os.path.abspath(directory)
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=".sid_tmp_", dir=parent)
  io_utils.normal_permissions(staging)
  try:
    np.save(os.path.join(staging, "item_sid.npy"), tables.item_sid)
    np.savez(
      os.path.join(staging, "sid_items.npz"),
      sids=tables.sids,
      offsets=tables.offsets,
      items=tables.items,
      level_sizes=np.array(tables.level_sizes, np.int64),
    )
    with open(os.path.join(staging, "diagnostics.json"), "w") as f:
      json.dump(diagnostics, f, indent=2, sort_keys=True)
    _write_variables(os.path.join(staging, "tokenizer.msgpack"), variables)
    with open(os.path.join(staging, "config.json"), "w") as f:
      f.write(_config_to_json(config))
    for file_name, array in (extra_arrays or {}).items():
      np.save(os.path.join(staging, file_name), array)
    if input_encoder is not None:
      encoder_variables, encoder_config = input_encoder
      _write_variables(os.path.join(staging, "input_encoder.msgpack"), encoder_variables)
      with open(os.path.join(staging, "input_encoder.json"), "w") as f:
        f.write(_config_to_json(encoder_config))
    previous = None
    if os.path.exists(directory):
      previous = tempfile.mkdtemp(prefix=".sid_old_", dir=parent)
      os.rename(directory, os.path.join(previous, "sid"))
    os.rename(staging, directory)
    if previous is not None:
      shutil.rmtree(previous)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise


def _write_variables(path: str, variables: dict) -> None:
  state = jax.tree.map(np.asarray, flax.serialization.to_state_dict(nn.meta.unbox(variables)))
  with open(path, "wb") as f:
    f.write(flax.serialization.msgpack_serialize(state))


def _read_variables(path: str) -> dict:
  with open(path, "rb") as f:
    return flax.serialization.msgpack_restore(f.read())


@dataclasses.dataclass
class SidArtefacts:
  """Everything `write_sid_artefacts` stored.

  Attributes:
    input_encoder: (variables, TwoTowerConfig) for the two-step variant, else None;
      `tokenizer_features` applies it.
  """

  tables: SidTables
  diagnostics: dict
  variables: dict
  config: TokenizerConfig
  input_encoder: tuple | None = None

  @property
  def raw_feature_dim(self) -> int:
    """Columns of the raw item features this tokenizer (with its input encoder) reads."""
    if self.input_encoder is None:
      return self.config.feature_dim
    return self.input_encoder[1].feature_dim

  def tokenizer_features(self, features: np.ndarray) -> np.ndarray:
    """[N, D] raw item text features -> [N, D'] the tokenizer's input features."""
    if self.input_encoder is None:
      return np.asarray(features, np.float32)
    variables, config = self.input_encoder
    return contrastive_encoder.embed(variables, config, features, tower="item")


def load_sid_artefacts(directory: str) -> SidArtefacts:
  """Reads a sid/ directory written by `write_sid_artefacts`.

  Raises:
    FileNotFoundError: a file of the layout is missing (names the file).
  """
  paths = {
    name: os.path.join(directory, name)
    for name in (
      "item_sid.npy",
      "sid_items.npz",
      "diagnostics.json",
      "tokenizer.msgpack",
      "config.json",
    )
  }
  for name, path in paths.items():
    if not os.path.exists(path):
      raise FileNotFoundError(f"SID artefact '{name}' missing: {path}")
  item_sid = np.load(paths["item_sid.npy"])
  with np.load(paths["sid_items.npz"]) as data:
    tables = SidTables(
      item_sid=item_sid,
      sids=data["sids"],
      offsets=data["offsets"],
      items=data["items"],
      level_sizes=tuple(int(s) for s in data["level_sizes"]),
    )
  with open(paths["diagnostics.json"]) as f:
    diagnostics = json.load(f)
  variables = _read_variables(paths["tokenizer.msgpack"])
  with open(paths["config.json"]) as f:
    config = TokenizerConfig(**json.load(f))
  input_encoder = None
  encoder_path = os.path.join(directory, "input_encoder.msgpack")
  if os.path.exists(encoder_path):
    with open(os.path.join(directory, "input_encoder.json")) as f:
      encoder_config = contrastive_encoder.TwoTowerConfig(**json.load(f))
    input_encoder = (_read_variables(encoder_path), encoder_config)
  return SidArtefacts(
    tables=tables,
    diagnostics=diagnostics,
    variables=variables,
    config=config,
    input_encoder=input_encoder,
  )


def extend_sid_tables(sid_tables: SidTables, new_item_sid: np.ndarray) -> SidTables:
  """Tables with new items appended (ids N..N+M-1); existing items keep their SIDs."""
  return build_sid_tables(
    np.concatenate([sid_tables.item_sid, np.asarray(new_item_sid, np.int32)]),
    sid_tables.level_sizes,
  )
