"""Nothing non-finite is ever checkpointed, and resume skips a poisoned checkpoint."""

import numpy as np
import pytest

from gr_jax import errors
from gr_jax.train import example_task, partitioning, trainer


def _poisoned(from_step):
  clean = example_task.regression_batches(batch_size=16)

  def batch_fn(step):
    batch = clean(step)
    if step >= from_step:
      batch = {**batch, "x": np.full_like(batch["x"], np.nan)}
    return batch

  return batch_fn


def _fit(workdir, batch_fn, num_steps=30, check_finite=True):
  config = trainer.TrainerConfig(
    num_steps=num_steps,
    log_every=1000,
    checkpoint_every=10,
    max_to_keep=5,
    progress_bar=False,
    async_checkpoint=False,
    check_finite=check_finite,
  )
  runner = trainer.Trainer(
    example_task.RegressionTask(),
    str(workdir),
    config=config,
    mesh=partitioning.make_mesh((8, 1, 1)),
  )
  try:
    return runner.fit(batch_fn)
  finally:
    runner.close()


def test_nan_weights_never_saved_and_resume_uses_last_finite(tmp_path):
  # The NaN enters at step 15, between log steps; the save of step 20 must refuse it.
  with pytest.raises(errors.NonFiniteError, match="last finite checkpoint is step 10"):
    _fit(tmp_path, _poisoned(15))
  runner = trainer.Trainer(example_task.RegressionTask(), str(tmp_path))
  assert runner.checkpointer.all_steps() == [10]
  runner.close()
  result = _fit(tmp_path, example_task.regression_batches(batch_size=16))
  assert result.resumed_from == 10 and np.isfinite(result.last_metrics["loss"])


def test_resume_drops_poisoned_checkpoints_of_unchecked_runs(tmp_path):
  _fit(tmp_path, _poisoned(15), check_finite=False)  # saves 10, 20 (NaN), 30 (NaN)
  result = _fit(tmp_path, example_task.regression_batches(batch_size=16), num_steps=40)
  assert result.resumed_from == 10
  assert np.isfinite(result.last_metrics["loss"])
