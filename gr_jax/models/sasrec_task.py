"""SASRec on leave-one-out logs: training sequences, full-ranking evaluation, early stopping.

Data (UniSRec layout, read by `gr_jax.data.amazon`): a user's train rows are the
prefixes of one sequence, so the training sequence is the user's longest train
history plus its target (the newest max_len + 1 items; only the train split, so
valid and test targets never reach training). It becomes one example with inputs
seq[:-1] and targets seq[1:] (left-padded to max_len): the loss is taken at every
position. A valid request is history -> valid target, a test request history
(which ends with the valid target) -> test target, exactly the file's rows.

Evaluation ranks every item of the catalog by its score after the newest history
position; nothing is excluded (history items included), as in RecBole's
full-sort protocol for sequential models, which the published UniSRec / VQ-Rec
numbers use. Metrics are Recall@K and NDCG@K (`metrics.recall_ndcg`) with a 95%
bootstrap interval over requests. The valid metric `select_metric` is computed
every `eval_every` epochs; the best epoch's parameters are kept and the test split
is scored once, with them, at the end. Training stops after `patience`
evaluations without improvement, or when `time_budget_s` is spent.

The valid curve and the best parameters live in memory: a resumed run continues
training from its checkpoint, but selects only among the evaluations it makes.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import numpy as np
from absl import logging

from gr_jax.data import schema
from gr_jax.eval import metrics, seqrec_compare, stats
from gr_jax.models import sasrec
from gr_jax.train import batching, early_stopping, optim, trainer

METRIC_NAMES = ("recall", "ndcg")


def _left_pad(rows: list[np.ndarray], width: int) -> np.ndarray:
  """Item lists -> [R, width] int32, newest last, left-padded with PAD_ITEM."""
  out = np.full((len(rows), width), schema.PAD_ITEM, np.int32)
  for r, row in enumerate(rows):
    row = row[-width:]
    if len(row):
      out[r, width - len(row) :] = row
  return out


def _history(recent_clicks: np.ndarray) -> list[np.ndarray]:
  return [row[row != schema.PAD_ITEM] for row in recent_clicks]


def training_examples(logs: schema.SearchLogs, max_len: int) -> dict[str, np.ndarray]:
  """One example per user with train rows: its longest train history + target.

  For users whose sequence outgrows the stored history width several train rows
  share the longest history length; the last one is the row whose history + target
  ends where the user's valid history ends (valid history = the whole train
  sequence's newest items).

  Returns:
    {'inputs': [U, max_len] int32, 'targets': [U, max_len] int32, 'user': [U]},
    item ids left-padded with PAD_ITEM.

  Raises:
    ValueError: a user's train rows do not fit their valid history.
  """
  train = np.flatnonzero(logs.split == schema.SPLITS.index("train"))
  valid = np.flatnonzero(logs.split == schema.SPLITS.index("valid"))
  valid_history = {int(logs.user_id[r]): logs.recent_clicks[r] for r in valid}
  candidates: dict[int, list[int]] = {}
  for row in train:
    candidates.setdefault(int(logs.user_id[row]), []).append(row)
  inputs, targets, users = [], [], []
  for user, rows in candidates.items():
    lengths = [int((logs.recent_clicks[r] != schema.PAD_ITEM).sum()) for r in rows]
    longest = [r for r, n in zip(rows, lengths) if n == max(lengths)]
    sequences = [
      np.append(_history(logs.recent_clicks[[r]])[0], logs.clicked[r, 0]) for r in longest
    ]
    if user in valid_history:
      tail = _history(valid_history[user][None])[0]
      sequences = [s for s in sequences if np.array_equal(s[-len(tail) :], tail)]
      if not sequences:
        raise ValueError(
          f"user {user}: no train row's history + target ends with the valid history; "
          "expected train rows to be prefixes of the sequence the valid row continues"
        )
    sequence = sequences[-1]
    inputs.append(sequence[:-1])
    targets.append(sequence[1:])
    users.append(user)
  return {
    "inputs": _left_pad(inputs, max_len),
    "targets": _left_pad(targets, max_len),
    "user": np.asarray(users, np.int32),
  }


def split_requests(logs: schema.SearchLogs, split: str, max_len: int):
  """(histories [R, max_len] left-padded, targets [R]) of one split's rows, in file order."""
  rows = logs.split == schema.SPLITS.index(split)
  return _left_pad(_history(logs.recent_clicks[rows]), max_len), logs.clicked[rows, 0]


class Ranker:
  """Top-K items of every request under given parameters, in fixed-size sharded chunks."""

  def __init__(self, task: sasrec.SasrecTask, runner: trainer.Trainer, k: int, chunk: int = 512):
    self.runner, self.chunk = runner, chunk

    def top(params, items):
      scores = task.model.apply({"params": params}, items, method=sasrec.SASRec.last_scores)
      return jax.lax.top_k(scores, k)[1]  # [C, K] ties broken by lower item id

    self._top = jax.jit(top)

  def __call__(self, params, histories: np.ndarray) -> np.ndarray:
    """[R, T] histories -> [R, K] ranked item ids."""
    out = []
    for start in range(0, len(histories), self.chunk):
      part = histories[start : start + self.chunk]
      padded = np.full((self.chunk, part.shape[1]), schema.PAD_ITEM, np.int32)
      padded[: len(part)] = part
      device = self.runner.put_batch({"items": padded})["items"]
      out.append(np.asarray(jax.device_get(self._top(params, device)))[: len(part)])
    return np.concatenate(out)


def score(ranked: np.ndarray, targets: np.ndarray, ks, *, intervals: bool, seed: int = 0) -> dict:
  """Means of Recall/NDCG@K; with intervals, {metric: {value, low, high}}."""
  per_request = metrics.recall_ndcg(ranked, targets, ks, per_request=True)
  if not intervals:
    return {name: float(values.mean()) for name, values in per_request.items()}
  return with_intervals(per_request, seed=seed)


def with_intervals(per_request: dict, *, seed: int = 0) -> dict:
  """{metric: [R] per-request values} -> {metric: {value, low, high}} (95% bootstrap)."""
  return {
    name: stats.bootstrap_mean(values, seed=seed).to_json() for name, values in per_request.items()
  }


@dataclasses.dataclass
class FitConfig:
  """Training and selection knobs (see the module docstring)."""

  loss: str = "ce"
  learning_rate: float = 1e-3
  batch_size: int = 128
  epochs: int = 200
  eval_every: int = 1
  patience: int = 10
  time_budget_s: float = 600.0
  select_metric: str = "ndcg@10"
  ks: tuple[int, ...] = (10, 50)
  seed: int = 0
  # CE scores this many real positions per example of a batch on average
  # (`sasrec.sequence_loss`; Amazon Scientific has about 4 per user).
  positions_per_example: int | None = 8


def fit_and_evaluate(
  workdir: str, config: sasrec.SasrecConfig, fit: FitConfig, logs: schema.SearchLogs
) -> dict:
  """Trains with early stopping on valid, then scores test once with the selected epoch.

  Returns:
    {preempted: False, curve: [{epoch, step, seconds, <valid metrics>}],
     selected: {epoch, step, valid}, test: {metric: {value, low, high}}, per_user:
     seqrec_compare.per_user_values of test, epochs_run,
     steps_per_epoch, train_seconds, num_train_users, requests: {valid, test}};
    after a SIGTERM only {preempted: True, curve, train_seconds} (nothing is scored).
  """
  start_time = time.perf_counter()
  examples = training_examples(logs, config.max_len)
  arrays = {"inputs": examples["inputs"], "targets": examples["targets"]}
  valid_histories, valid_targets = split_requests(logs, "valid", config.max_len)
  test_histories, test_targets = split_requests(logs, "test", config.max_len)
  steps_per_epoch = math.ceil(len(arrays["inputs"]) / fit.batch_size)
  train_config = early_stopping.epoch_trainer_config(
    steps_per_epoch, fit.epochs, fit.eval_every, fit.seed, checkpoint_every_evals=10
  )
  # The paper's optimizer: Adam, constant learning rate, beta2 0.98, no clipping.
  schedule = optim.make_schedule(
    train_config.num_steps, learning_rate=fit.learning_rate, schedule="constant"
  )
  optimizer = optim.make_optimizer(schedule, b2=0.98, weight_decay=0.0, grad_clip_norm=None)
  max_positions = None
  if fit.positions_per_example:
    max_positions = fit.batch_size * fit.positions_per_example
  task = sasrec.SasrecTask(config, fit.loss, max_positions)
  runner = trainer.Trainer(task, workdir, config=train_config, optimizer=optimizer)
  ranker = Ranker(task, runner, min(max(fit.ks), config.num_items))
  selection = early_stopping.ValidSelection(
    fit.select_metric, fit.patience, fit.time_budget_s, steps_per_epoch, start_time
  )

  def eval_fn(state, step):
    valid = score(ranker(state.params, valid_histories), valid_targets, fit.ks, intervals=False)
    selection.record(step, state.params, valid)
    logging.info("sasrec step %d (%.1f s): valid %s", step, selection.curve[-1]["seconds"], valid)
    return valid

  batch_fn = batching.epoch_batches(arrays, fit.batch_size, seed=fit.seed)
  result = runner.fit(batch_fn, eval_fn=eval_fn, should_stop=selection.should_stop)
  train_seconds = time.perf_counter() - start_time
  if result.preempted:  # checkpoint saved; a rerun resumes, and selects and reports
    runner.close()
    return {"preempted": True, "curve": selection.curve, "train_seconds": train_seconds}
  selected = selection.selected_point()
  test_ranked = ranker(selection.params, test_histories)  # [R, K]
  per_request = metrics.recall_ndcg(test_ranked, test_targets, fit.ks, per_request=True)
  test = with_intervals(per_request)
  per_user = seqrec_compare.per_user_values(logs, "test", test_targets, per_request)
  valid = score(ranker(selection.params, valid_histories), valid_targets, fit.ks, intervals=True)
  runner.close()
  return {
    "preempted": False,
    "curve": selection.curve,
    "selected": {"epoch": selected["epoch"], "step": selected["step"], "valid": valid},
    "test": test,
    "per_user": per_user,  # arrays: written beside metrics.json, not in it
    "epochs_run": int(jax.device_get(result.state.step)) / steps_per_epoch,
    "steps_per_epoch": steps_per_epoch,
    "train_seconds": train_seconds,
    "num_train_users": len(arrays["inputs"]),
    "requests": {"valid": len(valid_targets), "test": len(test_targets)},
  }


def _cell(interval: dict) -> str:
  return stats.format_interval(stats.Interval(**interval))


def report_markdown(results: dict, published: dict[str, float] | None = None) -> str:
  """results.md: the selected test row with 95% intervals (vs published), then the valid curve."""
  ks = results["ks"]
  columns = [f"{m}@{k}" for k in ks for m in METRIC_NAMES]
  selected = results["selected"]
  lines = [
    f"Full ranking over {results['num_items']} items (history items not excluded); "
    f"{results['requests']['test']} test / {results['requests']['valid']} valid users; "
    f"selected epoch {selected['epoch']:g} by valid {results['select_metric']}; "
    f"95% bootstrap intervals over users. Training {results['train_seconds']:.0f} s, "
    f"{results['epochs_run']:g} epochs; whole job {results['runtime_s']:.0f} s.",
    "",
    "| split | " + " | ".join(columns) + " |",
    "|---|" + "---|" * len(columns),
    "| test | " + " | ".join(_cell(results["test"][c]) for c in columns) + " |",
    "| valid | " + " | ".join(_cell(selected["valid"][c]) for c in columns) + " |",
  ]
  if published:
    cells = " | ".join(f"{published[c]:.4f}" for c in columns)
    lines.append(f"| published (test) | {cells} |")
    inside = [
      "yes" if results["test"][c]["low"] <= published[c] <= results["test"][c]["high"] else "no"
      for c in columns
    ]
    lines.append("| published inside our test CI | " + " | ".join(inside) + " |")
  lines += ["", "Valid curve:", "", "| epoch | seconds | " + " | ".join(columns) + " |"]
  lines.append("|---|---|" + "---|" * len(columns))
  for point in results["curve"]:
    cells = " | ".join(f"{point[c]:.4f}" for c in columns)
    lines.append(f"| {point['epoch']:g} | {point['seconds']:.0f} | {cells} |")
  return "\n".join(lines) + "\n"
