"""The smoke job: the generic trainer on the example regression task."""

from __future__ import annotations

import os

import gin

from gr_jax import io_utils
from gr_jax.train import example_task, partitioning, trainer


@gin.configurable
def train_example(workdir: str, task=None, batches=None):
  """Trains the example regression task; writes metrics.json."""
  task = task or example_task.RegressionTask()
  batch_fn = batches or example_task.regression_batches()
  mesh, rules = partitioning.make_mesh(), partitioning.logical_rules()
  runner = trainer.Trainer(task, workdir, config=trainer.TrainerConfig(), mesh=mesh, rules=rules)
  result = runner.fit(batch_fn)
  runner.close()
  io_utils.write_json(
    os.path.join(workdir, "metrics.json"), {**result.last_metrics, "preempted": result.preempted}
  )
  return result
