"""Optimizer and learning-rate schedule, both chosen in gin."""

from __future__ import annotations

import gin
import optax


@gin.configurable
def make_schedule(
  total_steps: int,
  learning_rate: float = 1e-3,
  schedule: str = "cosine",
  warmup_steps: int = 0,
  end_factor: float = 0.1,
) -> optax.Schedule:
  """Linear warm-up, then `constant`, `linear` or `cosine` decay to end_factor * lr."""
  decay_steps = max(total_steps - warmup_steps, 1)
  end_value = learning_rate * end_factor
  if schedule == "constant":
    decay = optax.constant_schedule(learning_rate)
  elif schedule == "linear":
    decay = optax.linear_schedule(learning_rate, end_value, decay_steps)
  elif schedule == "cosine":
    decay = optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=end_factor)
  else:
    raise ValueError(f"make_schedule.schedule: unknown '{schedule}' (constant, linear, cosine)")
  if warmup_steps <= 0:
    return decay
  warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
  return optax.join_schedules([warmup, decay], [warmup_steps])


@gin.configurable
def make_optimizer(
  schedule: optax.Schedule,
  optimizer: str = "adamw",
  b1: float = 0.9,
  b2: float = 0.999,
  weight_decay: float = 0.0,
  grad_clip_norm: float | None = 1.0,
) -> optax.GradientTransformation:
  """AdamW (or Adafactor / SGD) with optional global-norm clipping."""
  if optimizer == "adamw":
    tx = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay)
  elif optimizer == "adafactor":
    tx = optax.adafactor(schedule)
  elif optimizer == "sgd":
    tx = optax.sgd(schedule, momentum=b1)
  else:
    raise ValueError(f"make_optimizer.optimizer: unknown '{optimizer}' (adamw, adafactor, sgd)")
  if grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
  return tx
