"""Items added after the dataset: they enter the catalog every later job reads."""

import json
import os
import re

import numpy as np
import pytest

from gr_jax import errors, gin_utils
from gr_jax import workdir as workdir_lib
from gr_jax.data import additions, schema
from gr_jax.serving import service

TINY = [
  "prepare_data.preset = 'tiny'",
  "CODEBOOK_SIZES = (64, 8, 8)",
  "TrainerConfig.progress_bar = False",
  "TrainerConfig.log_every = 10",
  "train_sft.model = 'tiny'",
  "train_sft.prompt_len = 16",
  "train_sft.batch_size = 32",
  "train_sft.stages = ('q2sid',)",
  "train_sft.stage_steps = {'q2sid': 10}",
  "text_vocabulary.vocab_size = 300",
]


def _base() -> schema.Catalog:
  return schema.Catalog(
    title=np.array(["a", "b", "c"], object),
    category_path=np.array([("root", "x"), ("root", "y"), ("root", "x")] + [None], object)[:-1],
    category_id=np.array([0, 1, 0], np.int32),
    brand=np.array(["p", "q", "p"], object),
    efficiency_score=np.array([0.1, 0.9, 0.5], np.float32),
    category_names=np.array(["x", "y"], object),
    features=np.zeros((3, 4), np.float32),
  )


def _write(path, **fields):
  np.savez(path, **fields)
  return str(path)


def test_new_items_get_catalog_fields_paths_and_defaults(tmp_path):
  path = _write(
    tmp_path / "new.npz",
    features=np.ones((3, 4), np.float32),
    category_id=np.array([1, -1, 0]),
    title=np.array(["red lamp", "", "blue cup"]),
  )
  rows = additions.read_new_items(path, _base())
  assert rows.num_items == 3
  assert list(rows.category_path) == [("root", "y"), (), ("root", "x")]
  assert list(rows.title) == ["red lamp", "", "blue cup"]
  assert list(rows.brand) == ["", "", ""]
  np.testing.assert_array_equal(rows.efficiency_score, np.zeros(3, np.float32))
  joined = additions.concatenate(_base(), rows)
  assert joined.num_items == 6 and list(joined.category_names) == ["x", "y"]
  assert joined.features.shape == (6, 4)


@pytest.mark.parametrize(
  "fields, message",
  [
    ({"category_id": np.array([0, 2])}, "row 1: field 'category_id' is 2"),
    ({"title": np.array([1, 2])}, "field 'title' must be a str [2] array"),
    ({"efficiency_score": np.array([0.5, np.inf])}, "row 1: field 'efficiency_score'"),
  ],
)
def test_bad_new_item_fields_are_named(tmp_path, fields, message):
  path = _write(tmp_path / "bad.npz", features=np.ones((2, 4), np.float32), **fields)
  with pytest.raises(errors.UserError, match=re.escape(message)) as error:
    additions.read_new_items(path, _base())
  assert path in str(error.value)


def test_ledger_appends_in_order_once_per_file_and_refuses_another_dataset(tmp_path):
  rows = additions.read_new_items(
    _write(tmp_path / "n.npz", features=np.ones((2, 4), np.float32)), _base()
  )
  first, added = additions.add(str(tmp_path), "data:1", 3, rows, "fp1", "n.npz")
  assert (first.first_id, first.count, added) == (3, 2, True)
  again, added = additions.add(str(tmp_path), "data:1", 3, rows, "fp1", "n.npz")
  assert again == first and not added
  second, _ = additions.add(str(tmp_path), "data:1", 3, rows, "fp2", "m.npz")
  assert second.first_id == 5
  loaded = additions.load(str(tmp_path), "data:1")
  assert loaded.rows.num_items == 4 and [f.fingerprint for f in loaded.files] == ["fp1", "fp2"]
  with pytest.raises(errors.ArtefactError, match="extend another dataset"):
    additions.load(str(tmp_path), "data:2")


# ------------------------------------------------------------------ through later jobs


def _job(workdir, files, bindings=()):
  return gin_utils.run_in_process(workdir, files, [*TINY, *bindings])


def _assign(workdir, name, new_items):
  return _job(
    workdir,
    ["runs/assign_items.gin"],
    [f"assign_items.name = '{name}'", f"assign_items.new_items = '{new_items}'"],
  )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A tiny run with CQ-SID + its generator and RQ-VAE, then 40 items added to CQ-SID."""
  root = tmp_path_factory.mktemp("additions")
  _job(root, ["runs/data.gin"])
  for name, sid_file in (("cq_sid", "sid/cq_sid.gin"), ("rqvae", "sid/rqvae.gin")):
    _job(
      root,
      ["runs/tokenizer.gin", sid_file],
      [f"train_tokenizer.name = '{name}'", "TrainerConfig.num_steps = 20"],
    )
  _job(root, ["runs/sft.gin"], ["train_sft.tokenizer = 'cq_sid'"])
  catalog, _ = workdir_lib.load_data(str(root))
  # Copies of the 40 items clicked most often: same features, so CQ-SID gives each
  # one its original's SID, and every beam that reaches the original reaches the copy.
  _, logs = workdir_lib.load_data(str(root))
  clicked = logs.clicked[logs.clicked >= 0]
  popular = np.argsort(-np.bincount(clicked, minlength=catalog.num_items), kind="stable")[:40]
  new_items = _write(
    root / "new_items.npz",
    features=catalog.features[popular],
    category_id=catalog.category_id[popular],
    title=np.array([f"new {t}" for t in catalog.title[popular]]),
    efficiency_score=catalog.efficiency_score[popular],
  )
  stats = _assign(root, "cq_sid", new_items)
  return {
    "workdir": str(root),
    "num_base": catalog.num_items,
    "popular": popular,
    "new_items": new_items,
    "stats": stats,
  }


@pytest.mark.slow
def test_added_items_enter_the_catalog_and_the_sid_tables(run):
  catalog, _ = workdir_lib.load_data(run["workdir"])
  n = run["num_base"]
  assert catalog.num_items == n + 40 and run["stats"]["first_new_item_id"] == n
  assert catalog.title[n].startswith("new ")
  np.testing.assert_array_equal(catalog.features[n:], catalog.features[run["popular"]])
  sid = workdir_lib.load_sid(run["workdir"], "cq_sid", catalog.num_items)
  np.testing.assert_array_equal(
    sid.tables.item_sid[n:, :-1], sid.tables.item_sid[run["popular"], :-1]
  )


@pytest.mark.slow
def test_evaluation_and_serving_reach_the_added_items(run):
  workdir, n = run["workdir"], run["num_base"]
  _job(
    workdir,
    ["runs/evaluate.gin"],
    [
      "evaluate.tokenizers = ('cq_sid',)",
      "evaluate.kinds = ('semantic',)",
      "evaluate.beam_sizes = (1, 8)",
      "evaluate.max_requests = 50",
      "evaluate.split = 'test'",
    ],
  )
  with open(os.path.join(workdir_lib.eval_dir(workdir), "test", "metrics.json")) as f:
    assert json.load(f)
  api = service.load_service(workdir, "cq_sid", "q2sid", beam_sizes=(8,), batch_size=8)
  _, logs = workdir_lib.load_data(workdir)
  queries = [str(q) for q in logs.query[:32]]
  results = api.retrieve([api.parse({"query": q, "beam_size": 8}) for q in queries])
  reached = {i.item for r in results for i in r.items}
  assert any(item >= n for item in reached)


@pytest.mark.slow
def test_a_tokenizer_without_the_added_items_is_refused_until_assigned(run):
  workdir, n = run["workdir"], run["num_base"]
  catalog, _ = workdir_lib.load_data(workdir)
  with pytest.raises(errors.ArtefactError, match="assign them to tokenizer 'rqvae'"):
    workdir_lib.load_sid(workdir, "rqvae", catalog.num_items)
  stats = _assign(workdir, "rqvae", run["new_items"])
  assert stats["first_new_item_id"] == n  # the same ids for every tokenizer
  assert workdir_lib.load_data(workdir)[0].num_items == n + 40  # not added twice
  assert workdir_lib.load_sid(workdir, "rqvae", n + 40).tables.item_sid.shape[0] == n + 40
  assert _assign(workdir, "rqvae", run["new_items"])["reused"]  # a rerun changes nothing
