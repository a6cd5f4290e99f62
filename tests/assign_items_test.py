"""The daily-update job and the two-step tokenizer variant, on the tiny world."""

import os
import re

import numpy as np
import pytest

from gr_jax import errors, gin_utils
from gr_jax import workdir as paths
from gr_jax.sid import tables

# The module fixture builds a world and trains two tokenizers: tens of seconds.
pytestmark = pytest.mark.slow

TINY = [
  "prepare_data.preset = 'tiny'",
  "CODEBOOK_SIZES = (64, 8, 8)",
  "TrainerConfig.progress_bar = False",
  "TrainerConfig.num_steps = 30",
  "train_tokenizer.batch_size = 128",
]


def _job(workdir, files, bindings=()):
  return gin_utils.run_in_process(workdir, files, [*TINY, *bindings])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  root = tmp_path_factory.mktemp("assign")
  _job(root, ["runs/data.gin"])
  _job(root, ["runs/tokenizer.gin", "sid/cq_sid.gin"], ["train_tokenizer.name = 'cq_sid'"])
  _job(
    root,
    ["runs/tokenizer.gin", "sid/cq_sid_two_step.gin"],
    ["train_tokenizer.name = 'two_step'", "train_tokenizer.two_tower_steps = 20"],
  )
  return root


def _new_items_file(workdir, rows, **override):
  catalog, _ = paths.load_data(str(workdir))
  arrays = {"features": catalog.features[rows], "category_id": catalog.category_id[rows]}
  arrays.update(override)
  path = os.path.join(str(workdir), f"new_{len(os.listdir(str(workdir)))}.npz")
  np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
  return path


@pytest.mark.parametrize("name", ["cq_sid", "two_step"])
def test_reassigning_catalog_items_keeps_their_codes_and_existing_sids(workdir, name):
  before = tables.load_sid_artefacts(paths.sid_dir(str(workdir), name))
  rows = np.arange(0, 200, 5)
  new_items = _new_items_file(workdir, rows)
  stats = _job(
    workdir,
    ["runs/assign_items.gin"],
    [
      f"assign_items.name = '{name}'",
      f"assign_items.new_items = '{new_items}'",
      f"assign_items.output_name = '{name}_daily'",
    ],
  )
  after = tables.load_sid_artefacts(paths.sid_dir(str(workdir), f"{name}_daily"))
  num_items = before.tables.item_sid.shape[0]
  assert stats["first_new_item_id"] == num_items
  assert stats["share_own_codes_existed"] == 1.0
  new_sid = np.load(os.path.join(paths.sid_dir(str(workdir), f"{name}_daily"), "new_item_sid.npy"))
  # Old items keep their SIDs; new items get their own codes back and an existing SID.
  np.testing.assert_array_equal(after.tables.item_sid[:num_items], before.tables.item_sid)
  np.testing.assert_array_equal(after.tables.item_sid[num_items:], new_sid)
  np.testing.assert_array_equal(new_sid[:, :-1], before.tables.item_sid[rows, :-1])
  np.testing.assert_array_equal(after.tables.sids, before.tables.sids)
  for offset, sid in enumerate(new_sid):
    assert num_items + offset in tables.items_for_sids(after.tables, sid[None])[0]
  assert after.diagnostics["incremental_updates"][-1]["num_new_items"] == len(rows)
  assert (after.input_encoder is not None) == (name == "two_step")
  assert after.diagnostics["encoder"] == ("two_step" if name == "two_step" else "joint")


def test_default_output_updates_in_place(workdir):
  _job(
    workdir,
    ["runs/tokenizer.gin", "sid/rqvae.gin"],
    ["train_tokenizer.name = 'inplace'", "TrainerConfig.num_steps = 10"],
  )
  before = tables.load_sid_artefacts(paths.sid_dir(str(workdir), "inplace"))
  # Two files, the first given twice: its rerun adds nothing.
  files = [_new_items_file(workdir, np.arange(7)), _new_items_file(workdir, np.arange(7, 14))]
  for new_items in (files[0], files[0], files[1]):
    _job(
      workdir,
      ["runs/assign_items.gin"],
      ["assign_items.name = 'inplace'", f"assign_items.new_items = '{new_items}'"],
    )
  after = tables.load_sid_artefacts(paths.sid_dir(str(workdir), "inplace"))
  assert after.tables.item_sid.shape[0] == before.tables.item_sid.shape[0] + 14
  assert [u["first_new_item_id"] for u in after.diagnostics["incremental_updates"]] == [
    before.tables.item_sid.shape[0],
    before.tables.item_sid.shape[0] + 7,
  ]


@pytest.mark.parametrize(
  "override, message",
  [
    ({"features": None}, "field 'features' missing"),
    ({"features": np.zeros((3, 5), np.float32)}, "has 5 columns"),
    ({"features": np.full((3, 64), np.nan, np.float32)}, "row 0: field 'features' holds NaN"),
    ({"category_id": np.zeros(2, np.int32)}, "field 'category_id' must be an int [3]"),
  ],
)
def test_bad_new_items_name_file_and_field_and_write_nothing(workdir, override, message):
  new_items = _new_items_file(workdir, np.arange(3), **override)
  with pytest.raises(errors.UserError, match=re.escape(message)) as error:
    _job(
      workdir,
      ["runs/assign_items.gin"],
      [
        "assign_items.name = 'cq_sid'",
        f"assign_items.new_items = '{new_items}'",
        "assign_items.output_name = 'never_written'",
      ],
    )
  assert new_items in str(error.value)
  assert not os.path.exists(paths.sid_dir(str(workdir), "never_written"))


def test_unknown_encoder_is_a_user_error(tmp_path):
  with pytest.raises(errors.UserError, match="train_tokenizer.encoder must be one of"):
    _job(
      tmp_path,
      ["runs/tokenizer.gin", "sid/cq_sid.gin"],
      ["train_tokenizer.name = 'x'", "train_tokenizer.encoder = 'three_step'"],
    )
