"""Amazon Scientific end to end on a tiny fixture in the UniSRec file format.

data (MiniLM features) -> CQ-SID tokenizer -> SFT (seqrec, tiny model)
-> full-ranking seqrec evaluation, in-process through the gin path of
`python -m gr_jax.main`. The fixture is written by the test, never the real data.
"""

import json
import os

import numpy as np
import pytest

from gr_jax import gin_utils
from gr_jax.data import schema
from gr_jax.data.amazon import reader as amazon
from gr_jax.eval import seqrec as seqrec_eval

ROOT = "Industrial & Scientific"
CATEGORIES = (
  f"{ROOT} Lab & Scientific Products Pipettes",
  f"{ROOT} Lab & Scientific Products Beakers",
  f"{ROOT} Test, Measure & Inspect Calipers",
)
NUM_ITEMS = 24
NUM_USERS = 12
SEQUENCE_LEN = 6

TINY = [
  "prepare_data.feature_cache_dir = None",
  # One encoder shape (4 rows x 32 tokens) for every text: a single compilation.
  "TextEncoderConfig.batch_size = 4",
  "TextEncoderConfig.min_bucket_len = 32",
  "TextEncoderConfig.max_len = 32",
  "CODEBOOK_SIZES = (4, 4, 4)",
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


def write_fixture(data_dir) -> str:
  """Writes the six Scientific.* files: 24 items in 3 categories (one without), 12 users."""
  os.makedirs(data_dir, exist_ok=True)
  rng = np.random.default_rng(0)
  with open(os.path.join(data_dir, amazon.TEXT_FILE), "w") as f:
    f.write("item_id:token\ttext:token_seq\n")
    for item in range(NUM_ITEMS):
      category = "" if item == NUM_ITEMS - 1 else CATEGORIES[item % len(CATEGORIES)]
      f.write(f"A{item}\tGadget model {item} steel. {category}. Brand{item % 5}. \n")
  with open(os.path.join(data_dir, amazon.ITEM_INDEX_FILE), "w") as f:
    f.writelines(f"A{item}\t{item}\n" for item in range(NUM_ITEMS))
  with open(os.path.join(data_dir, amazon.USER_INDEX_FILE), "w") as f:
    f.writelines(f"U{user}\t{user}\n" for user in range(NUM_USERS))
  rows = {split: [] for split in schema.SPLITS}
  for user in range(NUM_USERS):
    sequence = rng.choice(NUM_ITEMS, SEQUENCE_LEN, replace=False)
    # Leave-one-out: train rows are the prefixes, valid/test the last two targets.
    for k in range(1, SEQUENCE_LEN - 2):
      rows["train"].append((user, sequence[:k], sequence[k]))
    rows["valid"].append((user, sequence[:-2], sequence[-2]))
    rows["test"].append((user, sequence[:-1], sequence[-1]))
  for split, split_rows in rows.items():
    with open(os.path.join(data_dir, amazon.INTER_FILES[split]), "w") as f:
      f.write("user_id:token\titem_id_list:token_seq\titem_id:token\n")
      for user, history, target in split_rows:
        f.write(f"{user}\t{' '.join(map(str, history))}\t{target}\n")
  return str(data_dir)


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
  data_dir = write_fixture(tmp_path / "amazon")
  work = tmp_path / "run"
  _job(work, ["runs/amazon_data.gin"], [f"prepare_data.amazon_dir = '{data_dir}'"])
  manifest = json.loads((work / "data" / "amazon.json").read_text())
  assert manifest["num_items"] == NUM_ITEMS and manifest["feature_dim"] == 384
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
    # Every list ranks all 24 items, so the target is always inside the top 50.
    assert scores["recall@50"] == 1.0
  assert 1.0 <= entry["test"]["mean_rank"] <= NUM_ITEMS
  assert entry["runs"]["efficiency/beam4"]["test"]["valid_beam_share"] > 0.0
  text = (work / "eval" / "seqrec" / "results.md").read_text()
  assert "most popular" in text and "selected" in text
  assert os.path.exists(work / "eval" / "seqrec" / "metrics.json")
