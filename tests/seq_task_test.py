"""Tests of sequence training: the token layout, the loss at every item's SID, causality,
train-only examples, length-bucketed batches, learning a pattern, the job end to end."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest
from amazon_fixtures import fabricate

from gr_jax import gin_utils
from gr_jax.data import schema
from gr_jax.data.amazon import reader as amazon
from gr_jax.eval import seqrec
from gr_jax.models import decoder, seq_fit, seq_task
from gr_jax.models.generator import Generator
from gr_jax.models.token_layout import BOS_ID, PAD_ID, TokenLayout
from gr_jax.serving.retriever import Retriever
from gr_jax.sid import tables
from gr_jax.train import bucket_batching

PAD = schema.PAD_ITEM
LEVELS = (4, 4)  # two SID levels of 4 codes: item i -> (i // 4, i % 4), unique for i < 16
LAYOUT = TokenLayout(text_vocab_size=0, sid_level_sizes=LEVELS)


def _item_sid(num_items):
  items = np.arange(num_items)
  return np.stack([items // 4, items % 4], -1).astype(np.int32)


def _task(max_len=32):
  config = decoder.DecoderConfig(
    vocab_size=LAYOUT.vocab_size, num_layers=1, embed_dim=16, num_heads=2, num_kv_heads=1,
    head_dim=8, mlp_dim=32, max_len=max_len,
  )  # fmt: skip
  task = seq_task.SequenceTask(config)
  variables = task.init(jax.random.key(0), {"tokens": np.zeros((1, 4), np.int32)})
  return task, variables


def test_item_tokens_put_bos_before_the_first_item():
  item_sid = _item_sid(16)
  tokens = seq_task.item_tokens(np.array([[PAD, 5, 2], [PAD, PAD, PAD]]), item_sid, LAYOUT)
  sid = lambda item: list(LAYOUT.sid_to_tokens(item_sid[item]))
  assert tokens.shape == (2, 7)
  np.testing.assert_array_equal(tokens[0], [PAD_ID, PAD_ID, BOS_ID, *sid(5), *sid(2)])
  np.testing.assert_array_equal(tokens[1], [PAD_ID] * 6 + [BOS_ID])  # empty history: BOS


def test_loss_is_at_every_item_sid_and_only_there():
  task, variables = _task()
  item_sid = _item_sid(16)
  sequences = np.array([[PAD, PAD, 3, 7, 1], [9, 2, 14, 6, 0]])
  tokens = seq_task.item_tokens(sequences, item_sid, LAYOUT)
  weights = ((tokens != PAD_ID) & (tokens != BOS_ID)).astype(np.float32)
  # Weighted positions are exactly the SID tokens: 3 and 5 items of 2 tokens.
  assert weights.sum(-1).tolist() == [6, 10]
  batch = {"tokens": tokens, "loss_weights": weights}
  loss, (measured, _) = jax.jit(task.loss)(variables, batch, None)
  # numpy reference: log-softmax of the decoder's logits, target = next token.
  logits = np.asarray(jax.jit(task.model.apply)(variables, tokens[:, :-1]), np.float64)
  log_probs = logits - logits.max(-1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
  picked = np.take_along_axis(log_probs, tokens[:, 1:, None], -1)[..., 0]
  is_sid = LAYOUT.sid_offset(0) <= tokens[:, 1:]  # the SID ids are the top of the vocabulary
  expected = -picked[is_sid].mean()
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  assert float(measured["sid_tokens"]) == 16


def test_later_items_do_not_change_earlier_losses():
  task, variables = _task()
  item_sid = _item_sid(16)
  tokens = seq_task.item_tokens(np.array([[4, 8, 12, 1, 5]]), item_sid, LAYOUT)
  changed = seq_task.item_tokens(np.array([[4, 8, 12, 11, 5]]), item_sid, LAYOUT)
  token_losses = jax.jit(task.token_losses)
  losses, _ = token_losses(variables, tokens)  # [1, T-1]: loss of token t + 1
  losses_changed, _ = token_losses(variables, changed)
  first = 1 + 3 * 2  # the changed item's first token; it is predicted at position first - 1
  np.testing.assert_allclose(losses[:, : first - 1], losses_changed[:, : first - 1], atol=1e-6)
  assert not np.allclose(losses[:, first - 1 :], losses_changed[:, first - 1 :], atol=1e-4)


def test_training_examples_are_train_sequences_only(tmp_path):
  data_dir = fabricate(tmp_path / "amazon", num_items=16, num_users=20, sequence_len=7)
  catalog, logs, _ = amazon.load_amazon(data_dir)
  item_sid = _item_sid(catalog.num_items)
  examples = seq_task.training_examples(logs, item_sid, LAYOUT, max_items=8)
  assert examples["tokens"].shape == (20, 1 + 9 * 2)
  valid = logs.split == schema.SPLITS.index("valid")
  test = logs.split == schema.SPLITS.index("test")
  for row, user in enumerate(examples["user"]):
    tokens = examples["tokens"][row]
    sids = LAYOUT.tokens_to_sid(tokens[tokens > BOS_ID].reshape(-1, 2))
    items = sids[:, 0] * 4 + sids[:, 1]
    # The train sequence = the valid request's history; its target and test's never enter.
    history = logs.recent_clicks[valid & (logs.user_id == user)][0]
    np.testing.assert_array_equal(items, history[history != PAD])
    assert logs.clicked[valid & (logs.user_id == user), 0][0] not in items
    assert logs.clicked[test & (logs.user_id == user), 0][0] not in items
    assert examples["lengths"][row] == 1 + 2 * len(items)


def test_bucket_batches_cover_each_example_once_per_epoch():
  lengths = np.array([2, 3, 7, 9, 9, 4, 2, 9])
  tokens = np.zeros((8, 9), np.int32)
  for row, length in enumerate(lengths):
    tokens[row, 9 - length :] = row + 1  # left-padded, the row's id as every real token
  arrays = {"tokens": tokens, "loss_weights": (tokens > 0).astype(np.float32)}
  batch_fn, steps = bucket_batching.bucket_batches(arrays, lengths, (4, 9), 3, "loss_weights")
  assert steps == 2 + 2  # 4 short examples -> 2 batches of 3, 4 long -> 2
  for epoch in range(2):
    seen = []
    for step in range(epoch * steps, (epoch + 1) * steps):
      batch = batch_fn(step)
      width = batch["tokens"].shape[1]
      for tokens_row, weights_row in zip(batch["tokens"], batch["loss_weights"]):
        row = int(tokens_row.max()) - 1
        assert width == (4 if lengths[row] <= 4 else 9)
        assert (tokens_row > 0).sum() == lengths[row]  # nothing real was cut
        if weights_row.any():
          seen.append(row)
    assert sorted(seen) == list(range(8))  # top-up repeats carry no weight
  np.testing.assert_array_equal(batch_fn(5)["tokens"], batch_fn(5)["tokens"])


def _pattern_logs(num_items=16, num_users=48, length=10, seed=0):
  """Leave-one-out logs of a walk whose next item is always item + 1 (mod N)."""
  rng = np.random.default_rng(seed)
  rows = {"user": [], "history": [], "target": [], "split": []}
  for user in range(num_users):
    sequence = (rng.integers(num_items) + np.arange(length)) % num_items
    for k, split in enumerate(["train"] * (length - 3) + ["valid", "test"], start=1):
      rows["user"].append(user)
      rows["history"].append(sequence[:k])
      rows["target"].append(sequence[k])
      rows["split"].append(schema.SPLITS.index(split))
  count = len(rows["user"])
  history = np.full((count, 8), PAD, np.int32)
  for r, items in enumerate(rows["history"]):
    history[r, 8 - len(items[-8:]) :] = items[-8:]
  target = np.asarray(rows["target"], np.int32)
  return schema.SearchLogs(
    request_id=np.arange(count, dtype=np.int64),
    user_id=np.asarray(rows["user"], np.int32),
    user_profile=np.zeros((count, 2), np.int32),
    recent_clicks=history,
    query=np.array([""] * count, dtype=object),
    exposed=target[:, None],
    clicked=target[:, None],
    purchased=target[:, None],
    split=np.asarray(rows["split"], np.int8),
  )


@pytest.mark.slow
def test_learns_a_deterministic_pattern(tmp_path):
  num_items = 16
  logs = _pattern_logs(num_items)
  paths = np.empty(num_items, dtype=object)
  for item in range(num_items):
    paths[item] = ()
  catalog = schema.Catalog(
    title=np.array([f"item {i}" for i in range(num_items)], dtype=object),
    category_path=paths,
    category_id=np.full(num_items, -1, np.int32),
    brand=np.array([""] * num_items, dtype=object),
    efficiency_score=np.ones(num_items, np.float32),
    category_names=np.array([], dtype=object),
  )
  sid_tables = tables.build_sid_tables(_item_sid(num_items), LEVELS)
  max_items = 8
  task, _ = _task()
  config = dict(
    task.model_config.__dict__,
    num_layers=2,
    embed_dim=32,
    max_len=seq_task.prompt_len(max_items, LAYOUT) + 2,
  )
  generator = Generator(
    LAYOUT, decoder.DecoderConfig(**config), seq_task.prompt_len(max_items, LAYOUT)
  )
  fit = seq_fit.SeqFitConfig(
    learning_rate=1e-2, warmup_steps=5, batch_size=16, epochs=80, eval_every=20, patience=2,
    time_budget_s=1800.0, select_beam=4, select_requests=0, beam_sizes=(4,), rules=("item_id",),
  )  # fmt: skip
  results = seq_fit.fit_and_evaluate(
    str(tmp_path), generator, fit, catalog, logs, sid_tables, mesh=None, rules=None
  )
  # Chance is 10/16 at K=10, so require the pattern through NDCG@10 ~ 1.
  assert results["curve"][-1]["ndcg@10"] > 0.95
  assert results["runs"]["item_id/beam4"]["valid"]["ndcg@10"] > 0.95
  assert results["test"]["ndcg@10"] > 0.95
  assert results["curve"][0]["step"] == 20 * results["steps_per_epoch"]
  low, high = results["test"]["ci"]["ndcg@10"]["low"], results["test"]["ci"]["ndcg@10"]["high"]
  assert low <= results["test"]["ndcg@10"] <= high


@pytest.mark.slow
def test_job_runs_end_to_end(tmp_path):
  data_dir = fabricate(tmp_path / "amazon", num_items=40, num_users=30, num_leaves=4)
  work = tmp_path / "run"
  tiny = [
    "prepare_data.feature_cache_dir = None",
    "TextEncoderConfig.batch_size = 4",
    "TextEncoderConfig.min_bucket_len = 32",
    "TextEncoderConfig.max_len = 32",
    "CODEBOOK_SIZES = (8, 4, 4)",
    "train_tokenizer.batch_size = 16",
    "TrainerConfig.num_steps = 4",
    "TrainerConfig.progress_bar = False",
  ]
  jobs = [
    (["runs/amazon_data.gin"], [f"prepare_data.amazon_dir = '{data_dir}'"]),
    (["runs/amazon_cq_sid.gin"], []),
  ]
  for files, bindings in jobs:
    gin_utils.run_in_process(work, files, [*tiny, *bindings])
  results = gin_utils.run_in_process(
    work,
    ["runs/amazon_seq_sft.gin"],
    [
      "train_seq_sft.tokenizer = 'cq_sid'",
      "train_seq_sft.model_overrides = {}",
      "train_seq_sft.max_items = 4",
      "SeqFitConfig.batch_size = 8",
      "SeqFitConfig.epochs = 2",
      "SeqFitConfig.select_beam = 4",
      "SeqFitConfig.beam_sizes = (4, 8)",
      "Retriever.batch_size = 16",
    ],
  )
  out = work / "eval" / "seq_sft" / "cq_sid"
  saved = json.loads((out / "metrics.json").read_text())
  assert saved["requests"] == {"valid": 30, "test": 30}
  assert len(saved["curve"]) == 2 and saved["selected"]["epoch"] in (1, 2)
  assert set(saved["runs"]) == {f"{r}/beam{b}" for r in ("efficiency", "item_id") for b in (4, 8)}
  for k in (10, 50):
    assert 0.0 <= saved["test"][f"ndcg@{k}"] <= saved["test"][f"recall@{k}"] <= 1.0
  text = (out / "results.md").read_text()
  assert "| test |" in text and "published SASRec" in text and "Valid curve" in text
  assert results["num_items"] == 40
  stage = work / "sft" / "cq_sid" / "seq"
  assert os.path.exists(stage / "generator.json") and os.path.isdir(stage / "checkpoints")
  # The seqrec evaluation job re-reads the selected generator and reproduces its test
  # row user by user; the compare job pairs the two.
  gin_utils.run_in_process(
    work,
    ["runs/amazon_seqrec_eval.gin"],
    [
      "evaluate_seqrec.stage = 'seq'",
      "evaluate_seqrec.tokenizers = ('cq_sid',)",
      "evaluate_seqrec.beam_sizes = (4, 8)",
      "Retriever.batch_size = 16",
    ],
  )
  again = json.loads((work / "eval" / "seq" / "metrics.json").read_text())
  assert again["tokenizers"]["cq_sid"]["selected"] == saved["selected_run"]
  with (
    np.load(out / "per_user_test.npz") as first,
    np.load(work / "eval" / "seq" / "cq_sid" / "per_user_test.npz") as second,
  ):
    assert len(first["user"]) == 30
    for key in first.files:
      np.testing.assert_allclose(first[key], second[key], atol=1e-6, err_msg=key)
  compared = gin_utils.run_in_process(
    work,
    ["runs/compare_seqrec.gin"],
    [
      "compare_seqrec.systems = {'trained': 'eval/seq_sft/cq_sid', 'reread': 'eval/seq/cq_sid'}",
      "compare_seqrec.baseline = 'trained'",
    ],
  )
  entry = compared["systems"]["reread"]["ndcg@10"]["vs_baseline"]
  assert entry is None or (entry["value"] == 0.0 and entry["verdict"] == "tie")
  assert (work / "eval" / "seqrec_compare" / "results.md").exists()


def test_decode_by_length_matches_full_width_decoding():
  task, variables = _task()
  sid_tables = tables.build_sid_tables(_item_sid(16), LEVELS)
  retriever = Retriever(
    variables["params"], task.model_config, LAYOUT, sid_tables, np.ones(16), batch_size=8
  )
  histories = np.full((6, 8), PAD, np.int32)
  for row, count in enumerate([1, 2, 3, 5, 8, 8]):
    histories[row, 8 - count :] = (row + np.arange(count)) % 16
  prompts = seq_task.item_tokens(histories, sid_tables.item_sid, LAYOUT)  # [6, 17]
  sids, scores, valid = retriever.decode(prompts, 4)
  grouped = seqrec.decode_by_length(retriever, prompts, 4, min_width=4)  # widths 4, 8, 16, 17
  np.testing.assert_array_equal(grouped[0], sids)
  np.testing.assert_allclose(grouped[1], scores, atol=1e-4)
  np.testing.assert_array_equal(grouped[2], valid)


def test_dropout_only_with_a_dropout_rng():
  task, variables = _task()
  noisy = seq_task.SequenceTask(dataclasses.replace(task.model_config, dropout=0.5))
  tokens = seq_task.item_tokens(np.array([[4, 8, 12, 1, 5]]), _item_sid(16), LAYOUT)
  plain, _ = jax.jit(task.token_losses)(variables, tokens)
  evaluated, _ = jax.jit(noisy.token_losses)(variables, tokens)  # no rng: deterministic
  trained, _ = jax.jit(noisy.token_losses)(variables, tokens, jax.random.key(1))
  np.testing.assert_allclose(evaluated, plain, atol=1e-6)
  assert not np.allclose(trained, plain, atol=1e-3)
