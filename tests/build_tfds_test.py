"""Tests of the beam-free `tfds build` stand-in (gr_jax/data/tfds/build.py)."""

import re
import subprocess

import pytest
import tensorflow_datasets as tfds
from amazon_test import write_fixture
from conftest import PYTHON, REPO_ROOT, python_env

from gr_jax.data.amazon import reader as amazon
from gr_jax.data.tfds import build as build_tfds
from gr_jax.data.tfds import world as world_tfds
from gr_jax.data.world import simulator as world_lib


def _cli(*args):
  env = python_env()
  env.pop("GR_JAX_AMAZON_DIR", None)
  proc = subprocess.run(
    [PYTHON, "-m", "gr_jax.data.tfds.build", *args],
    env=env,
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  return proc.returncode, proc.stdout, proc.stderr


def test_cli_builds_world_and_reads_back(tmp_path):
  data_dir = str(tmp_path / "tfds")
  rc, out, err = _cli("gr_jax_world/tiny_catalog", f"--data_dir={data_dir}")
  assert rc == 0, err
  assert "gr_jax_world/tiny_catalog/1.0.0: built in" in out and "(catalog=1000)" in out
  builder = tfds.builder("gr_jax_world/tiny_catalog", data_dir=data_dir)
  rows = list(tfds.as_numpy(builder.as_dataset(split=world_tfds.CATALOG_SPLIT)))
  catalog = world_lib.generate_world(world_lib.world_preset("tiny")).catalog
  assert [int(r["item_id"]) for r in rows] == list(range(catalog.num_items))
  assert [r["title"].decode() for r in rows] == list(catalog.title)
  # A second build reuses the dataset; --overwrite rebuilds it.
  lines = []
  counts = build_tfds.build(["gr_jax_world/tiny_catalog"], data_dir, echo=lines.append)
  assert counts == {"gr_jax_world/tiny_catalog": {"catalog": 1000}}
  assert "already built" in lines[0]


def test_cli_builds_amazon_from_fixture(tmp_path):
  manual = write_fixture(tmp_path / "manual")
  data_dir = str(tmp_path / "tfds")
  rc, out, err = _cli("amazon_scientific", f"--data_dir={data_dir}", f"--manual_dir={manual}")
  assert rc == 0, err
  catalog, logs, _ = amazon.load_amazon(manual)
  want = {split: logs.split_rows(split).num_requests for split in ("train", "valid", "test")}
  assert f"(catalog={catalog.num_items})" in out
  assert "({})".format(", ".join(f"{s}={n}" for s, n in want.items())) in out
  builder = tfds.builder("amazon_scientific/logs", data_dir=data_dir)
  for split, n in want.items():
    rows = list(tfds.as_numpy(builder.as_dataset(split=split)))
    assert len(rows) == n
  queries = [r["query"].decode() for r in tfds.as_numpy(builder.as_dataset(split="train"))]
  assert queries == list(logs.split_rows("train").query)
  lines = []
  counts = build_tfds.build(
    ["amazon_scientific/catalog"], data_dir, manual, overwrite=True, echo=lines.append
  )
  assert counts == {"amazon_scientific/catalog": {"catalog": catalog.num_items}}
  assert ": built in" in lines[0]


def test_cli_user_mistake_is_one_line_exit_2(tmp_path):
  rc, out, err = _cli("gr_jax_world/huge_catalog", f"--data_dir={tmp_path}")
  assert rc == 2 and out == ""
  assert err.strip().splitlines()[-1] == (
    "error: gr_jax_world has no config 'huge_catalog'; valid configs: "
    + ", ".join(c.name for c in world_tfds.GrJaxWorld.BUILDER_CONFIGS)
  )
  assert "Traceback" not in err
  bad = write_fixture(tmp_path / "bad", inter={"train": ["0\tx y\t1"], "valid": [], "test": []})
  rc, _, err = _cli("amazon_scientific/logs", f"--data_dir={tmp_path}", f"--manual_dir={bad}")
  assert rc == 2 and "Traceback" not in err
  last = err.strip().splitlines()[-1]
  assert last.startswith("error: Scientific.train.inter: row 2: field 'item_id_list': ")


@pytest.mark.parametrize(
  "names, message",
  [
    ([], "no dataset given: name one or more of amazon_scientific, gr_jax_world"),
    (["nope/x"], "unknown builder 'nope' in 'nope/x'; known: amazon_scientific, gr_jax_world"),
    (["amazon_scientific/items"], "amazon_scientific has no config 'items'; valid configs: "),
    (["gr_jax_world/tiny_logs:9.0.0"], "cannot be loaded at version 9.0.0, only: 1.0.0"),
  ],
)
def test_name_mistakes(tmp_path, names, message):
  with pytest.raises(build_tfds.BuildError, match=re.escape(message)):
    build_tfds.build(names, str(tmp_path))
  assert not (tmp_path / "gr_jax_world").exists()


def test_missing_manual_dir_names_path_and_files(tmp_path):
  files = ", ".join(amazon.UnisrecFiles("Scientific").all)
  missing = tmp_path / "nowhere"
  with pytest.raises(build_tfds.BuildError) as e:
    build_tfds.build(["amazon_scientific"], str(tmp_path / "tfds"), str(missing))
  assert str(e.value) == (
    f"amazon_scientific needs {files} in its manual dir; --manual_dir '{missing}' does not "
    "exist (pass --manual_dir or set $GR_JAX_AMAZON_DIR)"
  )
  partial = tmp_path / "partial"
  partial.mkdir()
  (partial / "Scientific.text").write_text("")
  with pytest.raises(
    build_tfds.BuildError, match=re.escape(f"'{partial}' lacks Scientific.item2index, ")
  ):
    build_tfds.build(["amazon_scientific/logs"], str(tmp_path / "tfds"), str(partial))


def test_list_names_every_builder_config():
  lines = build_tfds.list_lines()
  assert lines[0].startswith("amazon_scientific (version 1.0.0; reads manual files")
  for config in world_tfds.GrJaxWorld.BUILDER_CONFIGS:
    assert any(line.startswith(f"  gr_jax_world/{config.name}: ") for line in lines)
  assert "  amazon_scientific/logs: One row per request (train/valid/test)." in lines
