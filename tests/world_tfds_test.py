"""Tests for the gr_jax_world TFDS builder: build tiny into a tmp data_dir, read back."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from gr_jax.data import schema
from gr_jax.data.tfds import world as world_tfds
from gr_jax.data.world import simulator as world_lib


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def tiny():
  return world_lib.generate_world(world_lib.world_preset("tiny"))


def _read(config, data_dir):
  builder = world_tfds.GrJaxWorld(config=config, data_dir=data_dir)
  builder.download_and_prepare()
  rows = {
    split: list(tfds.as_numpy(builder.as_dataset(split=split))) for split in builder.info.splits
  }
  return builder, rows


def _padded(lists, width):
  out = np.full((len(lists), width), schema.PAD_ITEM, np.int64)
  for row, ids in enumerate(lists):
    out[row, width - len(ids) :] = ids
  return out


def test_configs_cover_every_preset_and_table():
  names = {config.name for config in world_tfds.GrJaxWorld.BUILDER_CONFIGS}
  assert names == {f"{p}_{t}" for p in world_lib.PRESET_NAMES for t in world_tfds.TABLES}
  assert world_tfds.GrJaxWorld.name == "gr_jax_world"


def test_catalog_round_trip(tiny, data_dir):
  builder, rows = _read("tiny_catalog", data_dir)
  assert list(rows) == [world_tfds.CATALOG_SPLIT]
  items = rows[world_tfds.CATALOG_SPLIT]
  catalog = tiny.catalog
  assert len(items) == catalog.num_items
  assert [int(r["item_id"]) for r in items] == list(range(catalog.num_items))
  assert [r["title"].decode() for r in items] == list(catalog.title)
  assert [r["brand"].decode() for r in items] == list(catalog.brand)
  assert [tuple(s.decode() for s in r["category_path"]) for r in items] == list(
    catalog.category_path
  )
  np.testing.assert_array_equal([r["category_id"] for r in items], catalog.category_id)
  np.testing.assert_array_equal([r["efficiency_score"] for r in items], catalog.efficiency_score)
  np.testing.assert_array_equal(np.stack([r["features"] for r in items]), catalog.features)
  assert builder.info.metadata["world_config"]["num_items"] == catalog.num_items


def test_logs_round_trip(tiny, data_dir):
  builder, rows = _read("tiny_logs", data_dir)
  assert list(rows) == list(schema.SPLITS)
  for split in schema.SPLITS:
    logs = tiny.logs.split_rows(split)
    requests = rows[split]
    assert builder.info.splits[split].num_examples == logs.num_requests == len(requests)
    np.testing.assert_array_equal([r["request_id"] for r in requests], logs.request_id)
    np.testing.assert_array_equal([r["user_id"] for r in requests], logs.user_id)
    np.testing.assert_array_equal(
      np.stack([r["user_profile"] for r in requests]), logs.user_profile
    )
    assert [r["query"].decode() for r in requests] == list(logs.query)
    assert {int(r["split"]) for r in requests} == {schema.SPLITS.index(split)}
    np.testing.assert_array_equal(
      np.stack([r["query_features"] for r in requests]), logs.query_features
    )
    width = tiny.config.history_length
    np.testing.assert_array_equal(
      _padded([r["recent_clicks"] for r in requests], width), logs.recent_clicks
    )
    for field in ("exposed", "clicked", "purchased"):
      stored = [r[field] for r in requests]
      expected = getattr(logs, field)
      assert [len(ids) for ids in stored] == list((expected >= 0).sum(axis=1))
      for ids, row in zip(stored, expected):
        np.testing.assert_array_equal(ids, row[: len(ids)])


def test_override_config_builds_its_own_world(tiny, data_dir):
  config = world_tfds.world_builder_config("tiny", "catalog", title_noise=0.9)
  assert config.name == "tiny_catalog-title_noise_0.9"
  builder, rows = _read(config, data_dir)
  titles = [r["title"].decode() for r in rows[world_tfds.CATALOG_SPLIT]]
  assert len(titles) == tiny.catalog.num_items
  assert titles != list(tiny.catalog.title)
  assert builder.info.metadata["world_config"]["title_noise"] == 0.9


def test_bad_builder_config_names_the_argument():
  with pytest.raises(ValueError, match="table"):
    world_tfds.world_builder_config("tiny", "users")
  with pytest.raises(ValueError, match="not_a_knob"):
    world_tfds.world_builder_config("tiny", "logs", not_a_knob=3)
