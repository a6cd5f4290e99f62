"""Early stopping on a validation metric: the valid curve, the best parameters, when to stop."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from gr_jax.train import trainer


def epoch_trainer_config(
  steps_per_epoch: int, epochs: int, eval_every_epochs: int, seed: int, checkpoint_every_evals: int
) -> trainer.TrainerConfig:
  """Trainer settings for epoch-based training with valid selection: logs once per epoch,
  evaluates every `eval_every_epochs` epochs, keeps one checkpoint (for resuming)."""
  eval_steps = steps_per_epoch * eval_every_epochs
  return trainer.TrainerConfig(
    num_steps=steps_per_epoch * epochs,
    log_every=steps_per_epoch,
    checkpoint_every=eval_steps * checkpoint_every_evals,
    eval_every=eval_steps,
    max_to_keep=1,
    seed=seed,
    progress_bar=False,
  )


class ValidSelection:
  """Keeps the parameters with the best valid `metric`; stops after `patience` evaluations
  without a new best or once `time_budget_s` has passed since `start_time`."""

  def __init__(
    self, metric: str, patience: int, time_budget_s: float, steps_per_epoch: int, start_time: float
  ):
    self.metric, self.patience, self.time_budget_s = metric, patience, time_budget_s
    self.steps_per_epoch, self.start_time = steps_per_epoch, start_time
    self.curve: list[dict] = []  # one point per evaluation: epoch, step, seconds, metrics
    self.value, self.step, self.params = -1.0, None, None
    self.evals_since = 0

  def record(self, step: int, params, valid: dict) -> None:
    """Adds one evaluation; a new best keeps a copy of `params`."""
    seconds = time.perf_counter() - self.start_time
    epoch = step / self.steps_per_epoch
    self.curve.append({"epoch": epoch, "step": step, "seconds": seconds, **valid})
    if valid[self.metric] > self.value:
      self.value, self.step, self.evals_since = valid[self.metric], step, 0
      self.params = jax.tree.map(jnp.copy, params)
    else:
      self.evals_since += 1

  def should_stop(self, step: int) -> bool:
    del step
    spent = time.perf_counter() - self.start_time
    return self.evals_since >= self.patience or spent >= self.time_budget_s

  def selected_point(self) -> dict:
    return next(point for point in self.curve if point["step"] == self.step)
