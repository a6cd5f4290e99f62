"""Sequence training of the generator with early stopping on valid full-ranking NDCG@10.

Training (`seq_task`): one example per user, batched by length (`train.bucket_batching`),
epochs over the users. Every `eval_every` epochs the current weights decode the valid
users (a seeded sample of `select_requests`, one beam size and within-cluster rule)
through the seqrec evaluation (`eval.seqrec`: constrained beam search, beams -> a full
ranking of the catalog, Recall / NDCG@K); the weights of the best valid `select_metric`
are kept. Training stops after `patience` evaluations without improvement, or at the
first evaluation after `time_budget_s`.

Then the selected weights are saved as the stage's generator (checkpoints/ +
generator.json beside them, loadable by `workdir.load_generator`) and decode every valid
and test user over `beam_sizes` x `rules`; the (rule, beam) pair with the best valid
`select_metric` is the reported test row. The test split is decoded only here, once.

The valid curve and the best weights live in memory: a resumed run continues training
from its checkpoint (WORKDIR/.../train/) but selects only among its own evaluations.
"""

from __future__ import annotations

import dataclasses
import os
import time

import gin
import jax
from absl import logging

from gr_jax import workdir as workdir_lib
from gr_jax.data import schema
from gr_jax.eval import seqrec, stats
from gr_jax.models import seq_task
from gr_jax.models.generator import Generator
from gr_jax.serving import retriever as retriever_lib
from gr_jax.train import bucket_batching, checkpoints, early_stopping, optim, trainer


@gin.configurable
@dataclasses.dataclass
class SeqFitConfig:
  """Training and selection knobs (see the module docstring).

  Attributes:
    learning_rate, warmup_steps: Adam (b2 0.98), linear warm-up then constant.
    batch_size: users per step.
    epochs: most epochs trained.
    eval_every: epochs between valid evaluations.
    patience: evaluations without a better valid `select_metric` before stopping.
    time_budget_s: training stops at the first evaluation after this wall time.
    select_metric: the valid metric that selects the epoch and the (rule, beam) row.
    select_beam, select_rule: the decoding of the per-epoch valid evaluation.
    select_requests: valid users sampled for the per-epoch evaluation (0 = all).
    beam_sizes, rules: decodings of the selected weights (valid picks the row).
    ks: Recall / NDCG cut-offs.
    seed: initialisation and batch order.
  """

  learning_rate: float = 1e-3
  warmup_steps: int = 100
  batch_size: int = 128
  epochs: int = 200
  eval_every: int = 1
  patience: int = 5
  time_budget_s: float = 2400.0
  select_metric: str = "ndcg@10"
  select_beam: int = 20
  select_rule: str = "efficiency"
  select_requests: int = 2000
  beam_sizes: tuple[int, ...] = (20, 50)
  rules: tuple[str, ...] = seqrec.WITHIN_CLUSTER_RULES
  ks: tuple[int, ...] = (10, 50)
  seed: int = 0


def fit_and_evaluate(
  stage_dir: str,
  generator: Generator,
  fit: SeqFitConfig,
  catalog,
  logs,
  sid_tables,
  *,
  mesh,
  rules,
) -> dict:
  """Trains, selects on valid, decodes test once (module docstring).

  Returns:
    {preempted: False, curve: [{epoch, step, seconds, <valid scores>}], selected: {epoch,
     step, value}, runs: {'<rule>/beam<K>': {valid, test}}, selected_run, test, epochs_run,
     steps_per_epoch, train_seconds, num_train_users, requests: {valid, test}};
    after a SIGTERM only {preempted: True, curve, train_seconds}.
  """
  start_time = time.perf_counter()
  layout, max_items = generator.layout, seq_task.max_history_items(generator)
  examples = seq_task.training_examples(logs, sid_tables.item_sid, layout, max_items)
  arrays = {k: examples[k] for k in ("tokens", "loss_weights")}
  widths = seq_task.bucket_widths(max_items, layout)
  batch_fn, steps_per_epoch = bucket_batching.bucket_batches(
    arrays, examples["lengths"], widths, fit.batch_size, "loss_weights", fit.seed
  )
  train_config = early_stopping.epoch_trainer_config(
    steps_per_epoch, fit.epochs, fit.eval_every, fit.seed, checkpoint_every_evals=5
  )
  schedule = optim.make_schedule(
    train_config.num_steps,
    learning_rate=fit.learning_rate,
    schedule="constant",
    warmup_steps=fit.warmup_steps,
  )
  runner = trainer.Trainer(
    seq_task.SequenceTask(generator.model_config),
    os.path.join(stage_dir, "train"),
    config=train_config,
    mesh=mesh,
    rules=rules,
    schedule=schedule,
    optimizer=optim.make_optimizer(schedule, b2=0.98),
  )
  select_logs = seqrec.sample_seqrec_logs(logs, fit.select_requests, 0, fit.seed)
  select_key = f"{fit.select_rule}/beam{fit.select_beam}"
  retriever: list[retriever_lib.Retriever] = []  # made at the first evaluation

  def decode_runs(params, split_logs, beam_sizes, cluster_rules, splits, per_user=None):
    if not retriever:
      retriever.append(
        retriever_lib.generator_retriever(
          generator, params, sid_tables, catalog.efficiency_score, mesh=mesh, rules=runner.rules
        )
      )
    retriever[0].set_params(params)
    return seqrec.evaluate_seqrec_generator(
      retriever[0], generator, catalog, split_logs, None, beam_sizes, cluster_rules, fit.ks,
      splits=splits, prompts_fn=seq_task.sequence_prompts, per_user=per_user,
    )  # fmt: skip

  selection = early_stopping.ValidSelection(
    fit.select_metric, fit.patience, fit.time_budget_s, steps_per_epoch, start_time
  )

  def eval_fn(state, step):
    beam, rule = (fit.select_beam,), (fit.select_rule,)
    runs = decode_runs(state.params, select_logs, beam, rule, ("valid",))
    valid = _means(runs[select_key]["valid"])
    selection.record(step, state.params, valid)
    logging.info("seq SFT step %d (%.0f s): valid %s", step, selection.curve[-1]["seconds"], valid)
    return valid

  result = runner.fit(batch_fn, eval_fn=eval_fn, should_stop=selection.should_stop)
  train_seconds = time.perf_counter() - start_time
  runner.close()
  if result.preempted:  # checkpoint saved; a rerun resumes, selects and reports
    return {"preempted": True, "curve": selection.curve, "train_seconds": train_seconds}
  save_selected(stage_dir, generator, selection.params, selection.step)
  per_user: dict = {}
  runs = decode_runs(selection.params, logs, fit.beam_sizes, fit.rules, ("valid", "test"), per_user)
  selected_run = max(runs, key=lambda key: runs[key]["valid"][fit.select_metric])
  selected = selection.selected_point()
  return {
    "preempted": False,
    "curve": selection.curve,
    "selected": {"epoch": selected["epoch"], "step": selection.step, "value": selection.value},
    "runs": runs,
    "selected_run": selected_run,
    "test": runs[selected_run]["test"],
    "per_user": per_user[selected_run],  # arrays: written beside metrics.json, not in it
    "epochs_run": int(jax.device_get(result.state.step)) / steps_per_epoch,
    "steps_per_epoch": steps_per_epoch,
    "train_seconds": train_seconds,
    "num_train_users": len(arrays["tokens"]),
    "requests": {s: int((logs.split == schema.SPLITS.index(s)).sum()) for s in ("valid", "test")},
  }


def _means(scores: dict) -> dict:
  """The scalar entries of a scores dict (its intervals left out)."""
  return {k: v for k, v in scores.items() if not isinstance(v, dict)}


def save_selected(stage_dir: str, generator: Generator, params, step: int) -> None:
  """The selected weights as a generator: stage_dir/checkpoints + generator.json."""
  saver = checkpoints.Checkpointer(
    os.path.join(stage_dir, "checkpoints"), max_to_keep=1, async_save=False
  )
  saver.save(step, {"params": params, "model_state": {}}, force=True)
  saver.close()
  workdir_lib.save_generator(stage_dir, generator)


def report_markdown(results: dict, published: dict[str, float]) -> str:
  """results.md: the selected test row with 95% intervals beside `published`, the valid
  curve, then every (rule, beam) pair."""
  ks = results["ks"]
  columns = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")]
  selected = results["selected"]
  test = results["test"]["ci"]
  lines = [
    f"Full ranking over {results['num_items']} items; {results['requests']['test']} test / "
    f"{results['requests']['valid']} valid users; epoch {selected['epoch']:g} selected by "
    f"valid {results['select_metric']} ({results['select_key']}, {results['select_requests']} "
    f"sampled valid users); row {results['selected_run']} selected by valid on all users; "
    f"95% bootstrap intervals over users. Training {results['train_seconds']:.0f} s, "
    f"{results['epochs_run']:g} epochs; whole job {results['runtime_s']:.0f} s.",
    "",
    "| row | " + " | ".join(columns) + " |",
    "|---|" + "---|" * len(columns),
    "| test | " + " | ".join(_cell(test[c]) for c in columns) + " |",
    "| published SASRec (test) | " + " | ".join(f"{published[c]:.4f}" for c in columns) + " |",
    "",
    f"Valid curve ({results['select_key']}):",
    "",
    "| epoch | seconds | " + " | ".join(columns) + " |",
    "|---|---|" + "---|" * len(columns),
  ]
  for point in results["curve"]:
    cells = " | ".join(f"{point[c]:.4f}" for c in columns)
    lines.append(f"| {point['epoch']:g} | {point['seconds']:.0f} | {cells} |")
  lines += ["", "Selected epoch, every (rule, beam) pair (test; valid selects):", ""]
  lines.append("| rule/beam | " + " | ".join(columns) + f" | valid {results['select_metric']} |")
  lines.append("|---|" + "---|" * (len(columns) + 1))
  for key, splits in results["runs"].items():
    cells = " | ".join(f"{splits['test'][c]:.4f}" for c in columns)
    lines.append(f"| {key} | {cells} | {splits['valid'][results['select_metric']]:.4f} |")
  return "\n".join(lines) + "\n"


def _cell(interval: dict) -> str:
  return stats.format_interval(stats.Interval(**interval))
