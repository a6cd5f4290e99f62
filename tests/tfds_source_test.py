"""prepare_data from a TFDS builder (`prepare_data.source = 'tfds'`).

The builder is defined here, as a user would write it (docs/own_data.md): a module
outside gr_jax that reads two JSON-lines files from TFDS's manual directory, imported
through `prepare_data.tfds_module`. Jobs run in-process through the same gin path as
`python -m gr_jax.main`; one test runs the entry point itself.
"""

import importlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import PYTHON, REPO_ROOT, python_env

from gr_jax import errors, gin_utils
from gr_jax import workdir as workdir_lib
from gr_jax.data import schema
from gr_jax.data.tfds import source

MODULE = "gr_jax_test_shop_builders"
NAME = "gr_jax_test_shop"
BUILDER_SOURCE = textwrap.dedent('''
  """A shop's catalog and search logs as a gr_jax contract builder."""
  import json

  import numpy as np
  import tensorflow_datasets as tfds

  SPLITS = ("train", "valid", "test")


  class GrJaxTestShop(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="catalog", description="One row per item."),
      tfds.core.BuilderConfig(name="logs", description="One row per search request."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put items.jsonl and requests.jsonl in the manual dir."

    def _info(self):
      if self.builder_config.name == "catalog":
        features = {
          "item_id": np.int64,
          "title": tfds.features.Text(),
          "category_path": tfds.features.Sequence(tfds.features.Text()),
          "category_id": np.int64,
          "brand": tfds.features.Text(),
          "efficiency_score": np.float32,
        }
      else:
        ids = tfds.features.Sequence(np.int64)
        features = {
          "request_id": np.int64,
          "user_id": np.int64,
          "user_profile": tfds.features.Tensor(shape=(2,), dtype=np.int64),
          "recent_clicks": ids,
          "query": tfds.features.Text(),
          "exposed": ids,
          "clicked": ids,
          "purchased": ids,
        }
      return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict(features), disable_shuffling=True
      )

    def _split_generators(self, dl_manager):
      folder = dl_manager.manual_dir
      if self.builder_config.name == "catalog":
        return {"catalog": self._generate_examples(folder / "items.jsonl", None)}
      return {s: self._generate_examples(folder / "requests.jsonl", s) for s in SPLITS}

    def _generate_examples(self, path, split):
      with path.open() as f:
        for line in f:
          row = json.loads(line)
          if split is None:
            yield row["item_id"], row
          elif row.pop("split") == split:
            yield row["request_id"], row


  class GrJaxTestShopVectors(GrJaxTestShop):
    """With its own feature vectors (8 seeded values per item and per request)."""

    def _info(self):
      features = dict(super()._info().features)
      name = "features" if self.builder_config.name == "catalog" else "query_features"
      features[name] = tfds.features.Tensor(shape=(8,), dtype=np.float32)
      return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict(features), disable_shuffling=True
      )

    def _generate_examples(self, path, split):
      for key, row in super()._generate_examples(path, split):
        row["features" if split is None else "query_features"] = vector(key)
        yield key, row


  def vector(key):
    return np.random.default_rng(key).normal(size=8).astype(np.float32)


  class GrJaxTestShopNoTitle(GrJaxTestShop):
    def _info(self):
      info = super()._info()
      features = dict(info.features)
      features.pop("title", None)
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))


  class GrJaxTestShopTextScore(GrJaxTestShop):
    def _info(self):
      features = dict(super()._info().features)
      if "efficiency_score" in features:
        features["efficiency_score"] = tfds.features.Text()
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))


  class GrJaxTestShopNoValid(GrJaxTestShop):
    def _split_generators(self, dl_manager):
      splits = super()._split_generators(dl_manager)
      splits.pop("valid", None)
      return splits
''')

NUM_ITEMS, NUM_REQUESTS, NUM_LEAVES = 300, 400, 20
SPLIT_OF = ["train"] * 300 + ["valid"] * 50 + ["test"] * 50


def _shop_rows(seed=0):
  """(items, requests): a few hundred seeded items and requests in the contract."""
  rng = np.random.default_rng(seed)
  words = ["lamp", "desk", "chair", "cable", "glove", "drill", "kettle", "mug", "sock", "tape"]
  leaf = rng.integers(0, NUM_LEAVES, NUM_ITEMS)
  items = [
    {
      "item_id": i,
      "title": f"{words[leaf[i] % 10]} {words[(i * 7) % 10]} model {i}",
      "category_path": ["shop", f"group {leaf[i] // 5}", f"leaf {leaf[i]}"],
      "category_id": int(leaf[i]),
      "brand": "" if i % 4 == 0 else f"brand{i % 9}",
      "efficiency_score": float(np.round(rng.pareto(2.0), 4)),
    }
    for i in range(NUM_ITEMS)
  ]
  requests = []
  for r in range(NUM_REQUESTS):
    exposed = rng.choice(NUM_ITEMS, 6, replace=False).tolist()
    clicked = exposed[: 1 + r % 2]
    target = clicked[0]
    requests.append(
      {
        "request_id": 1000 + r,
        "user_id": r % 60,
        "user_profile": [r % 2, r % 5],
        "recent_clicks": rng.integers(0, NUM_ITEMS, r % 7).tolist(),
        "query": f"{words[leaf[target] % 10]} leaf {leaf[target]}",
        "exposed": exposed,
        "clicked": clicked,
        "purchased": clicked[:1] if r % 3 == 0 else [],
        "split": SPLIT_OF[r],
      }
    )
  return items, requests


def _write_manual(data_dir, items, requests):
  manual = os.path.join(data_dir, "downloads", "manual")
  os.makedirs(manual, exist_ok=True)
  for name, rows in (("items.jsonl", items), ("requests.jsonl", requests)):
    with open(os.path.join(manual, name), "w") as f:
      f.writelines(json.dumps(row) + "\n" for row in rows)
  return str(data_dir)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
  """The builders' module on sys.path, a TFDS data dir with the rows, and the rows."""
  root = tmp_path_factory.mktemp("shop")
  (root / f"{MODULE}.py").write_text(BUILDER_SOURCE)
  sys.path.insert(0, str(root))
  items, requests = _shop_rows()
  yield {
    "module_dir": str(root),
    "data_dir": _write_manual(root / "tfds", items, requests),
    "cache_dir": str(root / "text_cache"),
    "items": items,
    "requests": requests,
  }
  sys.path.remove(str(root))


def _bindings(shop, name=NAME, data_dir=None):
  return [
    "prepare_data.source = 'tfds'",
    f"prepare_data.tfds_name = '{name}'",
    f"prepare_data.tfds_data_dir = '{data_dir or shop['data_dir']}'",
    f"prepare_data.tfds_module = '{MODULE}'",
    f"prepare_data.feature_cache_dir = '{shop['cache_dir']}'",
    "TextEncoderConfig.show_progress = False",
  ]


def _prepare(workdir, bindings):
  return gin_utils.run_in_process(workdir, ["runs/data.gin"], bindings)


def _padded(lists, width, left):
  """[R, width] ids padded with PAD_ITEM on the left (histories) or the right."""
  out = np.full((len(lists), width), schema.PAD_ITEM, np.int64)
  for row, ids in enumerate(lists):
    if ids:
      if left:
        out[row, width - len(ids) :] = ids
      else:
        out[row, : len(ids)] = ids
  return out


def _check_round_trip(catalog, logs, items, requests):
  assert catalog.num_items == NUM_ITEMS
  assert catalog.title.tolist() == [i["title"] for i in items]
  assert catalog.brand.tolist() == [i["brand"] for i in items]
  assert catalog.category_path.tolist() == [tuple(i["category_path"]) for i in items]
  np.testing.assert_array_equal(catalog.category_id, [i["category_id"] for i in items])
  np.testing.assert_allclose(catalog.efficiency_score, [i["efficiency_score"] for i in items])
  assert catalog.num_categories == NUM_LEAVES
  # Requests come back in split order (train, valid, test), each in the builder's order.
  assert logs.request_id.tolist() == [r["request_id"] for r in requests]
  assert [schema.SPLITS[s] for s in logs.split] == [r["split"] for r in requests]
  assert logs.query.tolist() == [r["query"] for r in requests]
  np.testing.assert_array_equal(logs.user_id, [r["user_id"] for r in requests])
  np.testing.assert_array_equal(logs.user_profile, [r["user_profile"] for r in requests])
  histories = [r["recent_clicks"] for r in requests]
  np.testing.assert_array_equal(
    logs.recent_clicks, _padded(histories, source.HISTORY_LEN, left=True)
  )
  for field, width in (("exposed", 6), ("clicked", 2), ("purchased", 1)):
    want = _padded([r[field] for r in requests], width, left=False)
    np.testing.assert_array_equal(getattr(logs, field), want, err_msg=field)


def test_prepare_data_round_trips_the_builders_rows(shop, tmp_path):
  builders = importlib.import_module(MODULE)
  _prepare(tmp_path, _bindings(shop, name=f"{NAME}_vectors"))
  catalog, logs = workdir_lib.load_data(str(tmp_path))
  items, requests = shop["items"], shop["requests"]
  _check_round_trip(catalog, logs, items, requests)
  # The builder's own vectors are the features (no text encoder).
  want = np.stack([builders.vector(i["item_id"]) for i in items])
  np.testing.assert_array_equal(catalog.features, want)
  want = np.stack([builders.vector(r["request_id"]) for r in requests])
  np.testing.assert_array_equal(logs.query_features, want)
  manifest = json.loads((tmp_path / "data" / workdir_lib.TFDS_MANIFEST).read_text())
  assert manifest["split_rows"] == {"train": 300, "valid": 50, "test": 50}
  assert manifest["features"] == "builder"
  record = json.loads((tmp_path / "data" / "stage.json").read_text())
  assert record["finished"]
  assert record["inputs"]["tfds"]["logs"]["full_name"] == f"{NAME}_vectors/logs/1.0.0"
  # A rerun reuses the dataset; the same builder in another data dir is another dataset.
  before = os.path.getmtime(tmp_path / "data" / "catalog.npz")
  _prepare(tmp_path, _bindings(shop, name=f"{NAME}_vectors"))
  assert os.path.getmtime(tmp_path / "data" / "catalog.npz") == before
  other = _write_manual(tmp_path / "other_tfds", items, requests[:-1])
  with pytest.raises(errors.StageMismatchError, match="inputs.tfds.logs.data_dir"):
    _prepare(tmp_path, _bindings(shop, name=f"{NAME}_vectors", data_dir=other))


TINY_PIPELINE = [
  "CODEBOOK_SIZES = (64, 8, 8)",
  "TrainerConfig.progress_bar = False",
  "train_tokenizer.name = 'cq_sid'",
  "train_tokenizer.batch_size = 64",
  "train_sft.tokenizer = 'cq_sid'",
  "train_sft.model = 'tiny'",
  "train_sft.prompt_len = 16",
  "train_sft.batch_size = 32",
  "train_sft.stage_steps = {'i2sid': 10, 'q2sid': 10, 'uq2sid': 10}",
  "text_vocabulary.vocab_size = 200",
  "evaluate.tokenizers = ('cq_sid',)",
  "evaluate.split = 'valid'",
  "evaluate.max_requests = 50",
  "evaluate.beam_sizes = (1, 10)",
  "evaluate.curve_beam_sizes = (1, 10)",
  "evaluate.bootstrap_resamples = 100",
]


@pytest.mark.slow
def test_pipeline_runs_from_a_users_builder(shop, tmp_path):
  """data (MiniLM text features) -> CQ-SID -> SFT -> evaluation, all from the builder."""
  _prepare(tmp_path, _bindings(shop))
  catalog, logs = workdir_lib.load_data(str(tmp_path))
  _check_round_trip(catalog, logs, shop["items"], shop["requests"])
  # No vectors in the builder: MiniLM embeds item texts and queries (unit rows).
  assert catalog.features.shape == (NUM_ITEMS, 384)
  assert logs.query_features.shape == (NUM_REQUESTS, 384)
  np.testing.assert_allclose(np.linalg.norm(catalog.features, axis=1), 1.0, atol=1e-4)
  run = [*_bindings(shop), *TINY_PIPELINE]
  diag = gin_utils.run_in_process(
    tmp_path, ["runs/tokenizer.gin", "sid/cq_sid.gin"], [*run, "TrainerConfig.num_steps = 30"]
  )
  assert diag["num_items"] == NUM_ITEMS and diag["share_level1_equals_category"] == 1.0
  metrics = gin_utils.run_in_process(tmp_path, ["runs/sft.gin"], run)
  assert set(metrics) == {"i2sid", "q2sid", "uq2sid"}
  assert all(np.isfinite(m["loss"]) for m in metrics.values())
  results = gin_utils.run_in_process(tmp_path, ["runs/evaluate.gin"], run)
  curve = results["tokenizers"]["cq_sid"]["stages"]["semantic"]
  assert results["requests"] == 50 and curve[10]["valid_share"] == 1.0
  assert 0.0 <= curve[1]["hitrate"] <= curve[10]["hitrate"] <= 1.0


def test_world_builder_gives_the_world_sources_tables(tmp_path):
  gin_utils.run_in_process(tmp_path / "world", ["runs/data.gin"], ["prepare_data.preset = 'tiny'"])
  tfds_bindings = [
    "prepare_data.source = 'tfds'",
    "prepare_data.tfds_name = 'gr_jax_world/tiny'",
    f"prepare_data.tfds_data_dir = '{tmp_path / 'tfds'}'",
  ]
  _prepare(tmp_path / "tfds_run", tfds_bindings)
  want_catalog, want_logs = workdir_lib.load_data(str(tmp_path / "world"))
  catalog, logs = workdir_lib.load_data(str(tmp_path / "tfds_run"))
  for field in ("title", "brand", "category_path", "category_id", "efficiency_score", "features"):
    np.testing.assert_array_equal(
      getattr(catalog, field), getattr(want_catalog, field), err_msg=field
    )
  # The world's requests are in time order with splits by time, so split order is kept.
  order = np.argsort(want_logs.split, kind="stable")
  want_logs = want_logs.select(order)
  for field in ("request_id", "user_id", "user_profile", "query", "split", "query_features"):
    np.testing.assert_array_equal(getattr(logs, field), getattr(want_logs, field), err_msg=field)
  for field in ("recent_clicks", "exposed", "clicked", "purchased"):
    got, want = getattr(logs, field), getattr(want_logs, field)
    width = max(got.shape[1], want.shape[1])
    side = "left" if field == "recent_clicks" else "right"
    pad = [(0, 0), (width - got.shape[1], 0) if side == "left" else (0, width - got.shape[1])]
    got = np.pad(got, pad, constant_values=schema.PAD_ITEM)
    pad = [(0, 0), (width - want.shape[1], 0) if side == "left" else (0, width - want.shape[1])]
    np.testing.assert_array_equal(got, np.pad(want, pad, constant_values=-1), err_msg=field)


@pytest.mark.parametrize(
  "name,message",
  [
    (
      f"{NAME}_no_title",
      f"{NAME}_no_title/catalog: feature 'title': missing",
    ),
    (
      f"{NAME}_text_score",
      f"{NAME}_text_score/catalog: feature 'efficiency_score': expected float, got text",
    ),
    (f"{NAME}_no_valid", f"{NAME}_no_valid/logs: no split 'valid'"),
    (f"{NAME}/small", f"'{NAME}/small_catalog'.*small_catalog not found"),
  ],
)
def test_builder_mistakes_are_named(shop, tmp_path, name, message):
  with pytest.raises(errors.UserError, match=message):
    _prepare(tmp_path, _bindings(shop, name=name))


def test_bad_row_names_builder_split_row_and_field(shop, tmp_path):
  requests = [dict(r) for r in shop["requests"]]
  requests[303] = dict(requests[303], clicked=[NUM_ITEMS + 5])  # the 4th valid request
  data_dir = _write_manual(tmp_path / "tfds", shop["items"], requests)
  with pytest.raises(errors.UserError) as raised:
    _prepare(tmp_path, _bindings(shop, data_dir=data_dir))
  assert str(raised.value).startswith(
    f"{NAME}/logs split 'valid': row 3: field 'clicked': item id {NUM_ITEMS + 5} is not in"
  )


def test_unknown_builder_is_one_error_line(tmp_path):
  result = subprocess.run(
    [
      PYTHON,
      "-m",
      "gr_jax.main",
      f"--workdir={tmp_path}",
      "--gin_file=runs/data.gin",
      "--gin_bindings=prepare_data.source = 'tfds'",
      "--gin_bindings=prepare_data.tfds_name = 'no_such_shop'",
      f"--gin_bindings=prepare_data.tfds_data_dir = '{tmp_path}'",
    ],
    capture_output=True,
    text=True,
    cwd=REPO_ROOT,
    env=python_env(),
    timeout=300,
  )
  assert result.returncode == 2, result.stderr[-2000:]
  errors_lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
  assert errors_lines == [
    "error: prepare_data.tfds_name: no TFDS builder 'no_such_shop' is registered or built in "
    f"{tmp_path}; import the module that defines it (prepare_data.tfds_module)"
  ]
  assert "Traceback" not in result.stderr


def test_unimportable_module_is_named(tmp_path):
  with pytest.raises(errors.UserError, match="prepare_data.tfds_module: cannot import 'no_mod_x'"):
    _prepare(
      tmp_path,
      [
        "prepare_data.source = 'tfds'",
        f"prepare_data.tfds_name = '{NAME}'",
        "prepare_data.tfds_module = 'no_mod_x'",
      ],
    )
