"""An Amazon dataset other than Scientific end to end, from a fabricated UniSRec folder.

data (MiniLM features, title pseudo-queries; dataset name and category root
inferred) -> CQ-SID tokenizer -> SFT (seqrec, tiny model) -> full-ranking seqrec
evaluation, in-process through the gin path of `python -m gr_jax.main`. The
dataset is fabricated by the test (tests/amazon_fixtures.py), never the real data.
"""

import json
import os

import numpy as np
import pytest
from amazon_fixtures import fabricate

from gr_jax import errors, gin_utils
from gr_jax.eval import seqrec as seqrec_eval

DATASET = "Office"
ROOT = "Office Products"
NUM_ITEMS = 300
NUM_USERS = 200
NUM_LEAVES = 12

TINY = [
  "prepare_data.feature_cache_dir = None",
  # One encoder shape (4 rows x 32 tokens) for every text: a single compilation.
  "TextEncoderConfig.batch_size = 4",
  "TextEncoderConfig.min_bucket_len = 32",
  "TextEncoderConfig.max_len = 32",
  "CODEBOOK_SIZES = (16, 4, 4)",
  "train_tokenizer.name = 'cq_sid'",
  "train_tokenizer.batch_size = 16",
  "TrainerConfig.progress_bar = False",
  "TrainerConfig.log_every = 3",
  "make_schedule.warmup_steps = 2",
  "train_sft.tokenizer = 'cq_sid'",
  "train_sft.prompt_len = 16",
  "train_sft.batch_size = 16",
  "train_sft.stages = ('seqrec',)",
  "train_sft.stage_steps = {'seqrec': 4}",
  "TaskConfig.max_history_items = 3",
  "text_vocabulary.vocab_size = 60",
  "evaluate_seqrec.tokenizers = ('cq_sid',)",
  "evaluate_seqrec.beam_sizes = (4,)",
  "Retriever.batch_size = 16",
]


def _job(workdir, files, bindings=()):
  return gin_utils.run_in_process(workdir, files, [*TINY, *bindings])


def test_popularity_order_and_complete_ranking_hand_example():
  order = seqrec_eval.popularity_order(np.array([1.0, 5.0, 5.0, 0.0, 2.0]))
  np.testing.assert_array_equal(order, [1, 2, 4, 0, 3])  # ties by item id
  ranked = np.array([[3, 0, -1, -1], [-1, -1, -1, -1], [4, 3, 2, 1]])
  full = seqrec_eval.complete_ranking(ranked, order)
  np.testing.assert_array_equal(full, [[3, 0, 1, 2, 4], [1, 2, 4, 0, 3], [4, 3, 2, 1, 0]])


@pytest.mark.slow
def test_amazon_pipeline_end_to_end(tmp_path):
  data_dir = fabricate(tmp_path / "amazon", DATASET, ROOT, NUM_ITEMS, NUM_USERS, NUM_LEAVES)
  work = tmp_path / "run"
  data = ["runs/amazon_data.gin"]
  folder = f"prepare_data.amazon_dir = '{data_dir}'"
  with pytest.raises(errors.UserError, match=r"prepare_data.amazon_query: unknown mode 'brand'"):
    _job(work, data, [folder, "prepare_data.amazon_query = 'brand'"])
  _job(work, data, [folder, "prepare_data.amazon_query = 'title'"])
  manifest = json.loads((work / "data" / "amazon.json").read_text())
  assert (manifest["dataset"], manifest["category_root"]) == (DATASET, ROOT)
  assert manifest["num_items"] == NUM_ITEMS and manifest["feature_dim"] == 384
  assert manifest["query_mode"] == "title" and manifest["num_category_paths"] == NUM_LEAVES
  with np.load(work / "data" / "catalog.npz") as catalog:
    norms = np.linalg.norm(catalog["features"], axis=1)
  np.testing.assert_allclose(norms, 1.0, atol=1e-4)  # MiniLM rows are unit norm

  diag = _job(work, ["runs/amazon_cq_sid.gin"], ["TrainerConfig.num_steps = 6"])
  assert diag["share_level1_equals_category"] == 1.0
  assert np.load(work / "sid" / "cq_sid" / "item_sid.npy").shape == (NUM_ITEMS, 4)

  sft_metrics = _job(work, ["runs/amazon_sft.gin"])
  assert set(sft_metrics) == {"seqrec"}
  assert all(np.isfinite(m["loss"]) for m in sft_metrics.values())

  results = _job(work, ["runs/amazon_seqrec_eval.gin"])
  assert results["requests"] == {"valid": NUM_USERS, "test": NUM_USERS}
  entry = results["tokenizers"]["cq_sid"]
  assert set(entry["runs"]) == {"efficiency/beam4", "item_id/beam4"}
  for scores in [results["most_popular"]["test"], entry["test"]]:
    for k in (10, 50):
      assert 0.0 <= scores[f"ndcg@{k}"] <= scores[f"recall@{k}"] <= 1.0
    assert scores["recall@50"] > scores["recall@10"]  # full lists: more of them at K=50
  assert 1.0 <= entry["test"]["mean_rank"] <= NUM_ITEMS
  assert entry["runs"]["efficiency/beam4"]["test"]["valid_beam_share"] > 0.0
  text = (work / "eval" / "seqrec" / "results.md").read_text()
  assert "most popular" in text and "selected" in text
  assert os.path.exists(work / "eval" / "seqrec" / "metrics.json")
