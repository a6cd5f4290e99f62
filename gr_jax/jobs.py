"""Every job a gin file can name with `run.job = @<name>`.

A job is `fn(workdir)`; it reads earlier stages' artefacts from the work
directory and writes its own. Library code does the work; jobs only wire it.
"""

from __future__ import annotations

import json
import os

import gin

from gr_jax.train import example_task, trainer


@gin.configurable
def train_example(workdir: str, task=None, batches=None):
  """Trains the example regression task; writes metrics.json (the smoke job)."""
  task = task or example_task.RegressionTask()
  batch_fn = batches or example_task.regression_batches()
  runner = trainer.Trainer(task, workdir, config=trainer.TrainerConfig())
  result = runner.fit(batch_fn)
  runner.close()
  _write_json(
    os.path.join(workdir, "metrics.json"), {**result.last_metrics, "preempted": result.preempted}
  )
  return result


def _write_json(path: str, payload: dict) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=2, sort_keys=True)
  os.replace(tmp, path)
