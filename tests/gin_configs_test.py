"""Every shipped gin file parses, alone and in the combinations the launchers use."""

import glob
import os

import gin
import pytest

from gr_jax import gin_utils

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "gin_configs")
FILES = sorted(
  os.path.relpath(path, GIN_DIR)
  for folder in ("runs", "sid", "model", "data", "rl")
  for path in glob.glob(os.path.join(GIN_DIR, folder, "*.gin"))
)
# Size files applied after a job's run file (launch/quickstart.sh, launch/amazon.sh).
COMBINATIONS = [
  *[
    [run, "runs/quickstart.gin"]
    for run in ("runs/data.gin", "runs/sft.gin", "runs/evaluate.gin", "runs/eg_grpo.gin")
  ],
  ["runs/tokenizer.gin", "sid/cq_sid_two_step.gin", "runs/quickstart.gin"],
  *[
    [f"runs/{run}.gin", "runs/amazon_large.gin"]
    for run in (
      "amazon_data",
      "amazon_cq_sid",
      "amazon_rqvae",
      "amazon_sft",
      "amazon_sft_search",
      "amazon_seqrec_eval",
      "amazon_evaluate",
    )
  ],
]


@pytest.fixture(autouse=True)
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.mark.parametrize("path", FILES)
def test_each_file_parses(path):
  gin_utils.parse([path], [])


@pytest.mark.parametrize("files", COMBINATIONS, ids=lambda files: "+".join(files))
def test_launcher_combinations_parse(files):
  gin_utils.parse(files, [])


def test_amazon_large_overrides_the_seqrec_run():
  gin_utils.parse(["runs/amazon_seqrec_eval.gin", "runs/amazon_large.gin"], [])
  assert gin.query_parameter("evaluate_seqrec.beam_sizes") == (10, 50, 100)
  assert gin.query_parameter("TaskConfig.max_history_items") == 15
