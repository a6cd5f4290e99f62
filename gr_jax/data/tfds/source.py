"""A registered TFDS builder as a run's dataset (`prepare_data.source = 'tfds'`).

A contract builder (DESIGN.md, "Data contracts"; docs/own_data.md) holds the two
tables as two builder configs, because TFDS gives one feature spec per config:

  <builder>[/<variant>][:<version>]   catalog config      logs config
  amazon_scientific                   catalog             logs
  gr_jax_world/tiny                   tiny_catalog        tiny_logs

The catalog config has the split 'catalog' (one example per item), the logs config
the splits 'train', 'valid' and 'test' (one example per request). A logs `split`
feature is optional: when present it must agree with the TFDS split of its row.

`open_source` imports the module that registers a user's builder, opens both
configs and builds them when they are not built yet (TFDS's `download_and_prepare`,
a no-op once built); `check_features` compares each config's feature spec with the
contract before a row is read; `read_tables` reads every split through the same
contract validators as the other sources (contracts.catalog_from_rows /
logs_from_rows), naming the builder, split, row and field of a bad row;
`write_dataset` adds features the way the other sources do (the builder's
`features` / `query_features` vectors when it has both, else MiniLM text
embeddings, as for Amazon) and writes catalog.npz and logs.npz.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import time
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from gr_jax import errors, fingerprint, io_utils
from gr_jax.data import contracts, schema
from gr_jax.data.amazon import prepare as amazon_prepare
from gr_jax.data.text import features as text_features

# Importing our builders registers them with TFDS.
from gr_jax.data.tfds import amazon as amazon_tfds  # noqa: F401
from gr_jax.data.tfds import world as world_tfds  # noqa: F401

CATALOG, LOGS = "catalog", "logs"
CATALOG_SPLIT = "catalog"
# Width of recent_clicks (the newest clicks kept), as the Amazon reader's.
HISTORY_LEN = 50

# The contract's features per table: name -> (value kind, shape, required). Shape () is a
# scalar, (None,) a list of any length, (2,) exactly two values, ("D",) a fixed-length
# vector.
_INT, _FLOAT, _TEXT, _SPLIT = "integer", "float", "text", "split"
FEATURE_SPECS = {
  CATALOG: {
    "item_id": (_INT, (), True),
    "title": (_TEXT, (), True),
    "category_path": (_TEXT, (None,), True),
    "category_id": (_INT, (), True),
    "brand": (_TEXT, (), True),
    "efficiency_score": (_FLOAT, (), True),
    "features": (_FLOAT, ("D",), False),
  },
  LOGS: {
    "request_id": (_INT, (), True),
    "user_id": (_INT, (), True),
    "user_profile": (_INT, (2,), True),
    "recent_clicks": (_INT, (None,), True),
    "query": (_TEXT, (), True),
    "exposed": (_INT, (None,), True),
    "clicked": (_INT, (None,), True),
    "purchased": (_INT, (None,), True),
    "split": (_SPLIT, (), False),
    "query_features": (_FLOAT, ("D",), False),
  },
}
SPLITS = {CATALOG: (CATALOG_SPLIT,), LOGS: schema.SPLITS}


@dataclasses.dataclass(frozen=True)
class Source:
  """The two opened builders of one contract dataset.

  Attributes:
    name: the `tfds_name` asked for, `<builder>[/<variant>][:<version>]`.
    builders: {'catalog': builder, 'logs': builder}.
  """

  name: str
  builders: dict

  def label(self, table: str, split: str | None = None) -> str:
    """How messages name a table (and split): 'my_shop/logs split 'valid''."""
    builder = self.builders[table]
    where = f"{builder.name}/{builder.builder_config.name}"
    return where + (f" split '{split}'" if split else "")

  def identity(self) -> dict:
    """What the data stage's record keeps, so that a changed dataset is not reused: per
    table the full name (builder/config/version), where it lies, and a fingerprint of
    its files (dataset_info.json, features.json and every shard; fingerprint.py)."""
    out = {}
    for table, builder in self.builders.items():
      folder = os.path.abspath(os.fspath(builder.data_dir))
      files = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
      out[table] = {
        "full_name": builder.info.full_name,
        "data_dir": folder,
        "files": fingerprint.files_fingerprint([os.path.join(folder, f) for f in files]),
      }
    return out


def config_names(tfds_name: str) -> tuple[str, dict[str, str], str]:
  """(builder, {table: config name}, version or '') of `<builder>[/<variant>][:<version>]`.

  Raises:
    errors.UserError: an empty name or more than one '/'.
  """
  name, _, version = tfds_name.strip().partition(":")
  builder, _, variant = name.partition("/")
  if not builder or "/" in variant:
    raise errors.UserError(
      f"prepare_data.tfds_name: '{tfds_name}' is not '<builder>[/<variant>][:<version>]'"
    )
  prefix = f"{variant}_" if variant else ""
  return builder, {table: prefix + table for table in (CATALOG, LOGS)}, version


def import_modules(modules: str | Sequence[str] | None) -> None:
  """Imports the modules that define (and so register) a user's builders.

  Raises:
    errors.UserError: a module cannot be imported (naming it and why).
  """
  for module in [modules] if isinstance(modules, str) else modules or ():
    try:
      importlib.import_module(module)
    except ImportError as e:
      raise errors.UserError(
        f"prepare_data.tfds_module: cannot import '{module}' ({e}); put its folder on PYTHONPATH"
      ) from e


def open_source(
  tfds_name: str,
  data_dir: str | None = None,
  modules: str | Sequence[str] | None = None,
  manual_dir: str | None = None,
  prepare: bool = True,
) -> Source:
  """Opens (and, with `prepare`, builds when not built) a contract builder's two configs.

  Args:
    tfds_name: `<builder>[/<variant>][:<version>]` (module docstring).
    data_dir: TFDS data dir; None = TFDS's default ($TFDS_DATA_DIR or ~/tensorflow_datasets).
    modules: module(s) to import first, to register a builder defined in user code.
    manual_dir: TFDS manual download dir, for builders that read local files.
    prepare: build configs that are not built yet.

  Returns:
    The Source, with both feature specs checked against the contract.

  Raises:
    errors.UserError: unknown builder, config or version; building failed on a row;
      a feature missing or of the wrong type.
  """
  import_modules(modules)
  builder_name, configs, version = config_names(tfds_name)
  data_dir = os.path.abspath(os.path.expanduser(data_dir)) if data_dir else None
  builders = {}
  for table, config in configs.items():
    full = f"{builder_name}/{config}" + (f":{version}" if version else "")
    try:
      builders[table] = tfds.builder(full, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError as e:
      raise errors.UserError(
        f"prepare_data.tfds_name: no TFDS builder '{builder_name}' is registered or built in "
        f"{data_dir or 'the default data dir'}; import the module that defines it "
        "(prepare_data.tfds_module)"
      ) from e
    except (ValueError, AssertionError) as e:  # unknown config or version
      # TFDS says 'Failed to construct dataset "<name>", builder_kwargs "{...}": <why>'.
      detail = str(e).split('": ', 1)[-1].splitlines()[0].strip()
      configs = [c.name for c in getattr(tfds.builder_cls(builder_name), "BUILDER_CONFIGS", [])]
      raise errors.UserError(
        f"prepare_data.tfds_name: '{tfds_name}' needs the {table} as TFDS dataset '{full}': "
        f"{detail} (configs of {builder_name}: {', '.join(configs) or 'none'})"
      ) from e
  source = Source(tfds_name, builders)
  for table in (CATALOG, LOGS):
    check_features(source, table)
    if prepare:
      _build(source, table, manual_dir)
    check_splits(source, table)
  return source


def _build(source: Source, table: str, manual_dir: str | None) -> None:
  builder = source.builders[table]
  config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  try:
    builder.download_and_prepare(download_config=config)
  except (ValueError, TypeError) as e:  # TFDS names the example it could not encode
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    raise errors.DataContractError(
      f"{source.label(table)}: building it failed: {' '.join(lines[:2])[:400]}"
    ) from e


def _kind(feature) -> str:
  if isinstance(feature, tfds.features.ClassLabel):
    return _INT
  kind = np.dtype(feature.np_dtype).kind
  return {"i": _INT, "u": _INT, "f": _FLOAT, "O": _TEXT, "S": _TEXT, "U": _TEXT}.get(kind, kind)


def _feature_problem(feature, kind: str, shape: tuple) -> str | None:
  """What is wrong with one feature of the spec, or None."""
  have_kind, have_shape = _kind(feature), tuple(feature.shape)
  if kind == _SPLIT:
    if have_shape != () or have_kind not in (_INT, _TEXT):
      return f"expected a split name or ClassLabel, got {have_kind} of shape {have_shape}"
    names = getattr(feature, "names", None)
    if names is not None and tuple(names) != schema.SPLITS:
      return f"ClassLabel names {tuple(names)}, expected {schema.SPLITS} in this order"
    return None
  if have_kind != kind:
    return f"expected {kind}, got {have_kind}"
  fixed_length = shape == ("D",)
  if len(have_shape) != len(shape) or (fixed_length and have_shape[0] is None):
    want = {(): "a scalar", (None,): "a list", ("D",): "a fixed-length vector"}.get(shape, shape)
    return f"expected {want}, got shape {have_shape}"
  if shape and not fixed_length and shape[0] is not None and have_shape != shape:
    return f"expected shape {shape}, got {have_shape}"
  return None


def check_features(source: Source, table: str) -> None:
  """Checks one config's feature spec against the contract (FEATURE_SPECS).

  Raises:
    errors.DataContractError: a required feature is missing or a feature has the wrong
      type or shape (naming the builder, config and feature).
  """
  features = source.builders[table].info.features
  for name, (kind, shape, required) in FEATURE_SPECS[table].items():
    if name not in features:
      if required:
        raise errors.DataContractError(
          f"{source.label(table)}: feature '{name}': missing (the contract needs {kind}"
          f"{' list' if shape == (None,) else ''}; docs/own_data.md)"
        )
      continue
    problem = _feature_problem(features[name], kind, shape)
    if problem:
      raise errors.DataContractError(f"{source.label(table)}: feature '{name}': {problem}")


def check_splits(source: Source, table: str) -> None:
  """Raises errors.DataContractError when a split the contract needs was not built."""
  have = list(source.builders[table].info.splits)
  for split in SPLITS[table]:
    if split not in have:
      raise errors.DataContractError(
        f"{source.label(table)}: no split '{split}' (built splits: "
        f"{', '.join(have) or 'none'}; needed: {', '.join(SPLITS[table])})"
      )


def _rows(source: Source, table: str, split: str) -> list[dict]:
  dataset = source.builders[table].as_dataset(split=split, shuffle_files=False)
  return list(tfds.as_numpy(dataset))


def _check_row_splits(rows: list[dict], split: str, dataset: str) -> None:
  """Fills in a missing `split` feature from the TFDS split; a different one is an error."""
  want = schema.SPLITS.index(split)
  for row, record in enumerate(rows):
    value = record.setdefault("split", want)
    if isinstance(value, bytes | str):
      value = value.decode() if isinstance(value, bytes) else value
      same = value == split
    else:
      same = int(value) == want
      value = schema.SPLITS[int(value)] if 0 <= int(value) < len(schema.SPLITS) else int(value)
    if not same:
      raise errors.contract_error(
        dataset, row, "split", f"says {value!r}, but the row is in TFDS split '{split}'"
      )


def _concat_logs(parts: Sequence[schema.SearchLogs]) -> schema.SearchLogs:
  """One table of per-split tables; id lists padded to the widest split's width."""
  columns = {}
  for field in dataclasses.fields(schema.SearchLogs):
    values = [getattr(part, field.name) for part in parts]
    if any(value is None for value in values):
      columns[field.name] = None
      continue
    if field.name in contracts.ITEM_LIST_FIELDS:
      width = max(value.shape[1] for value in values)
      # Histories are left-padded (newest last), the other lists right-padded.
      left = field.name == "recent_clicks"
      values = [
        np.pad(
          value,
          ((0, 0), (width - value.shape[1], 0) if left else (0, width - value.shape[1])),
          constant_values=schema.PAD_ITEM,
        )
        for value in values
      ]  # each [R_split, M]
    columns[field.name] = np.concatenate(values)
  return schema.SearchLogs(**columns)


def read_tables(
  source: Source, history_len: int | None = HISTORY_LEN, on_error: contracts.OnError = "raise"
) -> tuple[schema.Catalog, schema.SearchLogs, contracts.SkipReport]:
  """Reads every split through the contract validators.

  Args:
    source: from `open_source`.
    history_len: width of recent_clicks (the newest clicks kept, as the Amazon reader
      does); None = the longest history.
    on_error: 'raise' stops at the first bad request row; 'skip' drops and counts
      bad request rows (a bad catalog row always stops: item ids index everything else).

  Returns:
    (catalog, logs in train, valid, test order, SkipReport of dropped request rows).

  Raises:
    errors.DataContractError: naming the builder, split, row and field.
  """
  contracts.check_on_error(on_error)
  catalog = contracts.catalog_from_rows(
    _rows(source, CATALOG, CATALOG_SPLIT), source.label(CATALOG, CATALOG_SPLIT)
  )
  report = contracts.SkipReport(source.label(LOGS))
  rows = {split: _rows(source, LOGS, split) for split in schema.SPLITS}
  # One recent_clicks width for every split.
  longest = max((len(r["recent_clicks"]) for part in rows.values() for r in part), default=1)
  width = history_len or max(1, longest)
  parts = []
  for split in schema.SPLITS:
    dataset = source.label(LOGS, split)
    _check_row_splits(rows[split], split, dataset)
    logs, split_report = contracts.logs_from_rows(
      rows[split], catalog.num_items, dataset, width, on_error
    )
    parts.append(logs)
    report.merge(split_report)
  return catalog, _concat_logs(parts), report


def _features(catalog, logs, source: Source, cache_dir: str) -> str:
  """Fills catalog.features / logs.query_features; returns where they came from."""
  have = {
    "features": catalog.features is not None,
    "query_features": logs.query_features is not None,
  }
  if all(have.values()):
    if catalog.features.shape[1] != logs.query_features.shape[1]:
      raise errors.DataContractError(
        f"{source.label(LOGS)}: feature 'query_features': {logs.query_features.shape[1]} "
        f"values, but the catalog's 'features' have {catalog.features.shape[1]}"
      )
    return "builder"
  if any(have.values()):
    table, missing = (LOGS, "query_features") if have["features"] else (CATALOG, "features")
    raise errors.DataContractError(
      f"{source.label(table)}: feature '{missing}': missing (give item 'features' and "
      "'query_features' together, or neither for MiniLM text features)"
    )
  catalog.features, logs.query_features = text_features.text_features(catalog, logs, cache_dir)
  return "minilm"


def write_dataset(
  source: Source, out: str, cache_dir: str, manifest: str, on_error: contracts.OnError = "raise"
) -> dict:
  """Reads the source, adds features, writes catalog.npz, logs.npz and the manifest.

  Besides the tables it writes skip_report.json (on_error 'skip': every dropped row,
  by reason). The manifest (a summary) is written last: its presence marks `out`
  complete.

  Args:
    source: from `open_source`.
    out: the data directory (WORKDIR/data).
    cache_dir: MiniLM embedding cache (used when the builder has no feature vectors).
    manifest: the manifest's file name.
    on_error: 'raise' or 'skip' (`read_tables`).

  Returns:
    The summary written to the manifest.
  """
  start = time.perf_counter()
  catalog, logs, report = read_tables(source, on_error=on_error)
  load_seconds = time.perf_counter() - start
  os.makedirs(out, exist_ok=True)
  io_utils.write_json(os.path.join(out, amazon_prepare.SKIP_REPORT), report.to_json())
  if report.total:
    logging.warning("data: %s; every dropped row in %s", report.summary(), out)
  start = time.perf_counter()
  feature_source = _features(catalog, logs, source, cache_dir)
  schema.save_catalog(catalog, os.path.join(out, "catalog.npz"))
  schema.save_logs(logs, os.path.join(out, "logs.npz"))
  summary = {
    "source": "tfds",
    "tfds_name": source.name,
    "datasets": source.identity(),
    "num_items": catalog.num_items,
    "num_categories": catalog.num_categories,
    "split_rows": {s: int((logs.split == i).sum()) for i, s in enumerate(schema.SPLITS)},
    "features": feature_source,
    "feature_dim": int(catalog.features.shape[1]),
    "skipped_rows": dict(report.counts),
    "load_seconds": load_seconds,
    "feature_seconds": time.perf_counter() - start,
  }
  io_utils.write_json(os.path.join(out, manifest), summary)
  logging.info("data: tfds %s", summary)
  return summary
