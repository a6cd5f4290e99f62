"""TFDS builder for the built-in simulated world (gr_jax/data/world/simulator.py).

One builder, `gr_jax_world`, two tables per world as separate configs, because
the catalog and the search logs have different features (DESIGN.md, "Data
contracts"):

  gr_jax_world/<preset>_catalog   split 'catalog': one example per item, in id order
  gr_jax_world/<preset>_logs      splits 'train', 'valid', 'test' (by time): one
                                  example per search request, in time order

for preset in tiny, small, medium, paper. Both configs of a preset generate the
same world (same seed), so their item ids agree. Knob overrides make new
configs: `world_builder_config('tiny', 'logs', title_noise=0.5)` (named
`tiny_logs-title_noise_0.5`). The full WorldConfig is stored in
`info.metadata['world_config']`.

Example order is the generation order (shuffling disabled): items by id,
requests by time. Id lists are stored ragged (no padding); `recent_clicks` is
newest last.

Build from Python (tests/world_tfds_test.py does this for tiny):

  GrJaxWorld(config="tiny_logs", data_dir=DIR).download_and_prepare()

or from the command line with gr_jax/data/tfds/build.py, which stands in for
`tfds build` (tensorflow-datasets 4.9.10's CLI imports apache_beam at startup):

  python -m gr_jax.data.tfds.build gr_jax_world/tiny_logs --data_dir=DIR

Writing runs at about 3k examples per second on one CPU core, so medium (1M
items, 1M requests) takes several minutes per table on top of generation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from gr_jax.data import schema
from gr_jax.data.tfds import features as contract_features
from gr_jax.data.world import simulator as world_lib

TABLES = ("catalog", "logs")
CATALOG_SPLIT = "catalog"


@dataclasses.dataclass(eq=False)
class WorldBuilderConfig(tfds.core.BuilderConfig):
  """Which world and which of its two tables.

  Attributes:
    preset: a world preset name (world_lib.PRESET_NAMES).
    table: 'catalog' or 'logs'.
    overrides: (WorldConfig field, value) pairs applied over the preset.
  """

  preset: str = "tiny"
  table: str = "logs"
  overrides: tuple[tuple[str, Any], ...] = ()

  def world_config(self) -> world_lib.WorldConfig:
    return world_lib.world_preset(self.preset, **dict(self.overrides))


def world_builder_config(preset: str, table: str, **overrides) -> WorldBuilderConfig:
  """A builder config for a preset world with knob overrides.

  Args:
    preset: world preset name.
    table: 'catalog' or 'logs'.
    **overrides: WorldConfig fields to change, e.g. title_noise=0.5.

  Returns:
    The config, named '<preset>_<table>' plus '-<field>_<value>' per override.

  Raises:
    ValueError: unknown table, preset or WorldConfig field, or a bad value.
  """
  if table not in TABLES:
    raise ValueError(f"world_builder_config: table '{table}' not in {TABLES}")
  world_lib.world_preset(preset, **overrides)  # validates names and values now
  items = tuple(sorted(overrides.items()))
  name = f"{preset}_{table}" + "".join(f"-{key}_{value}" for key, value in items)
  description = f"World preset '{preset}', {table} table" + (
    f", overrides {dict(items)}" if items else ""
  )
  return WorldBuilderConfig(
    name=name, description=description, preset=preset, table=table, overrides=items
  )


class GrJaxWorld(tfds.core.GeneratorBasedBuilder):
  """The built-in simulated e-commerce world: catalog and search logs."""

  name = "gr_jax_world"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    world_builder_config(preset, table) for preset in world_lib.PRESET_NAMES for table in TABLES
  ]
  DEFAULT_CONFIG_NAME = "tiny_logs"

  @tfds.core.utils.classproperty
  @classmethod
  def url_infos(cls) -> None:
    # Nothing is downloaded, so there is no checksums file to look up (the
    # lookup also needs the optional `importlib_resources` package).
    return None

  def _info(self) -> tfds.core.DatasetInfo:
    # Built directly (not dataset_info_from_configs): the builder lives outside
    # a registered TFDS dataset module, so there are no metadata files to read.
    config = self.builder_config
    world_config = config.world_config()
    features = (
      contract_features.catalog_features(np.int32, world_config.latent_dim)
      if config.table == "catalog"
      else contract_features.log_features(np.int32, world_config.latent_dim)
    )
    metadata = tfds.core.MetadataDict(world_config=dataclasses.asdict(world_config))
    return tfds.core.DatasetInfo(
      builder=self,
      description=(
        "Seeded simulated e-commerce world (gr_jax/data/world/simulator.py documents the "
        f"generative model). {config.description}."
      ),
      features=features,
      disable_shuffling=True,
      metadata=metadata,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # everything is simulated
    world = world_lib.generate_world(self.builder_config.world_config())
    if self.builder_config.table == "catalog":
      return {CATALOG_SPLIT: self._generate_examples(world, CATALOG_SPLIT)}
    return {split: self._generate_examples(world, split) for split in schema.SPLITS}

  def _generate_examples(self, world: world_lib.World, split: str):
    """Yields (key, example): items by id, or one split's requests by time."""
    if split == CATALOG_SPLIT:
      yield from contract_features.catalog_examples(world.catalog, with_features=True)
    else:
      yield from contract_features.log_examples(
        world.logs.split_rows(split), np.int32, with_features=True
      )
