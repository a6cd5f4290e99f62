"""Hostile input, one case per class: each ends in one named `error:` line (exit 2 through
the entry point) and leaves the work directory unchanged or resumable.

Subprocess cases go through `python -m gr_jax.main`; the rest run the same code in
process (gin_utils.parse / run_in_process and the loaders the jobs call).
"""

import json
import os
import subprocess

import gin
import numpy as np
import pytest
from conftest import PYTHON, REPO_ROOT, python_env

from gr_jax import errors, fingerprint, gin_utils
from gr_jax import workdir as workdir_lib
from gr_jax.sid import rqvae, tables

EXAMPLE = [
  "--gin_file=runs/example_regression.gin",
  "--gin_bindings=TrainerConfig.progress_bar = False",
]


def _main(workdir, *args):
  proc = subprocess.run(
    [PYTHON, "-m", "gr_jax.main", f"--workdir={workdir}", *args],
    env=python_env(),
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  errors_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
  return proc.returncode, errors_lines, proc.stderr


def _assert_one_line(rc, lines, stderr, *fragments):
  assert rc == 2, stderr[-2000:]
  assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


def _listing(root):
  """{relative path: (size, mtime)} of every file under `root` (unchanged-ness check)."""
  out = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      out[os.path.relpath(path, root)] = (os.path.getsize(path), os.path.getmtime(path))
  return out


# ------------------------------------------------------------- through the entry point


def test_gin_syntax_error_is_one_line_and_writes_nothing(tmp_path):
  bad = tmp_path / "bad.gin"
  bad.write_text("run.job = @train_example\nTrainerConfig.num_steps = (3\n")
  rc, lines, stderr = _main(tmp_path / "w", f"--gin_file={bad}")
  _assert_one_line(rc, lines, stderr, f"gin file '{bad}'", "unbalanced brackets")
  assert not os.path.exists(tmp_path / "w")


@pytest.mark.slow
def test_out_of_range_and_wrong_type_settings_stop_before_anything_runs(tmp_path):
  rc, lines, stderr = _main(
    tmp_path / "w", *EXAMPLE, "--gin_bindings=regression_batches.batch_size = 0"
  )
  _assert_one_line(rc, lines, stderr, "regression_batches.batch_size = 0: must be an integer >= 1")
  assert not os.path.exists(tmp_path / "w")
  rc, lines, stderr = _main(
    tmp_path / "w", *EXAMPLE, "--gin_bindings=TrainerConfig.num_steps = '20'"
  )
  _assert_one_line(rc, lines, stderr, "TrainerConfig.num_steps = '20': must be of type int")


@pytest.mark.slow
def test_diverging_run_saves_nothing_non_finite(tmp_path):
  rc, lines, stderr = _main(tmp_path, *EXAMPLE, "--gin_bindings=make_schedule.learning_rate = 1e30")
  _assert_one_line(rc, lines, stderr, "training diverged", "NaN/Inf", "a rerun starts afresh")
  assert not [d for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]
  assert not os.path.exists(tmp_path / "metrics.json")


@pytest.mark.slow
def test_changed_request_to_a_finished_stage_is_refused_and_same_request_reused(tmp_path):
  data = ["--gin_file=runs/data.gin", "--gin_bindings=prepare_data.preset = 'tiny'"]
  rc, _, stderr = _main(tmp_path, *data)
  assert rc == 0, stderr[-2000:]
  before = _listing(tmp_path / "data")
  rc, _, stderr = _main(tmp_path, *data)
  assert rc == 0 and "reusing the dataset" in stderr
  rc, lines, stderr = _main(tmp_path, "--gin_file=runs/data.gin")  # preset 'small'
  _assert_one_line(
    rc, lines, stderr, "config.preset: 'tiny' -> 'small'", "--gin_bindings='run.redo = True'"
  )
  assert _listing(tmp_path / "data") == before


# ------------------------------------------------------------------------ gin, in process


@pytest.mark.parametrize(
  "text, fragment",
  [
    ("TrainerConfig.num_steps = (3\n", "unbalanced brackets"),
    ("TrainerConfig.num_steps = 'abc\n", "Unable to parse value"),
    ("TrainerConfig.num_steps = foo bar\n", "Failed to parse token 'foo'"),
    ("run.job = @no_such_job\n", "No configurable matching reference '@no_such_job'"),
    ("import no_such_module\n", "No module named 'no_such_module'"),
    ("include 'nope.gin'\n", "cannot be read"),
    ("train_sft.no_knob = 3\n", "doesn't have a parameter named 'no_knob'"),
    ("TrainerConfig.num_steps = %UNDEFINED\n", "macro %UNDEFINED is used but never bound"),
  ],
)
def test_every_gin_parse_error_is_one_named_line(tmp_path, text, fragment):
  path = tmp_path / "c.gin"
  path.write_text(text)
  gin.clear_config()
  try:
    with pytest.raises(errors.GinConfigError) as error:
      gin_utils.parse([str(path)], [])
  finally:
    gin.clear_config()
  message = str(error.value)
  assert fragment in message and "\n" not in message
  assert message.startswith(("gin file", "gin config"))


@pytest.mark.parametrize(
  "bindings, fragment",
  [
    (["evaluate.beam_sizes = 10"], "evaluate.beam_sizes = 10: must be of type tuple[int, ...]"),
    (["evaluate.beam_sizes = (1, 0)"], "must be a tuple of integers >= 1 (got 0)"),
    (["evaluate.max_requests = 0"], "evaluate.max_requests = 0: must be an integer >= 1"),
    (["B = 0", "train_sft.batch_size = %B"], "train_sft.batch_size = 0"),
    (["train_sft.stage_steps = {'i2sid': 0}"], "entry 'i2sid': must be an integer >= 1"),
    (["train_sft.tokenizer = 3"], "train_sft.tokenizer = 3: must be of type str"),
    (["train_rl.eval_beam_sizes = ()"], "must be a non-empty tuple of integers >= 1"),
    (["train_tokenizer.batch_size = -1"], "train_tokenizer.batch_size = -1"),
    (["TrainerConfig.log_every = 0"], "TrainerConfig.log_every = 0"),
  ],
)
def test_settings_validated_at_parse_time(bindings, fragment):
  gin.clear_config()
  try:
    with pytest.raises(errors.GinConfigError, match="^gin binding ") as error:
      gin_utils.parse([], ["run.job = @train_example", *bindings])
  finally:
    gin.clear_config()
  assert fragment in str(error.value)


# -------------------------------------------------------------------- stage records


def _stage(folder, **config):
  return fingerprint.Stage("stage x", str(folder), config, {"data": "d1"})


def test_changed_request_is_refused_listing_differences_and_redo_clears(tmp_path):
  folder = tmp_path / "stage"
  first = _stage(folder, steps=10, preset="tiny")
  assert not first.reuse(legacy_finished=False)
  (folder / "weights").write_text("w")
  first.finish()
  assert _stage(folder, steps=10, preset="tiny").reuse(legacy_finished=False)
  before = _listing(folder)
  with pytest.raises(errors.StageMismatchError) as error:
    _stage(folder, steps=20, preset="tiny").reuse(legacy_finished=False)
  assert "config.steps: 10 -> 20" in str(error.value) and "run.redo = True" in str(error.value)
  assert "preset" not in str(error.value)
  assert _listing(folder) == before  # untouched: the finished stage is still usable
  with fingerprint.redo(True):
    assert not _stage(folder, steps=20, preset="tiny").reuse(legacy_finished=False)
  assert not (folder / "weights").exists()
  assert json.loads((folder / "stage.json").read_text())["finished"] is False


def test_resuming_an_unfinished_stage_with_other_settings_is_refused(tmp_path):
  folder = tmp_path / "stage"
  assert not _stage(folder, steps=10).reuse(legacy_finished=False)  # killed before finishing
  assert not _stage(folder, steps=10).reuse(legacy_finished=False)  # same request: resumes
  with pytest.raises(errors.StageMismatchError, match=r"\(unfinished\).*config.steps: 10 -> 11"):
    _stage(folder, steps=11).reuse(legacy_finished=False)


def _fake_workdir(root, num_items=6):
  """data/ files (fingerprinted only) and a finished tokenizer 'tok' made from them."""
  data = root / "data"
  data.mkdir(parents=True)
  (data / "catalog.npz").write_bytes(b"catalog v1")
  (data / "logs.npz").write_bytes(b"logs v1")
  item_sid = np.stack([np.arange(num_items) % 4, np.zeros(num_items, int)], 1)
  sid_dir = workdir_lib.sid_dir(str(root), "tok")
  sid_tables = tables.build_sid_tables(item_sid, (4, 2))
  tables.write_sid_artefacts(sid_dir, sid_tables, {}, {}, rqvae.TokenizerConfig())
  record = fingerprint.Stage("tokenizer 'tok'", sid_dir, {}, {"data": _data_fp(root)})
  record.finish()
  return sid_dir


def _data_fp(root):
  return workdir_lib.data_fingerprint(str(root))


def test_consumers_refuse_unfinished_or_mismatched_generators(tmp_path):
  _fake_workdir(tmp_path)
  root = str(tmp_path)
  stage = workdir_lib.sft_stage(root, "tok", "q2sid", {"steps": 5}, None)
  stage.reuse(legacy_finished=False)  # started, then SIGTERMed: never finished
  with pytest.raises(errors.ArtefactError, match="SFT stage tok/q2sid .* did not finish"):
    workdir_lib.require_generator(root, "tok", "q2sid")
  stage.finish()
  workdir_lib.require_generator(root, "tok", "q2sid")
  # The tokenizer is retrained: the generator was trained on other SIDs.
  sid_dir = workdir_lib.sid_dir(root, "tok")
  fingerprint.Stage("tokenizer 'tok'", sid_dir, {"x": 1}, {"data": _data_fp(root)}).finish()
  with pytest.raises(errors.StageMismatchError, match="made from another sid"):
    workdir_lib.require_generator(root, "tok", "q2sid")


def test_sid_artefacts_of_another_catalog_or_data_are_refused(tmp_path):
  _fake_workdir(tmp_path)
  root = str(tmp_path)
  assert workdir_lib.load_sid(root, "tok", num_items=6).tables.item_sid.shape == (6, 2)
  with pytest.raises(errors.ArtefactError, match="6 items, but data/catalog.npz has 9"):
    workdir_lib.load_sid(root, "tok", num_items=9)
  (tmp_path / "data" / "catalog.npz").write_bytes(b"catalog v2")
  with pytest.raises(errors.StageMismatchError, match="tokenizer 'tok' .* another data"):
    workdir_lib.load_sid(root, "tok", num_items=6)


def test_truncated_artefacts_are_named(tmp_path):
  sid_dir = _fake_workdir(tmp_path)
  path = os.path.join(sid_dir, "item_sid.npy")
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(errors.ArtefactError, match="unreadable, truncated or corrupt"):
    workdir_lib.load_sid(str(tmp_path), "tok")
  catalog = tmp_path / "data" / "catalog.npz"
  np.savez(catalog, item_id=np.arange(1000))
  catalog.write_bytes(catalog.read_bytes()[:300])
  with pytest.raises(errors.ArtefactError, match=f"{catalog}: unreadable"):
    workdir_lib.load_data(str(tmp_path))


def test_artefact_folders_get_the_users_normal_permissions(tmp_path):
  sid_dir = _fake_workdir(tmp_path)
  umask = os.umask(0)
  os.umask(umask)
  assert os.stat(sid_dir).st_mode & 0o777 == 0o777 & ~umask
  assert os.stat(os.path.join(sid_dir, "item_sid.npy")).st_mode & 0o777 == 0o666 & ~umask


# ------------------------------------------------------------------------- data files


def _cut_last_line(path):
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: data.rstrip(b"\n").rfind(b"\t") + 2])  # mid-field, no final newline


def test_truncated_data_file_is_refused_or_skipped_and_reported(tmp_path):
  from amazon_test import write_fixture

  from gr_jax.data.amazon import prepare, reader

  data_dir = write_fixture(tmp_path / "raw")
  inter = os.path.join(data_dir, reader.UnisrecFiles("Scientific").inter("test"))
  _cut_last_line(inter)
  with pytest.raises(errors.DataContractError, match="no final newline: the file looks truncated"):
    reader.load_amazon(data_dir)
  _, logs, info = reader.load_amazon(data_dir, on_error="skip")
  assert info.skip_report.counts["truncated last line"] == 1
  assert info.split_rows["test"] == 1
  prepare.write_load_report(str(tmp_path / "data"), info)
  report = json.loads((tmp_path / "data" / prepare.SKIP_REPORT).read_text())
  assert report["counts"] == {"truncated last line": 1}
  assert "Scientific.test.inter: row 3: field 'line'" in report["dropped"]["truncated last line"][0]
  with np.load(tmp_path / "data" / prepare.ID_MAPS) as maps:
    assert len(maps["item_asin"]) == info.num_items and len(maps["user_key"]) == info.num_users


def test_one_hostile_row_cannot_blow_up_the_catalog(tmp_path):
  from gr_jax.data import schema

  n = 2000
  titles = np.array([f"item {i}" for i in range(n)], dtype=object)
  titles[7] = "x" * 1_000_000  # one hostile row
  catalog = schema.Catalog(
    title=titles,
    category_path=np.array([("a", "b")] * n + [None], dtype=object)[:-1],
    category_id=np.zeros(n, np.int32),
    brand=np.array(["é"] * n, dtype=object),
    efficiency_score=np.ones(n, np.float32),
    category_names=np.array(["a > b"], dtype=object),
  )
  path = str(tmp_path / "catalog.npz")
  schema.save_catalog(catalog, path)
  assert os.path.getsize(path) < 100_000  # fixed-width strings: 2000 x 4 MB
  loaded = schema.load_catalog(path)
  assert len(loaded.title[7]) == schema.MAX_TEXT_CHARS
  assert loaded.title[3] == "item 3" and loaded.brand[0] == "é"
  assert loaded.category_path[5] == ("a", "b")


def test_empty_dataset_is_named():
  from gr_jax.data import schema
  from gr_jax.eval import protocol
  from gr_jax.train import batching

  with pytest.raises(errors.EmptyDatasetError, match="no training examples"):
    batching.epoch_batches({"tokens": np.zeros((0, 4), np.int32)}, batch_size=8)
  logs = schema.SearchLogs(
    request_id=np.arange(2),
    user_id=np.zeros(2, np.int32),
    user_profile=np.zeros((2, 2), np.int32),
    recent_clicks=np.full((2, 1), schema.PAD_ITEM, np.int32),
    query=np.array(["q", "q"], object),
    exposed=np.array([[1], [2]], np.int32),
    clicked=np.array([[1], [2]], np.int32),
    purchased=np.full((2, 1), schema.PAD_ITEM, np.int32),
    split=np.zeros(2, np.int8),  # train only
  )
  with pytest.raises(errors.EmptyDatasetError, match="split 'test' has no request"):
    protocol.sample_requests(logs, "test", 10, seed=0)
