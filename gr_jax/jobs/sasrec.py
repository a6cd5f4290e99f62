"""SASRec baseline on Amazon Scientific: the protocol check of the seqrec numbers.

Trains `gr_jax.models.sasrec` on the UniSRec files with early stopping on valid,
scores test once at the selected epoch, and writes WORKDIR/eval/sasrec/
metrics.json, results.md (test row with 95% intervals next to the published
SASRec row, valid curve, runtime) and per_user_test.npz (for `compare_seqrec`).
Checkpoints go to WORKDIR/sasrec/.
"""

from __future__ import annotations

import os
import time

import gin
from absl import logging

from gr_jax import io_utils
from gr_jax import workdir as workdir_lib
from gr_jax.data.amazon import reader as amazon
from gr_jax.eval import seqrec_compare
from gr_jax.models import sasrec, sasrec_task

# SASRec (IDs) on this exact data, full ranking: UniSRec (Hou et al., KDD 2022) and
# VQ-Rec (Hou et al., WWW 2023) tables, as listed in the data folder's README.
PUBLISHED = {"recall@10": 0.1080, "ndcg@10": 0.0553, "recall@50": 0.2042, "ndcg@50": 0.0760}


@gin.configurable
def train_sasrec(
  workdir: str,
  data_dir: str = gin.REQUIRED,
  hidden: int = 64,
  num_blocks: int = 2,
  num_heads: int = 1,
  dropout: float = 0.2,
  max_len: int = 50,
  loss: str = "ce",
  learning_rate: float = 1e-3,
  batch_size: int = 128,
  epochs: int = 200,
  eval_every: int = 1,
  patience: int = 10,
  time_budget_s: float = 600.0,
  seed: int = 0,
  dataset: str | None = None,
) -> dict:
  """Runs the module docstring's job; returns the metrics dict.

  Args:
    workdir: the run's work directory.
    data_dir: folder of the UniSRec-layout files (the published row is Scientific's).
    hidden, num_blocks, num_heads, dropout, max_len: the model (sasrec.SasrecConfig).
    loss: 'ce' (softmax over all items) or 'bce' (one sampled negative per position).
    learning_rate: Adam learning rate (constant).
    batch_size: users per step.
    epochs: most epochs trained.
    eval_every: epochs between valid evaluations.
    patience: evaluations without a better valid NDCG@10 before stopping.
    time_budget_s: training stops at the first evaluation after this wall time.
    seed: initialisation, dropout, negatives and batch order.
    dataset: the file prefix; None = the only dataset in data_dir.
  """
  start = time.perf_counter()
  _, logs, info = amazon.load_amazon(data_dir, dataset, history_len=max_len)
  config = sasrec.SasrecConfig(
    num_items=info.num_items,
    max_len=max_len,
    hidden=hidden,
    num_blocks=num_blocks,
    num_heads=num_heads,
    dropout=dropout,
  )
  fit = sasrec_task.FitConfig(
    loss=loss,
    learning_rate=learning_rate,
    batch_size=batch_size,
    epochs=epochs,
    eval_every=eval_every,
    patience=patience,
    time_budget_s=time_budget_s,
    seed=seed,
  )
  results = sasrec_task.fit_and_evaluate(os.path.join(workdir, "sasrec"), config, fit, logs)
  if results["preempted"]:
    logging.warning("sasrec: preempted; rerun the same command to resume")
    return results
  per_user = results.pop("per_user")
  results.update(
    config={**vars(config), **vars(fit)},
    ks=list(fit.ks),
    select_metric=fit.select_metric,
    num_items=info.num_items,
    published=PUBLISHED,
    runtime_s=time.perf_counter() - start,
  )
  out_dir = os.path.join(workdir_lib.eval_dir(workdir), "sasrec")
  text = sasrec_task.report_markdown(results, PUBLISHED)
  seqrec_compare.write(out_dir, per_user)
  io_utils.write_json(os.path.join(out_dir, "metrics.json"), results)
  io_utils.write_text(os.path.join(out_dir, "results.md"), text)
  print(text)
  return results
