"""Tests of SASRec: causality, padding, the losses, learning a pattern, the job end to end."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from amazon_test import write_fixture

from gr_jax import gin_utils
from gr_jax.data import schema
from gr_jax.models import sasrec, sasrec_task

PAD = schema.PAD_ITEM


def _model(num_items=7, max_len=8, dropout=0.0, num_heads=2):
  config = sasrec.SasrecConfig(
    num_items=num_items, max_len=max_len, hidden=16, num_blocks=2, num_heads=num_heads,
    dropout=dropout,
  )  # fmt: skip
  model = sasrec.SASRec(config)
  variables = model.init(jax.random.key(0), jnp.zeros((1, max_len), jnp.int32))
  return model, nn.meta.unbox(variables)


def test_params_carry_logical_axes():
  config = sasrec.SasrecConfig(num_items=5, max_len=4, hidden=8)
  variables = sasrec.SASRec(config).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  specs = jax.tree.leaves(nn.get_partition_spec(variables))
  assert ("vocab", "embed") in [tuple(s) for s in specs]
  assert all(s is not None and len(s) > 0 for s in specs)


def test_later_items_do_not_change_earlier_positions():
  model, variables = _model()
  items = jnp.array([[PAD, PAD, 0, 3, 1, 4, 2, 5]])
  changed = items.at[0, 6].set(6)
  out, out_changed = model.apply(variables, items), model.apply(variables, changed)
  np.testing.assert_allclose(out[:, :6], out_changed[:, :6], atol=1e-6)
  assert not np.allclose(out[:, 6:], out_changed[:, 6:], atol=1e-4)


def test_left_padding_does_not_change_last_scores():
  model, variables = _model()
  history = [2, 0, 5]
  windows = [np.array([[PAD] * (width - 3) + history]) for width in (3, 5, 8)]
  last = sasrec.SASRec.last_scores
  scores = [model.apply(variables, jnp.asarray(w), method=last) for w in windows]
  for other in scores[1:]:
    np.testing.assert_allclose(scores[0], other, atol=1e-5)


def _numpy_loss(hidden, table, targets, negatives, kind):
  weights = targets >= 0
  safe = np.maximum(targets, 0)
  if kind == "ce":
    logits = hidden @ table.T  # [B, T, N]
    logits = logits - logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    per = -np.take_along_axis(log_probs, safe[..., None], -1)[..., 0]
  else:
    pos = np.sum(hidden * table[safe], -1)
    neg = np.sum(hidden * table[negatives], -1)
    per = np.log1p(np.exp(-pos)) + np.log1p(np.exp(neg))
  return (per * weights).sum() / weights.sum()


@pytest.mark.parametrize("kind", sasrec.LOSSES)
def test_loss_at_every_position_matches_numpy(kind):
  model, variables = _model()
  task = sasrec.SasrecTask(model.config, kind)
  inputs = np.array([[PAD, PAD, PAD, 0, 1, 2, 3, 4], [PAD, 6, 5, 4, 3, 2, 1, 0]], np.int32)
  targets = np.array([[PAD, PAD, PAD, 1, 2, 3, 4, 5], [PAD, 5, 4, 3, 2, 1, 0, 6]], np.int32)
  rng = jax.random.key(3)
  loss, (measured, _) = task.loss(variables, {"inputs": inputs, "targets": targets}, rng)
  assert measured["positions_left_out"] == 0
  hidden = np.asarray(model.apply(variables, inputs), np.float64)
  table = np.asarray(variables["params"]["item_embedding"][1:], np.float64)
  negatives = np.asarray(
    sasrec.sample_negatives(jax.random.split(rng)[1], jnp.asarray(targets), model.config.num_items)
  )
  expected = _numpy_loss(hidden, table, targets, negatives, kind)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-4)
  if kind == "ce":
    # The gathered loss over a budget of 12 of the 16 slots (12 real positions) is the same.
    budget = sasrec.SasrecTask(model.config, kind, max_positions=12)
    gathered, (measured, _) = budget.loss(variables, {"inputs": inputs, "targets": targets}, rng)
    np.testing.assert_allclose(float(gathered), expected, rtol=1e-4)
    assert measured["positions_left_out"] == 0
    short = sasrec.SasrecTask(model.config, kind, max_positions=10)
    _, (measured, _) = short.loss(variables, {"inputs": inputs, "targets": targets}, rng)
    assert measured["positions_left_out"] == 2


def _pattern_logs(num_items=12, num_users=64, length=10, seed=0):
  """Leave-one-out logs of a deterministic walk: the next item is always item + 1 (mod N)."""
  rng = np.random.default_rng(seed)
  rows = {"user": [], "history": [], "target": [], "split": []}
  for user in range(num_users):
    sequence = (rng.integers(num_items) + np.arange(length)) % num_items
    splits = ["train"] * (length - 3) + ["valid", "test"]
    for k, split in enumerate(splits, start=1):
      rows["user"].append(user)
      rows["history"].append(sequence[:k])
      rows["target"].append(sequence[k])
      rows["split"].append(schema.SPLITS.index(split))
  count = len(rows["user"])
  target = np.asarray(rows["target"], np.int32)
  return schema.SearchLogs(
    request_id=np.arange(count, dtype=np.int64),
    user_id=np.asarray(rows["user"], np.int32),
    user_profile=np.zeros((count, 2), np.int32),
    recent_clicks=sasrec_task._left_pad(rows["history"], 8),
    query=np.array([""] * count, dtype=object),
    exposed=target[:, None],
    clicked=target[:, None],
    purchased=target[:, None],
    split=np.asarray(rows["split"], np.int8),
  )


def test_training_examples_are_train_sequences_only():
  logs = _pattern_logs(num_users=3, length=10)
  examples = sasrec_task.training_examples(logs, max_len=8)
  valid_hist, valid_target = sasrec_task.split_requests(logs, "valid", 8)
  test_hist, test_target = sasrec_task.split_requests(logs, "test", 8)
  for u in range(3):
    # The train sequence is the first 8 of 10 items: inputs items 0..6, targets 1..7.
    start = valid_hist[u, -1] - 7
    sequence = (start + np.arange(10)) % 12
    np.testing.assert_array_equal(examples["inputs"][u], [PAD, *sequence[:7]])
    np.testing.assert_array_equal(examples["targets"][u], [PAD, *sequence[1:8]])
    assert valid_target[u] == sequence[8] and test_target[u] == sequence[9]
    np.testing.assert_array_equal(test_hist[u, -1], valid_target[u])


def test_learns_a_deterministic_pattern(tmp_path):
  logs = _pattern_logs()
  config = sasrec.SasrecConfig(num_items=12, max_len=8, hidden=16, num_blocks=1, dropout=0.0)
  fit = sasrec_task.FitConfig(
    loss="ce", learning_rate=1e-2, batch_size=16, epochs=30, eval_every=5, patience=3,
    time_budget_s=60.0,
  )  # fmt: skip
  results = sasrec_task.fit_and_evaluate(str(tmp_path), config, fit, logs)
  # Chance is 10/12 at K=10 here, so require the pattern at K=1 through NDCG@10 ~ 1.
  assert results["test"]["ndcg@10"]["value"] > 0.95
  assert results["selected"]["valid"]["ndcg@10"]["value"] > 0.95
  assert results["curve"][0]["step"] == 5 * results["steps_per_epoch"]


def test_job_runs_end_to_end(tmp_path):
  inter = {
    "train": [(u, [(u + j) % 5 for j in range(k)], (u + k) % 5) for u in range(2) for k in (1, 2)],
    "valid": [(u, [(u + j) % 5 for j in range(3)], (u + 3) % 5) for u in range(2)],
    "test": [(u, [(u + j) % 5 for j in range(4)], (u + 4) % 5) for u in range(2)],
  }
  data_dir = write_fixture(tmp_path / "data", inter=inter)
  workdir = tmp_path / "work"
  results = gin_utils.run_in_process(
    workdir,
    ["runs/amazon_sasrec.gin"],
    [
      f"train_sasrec.data_dir = '{data_dir}'",
      "train_sasrec.hidden = 8",
      "train_sasrec.max_len = 6",
      "train_sasrec.batch_size = 8",
      "train_sasrec.epochs = 2",
      "train_sasrec.loss = 'bce'",
    ],
  )
  out = workdir / "eval" / "sasrec"
  saved = json.loads((out / "metrics.json").read_text())
  assert saved["requests"] == {"valid": 2, "test": 2}
  assert len(saved["curve"]) == 2 and saved["selected"]["epoch"] in (1, 2)
  assert set(saved["test"]) == {"recall@10", "ndcg@10", "recall@50", "ndcg@50"}
  text = (out / "results.md").read_text()
  assert "| test |" in text and "published inside our test CI" in text
  assert results["num_items"] == 5
  assert os.path.isdir(workdir / "sasrec" / "checkpoints")
