"""TFDS builders for Amazon datasets in the UniSRec layout, and a reader for any contract builder.

`AmazonScientific` (TFDS name `amazon_scientific`) reads the UniSRec
`Scientific.*` files from a manual download directory (TFDS's way for data that
cannot be fetched) and writes the contract features (DESIGN.md, "Data
contracts"); `builder_for('Office')` makes and registers the same builder for
the `Office.*` files (`amazon_office`), and so for any dataset name. The
category root is inferred from the item texts. TFDS gives one feature spec per
builder config, so the contract's two tables are two configs:

  amazon_scientific/catalog  split 'catalog'              one row per item
  amazon_scientific/logs     splits 'train' 'valid' 'test' one row per request

Manual directory, first that is set: the `manual_dir` builder argument, TFDS's
`DownloadConfig(manual_dir=...)` (when it holds the files), the environment
variable GR_JAX_AMAZON_DIR, then `../shared/data/amazon_<name lower-cased>`
relative to the repository root. Build with

  python -c "from gr_jax.data.tfds import amazon as amazon_tfds; amazon_tfds.load_tfds_tables()"

(both configs; `data_dir=` / `manual_dir=` as needed), or
`tfds.builder('amazon_scientific/logs').download_and_prepare()` after importing
this module, or `python -m gr_jax.data.tfds.build amazon_scientific --manual_dir=DIR`
(gr_jax/data/tfds/build.py stands in for `tfds build`, whose 4.9.10 CLI imports
apache_beam at start-up); for another dataset,
`load_tfds_tables(builder_for('Office').name, manual_dir=DIR)`.
`load_tfds_tables` reads any builder with these two configs back into
(schema.Catalog, schema.SearchLogs), validating every row.
"""

from __future__ import annotations

import logging
import os
import re

import tensorflow_datasets as tfds

from gr_jax.data import contracts, schema
from gr_jax.data.amazon import reader as amazon
from gr_jax.data.tfds import features as contract_features

MANUAL_DIR_ENV = "GR_JAX_AMAZON_DIR"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_DATA_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")
CATALOG_CONFIG = "catalog"
LOGS_CONFIG = "logs"


def _snake_name(dataset: str) -> str:
  return re.sub(r"[^0-9a-z]+", "_", dataset.lower()).strip("_")


def default_manual_dir(dataset: str = "Scientific") -> str:
  """GR_JAX_AMAZON_DIR when set, else ../shared/data/amazon_<dataset> next to the repo."""
  return os.environ.get(MANUAL_DIR_ENV) or os.path.join(
    SHARED_DATA_DIR, f"amazon_{_snake_name(dataset)}"
  )


class AmazonUnisrec(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """One Amazon Reviews 2018 5-core dataset in the UniSRec layout, as contract tables.

  Subclasses name the dataset (`DATASET`, the file prefix); `builder_for` makes them.
  """

  DATASET = ""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Catalog and leave-one-out requests with category-path pseudo-queries."}
  BUILDER_CONFIGS = [
    tfds.core.BuilderConfig(name=CATALOG_CONFIG, description="One row per item."),
    tfds.core.BuilderConfig(
      name=LOGS_CONFIG, description="One row per request (train/valid/test)."
    ),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Place the dataset's UniSRec files (<name>.text, <name>.item2index, <name>.user2index, "
    f"<name>.{{train,valid,test}}.inter) in the manual directory, or point ${MANUAL_DIR_ENV} "
    "at them."
  )

  @tfds.core.utils.classproperty
  @classmethod
  def url_infos(cls) -> None:
    # Nothing is downloaded, so there is no checksums file to look up (the
    # lookup would also need the optional `importlib_resources` package).
    return None

  def __init__(self, *, manual_dir: str | None = None, **kwargs):
    self._manual_dir_arg = manual_dir
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    is_catalog = self.builder_config.name == CATALOG_CONFIG
    return tfds.core.DatasetInfo(
      builder=self,
      description=f"Amazon {self.DATASET} (UniSRec 5-core) in the gr_jax data contract.",
      features=(
        contract_features.catalog_features() if is_catalog else contract_features.log_features()
      ),
      homepage="https://nijianmo.github.io/amazon/",
      disable_shuffling=True,
      citation=(
        "Ni, Li, McAuley. Justifying recommendations using distantly-labeled reviews and "
        "fine-grained aspects. EMNLP 2019."
      ),
    )

  def _resolve_manual_dir(self, dl_manager) -> str:
    if self._manual_dir_arg:
      return self._manual_dir_arg
    try:
      tfds_dir = dl_manager.manual_dir
    except AssertionError:  # TFDS raises it when its manual dir is absent or empty
      tfds_dir = None
    holds_files = tfds_dir is not None and os.path.isfile(
      os.path.join(os.fspath(tfds_dir), amazon.UnisrecFiles(self.DATASET).text)
    )
    return os.fspath(tfds_dir) if holds_files else default_manual_dir(self.DATASET)

  def _split_generators(self, dl_manager):
    manual_dir = self._resolve_manual_dir(dl_manager)
    catalog, logs, _ = amazon.load_amazon(manual_dir, self.DATASET)
    if self.builder_config.name == CATALOG_CONFIG:
      return {"catalog": self._generate_examples(catalog, "catalog")}
    return {
      split: self._generate_examples(logs.split_rows(split), split) for split in schema.SPLITS
    }

  def _generate_examples(self, table, split: str):
    if isinstance(table, schema.Catalog):
      yield from contract_features.catalog_examples(table)
    else:
      yield from contract_features.log_examples(table, split=split)


class AmazonScientific(AmazonUnisrec):
  """Amazon Reviews 2018 Industrial & Scientific 5-core, as contract tables."""

  DATASET = "Scientific"


_BUILDERS: dict[str, type[AmazonUnisrec]] = {AmazonScientific.name: AmazonScientific}


def builder_for(dataset: str) -> type[AmazonUnisrec]:
  """The builder of the UniSRec dataset `dataset`, registered as `amazon_<dataset>`.

  Args:
    dataset: the file prefix ('Office' -> TFDS name `amazon_office`).

  Returns:
    The builder class (made and registered with TFDS on first use).
  """
  name = f"amazon_{_snake_name(dataset)}"
  if name not in _BUILDERS:
    class_name = "Amazon" + re.sub(r"[^0-9A-Za-z]", "", dataset.title())
    attributes = {"name": name, "DATASET": dataset, "__module__": __name__}
    _BUILDERS[name] = type(class_name, (AmazonUnisrec,), attributes)
  return _BUILDERS[name]


def load_tfds_tables(
  builder_name: str = "amazon_scientific",
  data_dir: str | None = None,
  manual_dir: str | None = None,
  history_len: int | None = 50,
  on_error: contracts.OnError = "raise",
  prepare: bool = True,
) -> tuple[schema.Catalog, schema.SearchLogs]:
  """Reads a contract builder's `catalog` and `logs` configs into tables.

  Args:
    builder_name: registered TFDS name (optionally with ':version'; source.py says how
      a name maps to the two configs).
    data_dir: TFDS data dir.
    manual_dir: manual download dir (the Amazon builders only).
    history_len: width of recent_clicks; None = the longest history.
    on_error: 'raise' or 'skip' for bad request rows (see contracts).
    prepare: run download_and_prepare first (a no-op once built).

  Returns:
    (catalog, logs), validated.

  Raises:
    errors.DataContractError: a row breaks the contract, naming the builder, config,
      split, the example index and the field.
  """
  # source.py imports this module to register the builder.
  from gr_jax.data.tfds import source as tfds_source  # noqa: PLC0415

  source = tfds_source.open_source(builder_name, data_dir, manual_dir=manual_dir, prepare=prepare)
  catalog, logs, report = tfds_source.read_tables(source, history_len, on_error)
  if report.total:
    logging.warning("%s", report.summary())
  return catalog, logs
