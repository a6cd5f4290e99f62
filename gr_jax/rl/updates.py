"""Several policy updates per rollout batch: PPO-style epochs over minibatches.

One rollout cycle is `epochs * minibatches` trainer steps. At the cycle's first
step the rollout is drawn with the current params, which are the old policy of the
whole cycle (its log-probs are stored in the rollout batch). Every step then
updates on one minibatch: epoch e visits the rollout's rows in a permutation keyed
by (cycle, e), and minibatch m is the m-th slice of it. After the first update the
importance ratio moves away from 1, so the clip can act.

With the defaults (1 epoch, 1 minibatch) every step draws a fresh rollout and
updates on all of it once: the ratio is exactly 1 and the clip never acts.

Resuming: prompts and permutations are functions of the step, so an interrupted
run sees the same data. A run resumed in the middle of a cycle draws that cycle's
rollout again from the resumed params (its old policy is then the resumed one);
checkpoints at cycle boundaries (`checkpoint_every` a multiple of
`updates_per_rollout`) avoid that.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gin
import jax
import jax.numpy as jnp

from gr_jax import errors

Batch = dict[str, Any]


@gin.configurable
@dataclasses.dataclass(frozen=True)
class UpdateSchedule:
  """How many updates one rollout batch feeds.

  Attributes:
    epochs: passes over each rollout batch.
    minibatches: updates per pass; the rollout batch is cut into this many slices.
  """

  epochs: int = 1
  minibatches: int = 1

  def __post_init__(self):
    for name in ("epochs", "minibatches"):
      if getattr(self, name) < 1:
        raise ValueError(f"UpdateSchedule.{name} must be >= 1, got {getattr(self, name)}")

  @property
  def updates_per_rollout(self) -> int:
    return self.epochs * self.minibatches

  def position(self, step: int) -> tuple[int, int, int]:
    """(cycle, epoch, minibatch) of a trainer step."""
    cycle, update = divmod(int(step), self.updates_per_rollout)
    epoch, minibatch = divmod(update, self.minibatches)
    return cycle, epoch, minibatch

  def check_batch(self, batch_size: int, data_ways: int) -> None:
    """Raises UserError unless minibatches split the batch evenly over the data axes."""
    size, rest = divmod(batch_size, self.minibatches)
    if rest or size % data_ways:
      raise errors.UserError(
        f"UpdateSchedule.minibatches={self.minibatches} must cut the rollout batch of "
        f"{batch_size} into equal minibatches that are multiples of the {data_ways} "
        "data-parallel devices"
      )


def select_minibatch(
  rollout: Batch, key: jax.Array, *, minibatches: int, index: jax.Array
) -> Batch:
  """Rows of minibatch `index` in the permutation drawn from `key`.

  Args:
    rollout: batch whose leaves have the rollout batch B on axis 0.
    key: PRNG key of the (cycle, epoch) permutation.
    minibatches: M, number of slices (static).
    index: which slice, in [0, M).

  Returns:
    The minibatch: every leaf with B / M rows on axis 0.
  """
  if minibatches == 1:
    return rollout
  rows = jax.tree.leaves(rollout)[0].shape[0]
  size = rows // minibatches
  order = jax.random.permutation(key, rows)  # [B]
  picked = jax.lax.dynamic_slice_in_dim(order, index * size, size)  # [B / M]
  return jax.tree.map(lambda leaf: jnp.take(leaf, picked, axis=0), rollout)


def cycle_batches(batch_fn: Callable[[int], Batch], schedule: UpdateSchedule):
  """step -> the prompt batch of the step's cycle (the same for all its updates)."""
  return lambda step: batch_fn(schedule.position(step)[0])


class RolloutCycles:
  """The trainer's `prepare_batch`: one rollout per cycle, one minibatch per step.

  Args:
    schedule: epochs and minibatches per rollout.
    rollout: (params, prompt batch, cycle) -> rollout batch (e.g. jitted
      `eg_grpo.make_rollout` keyed by the cycle).
    select: (rollout batch, cycle, epoch, minibatch) -> the step's batch (e.g. a
      jitted `select_minibatch` with a key folded from cycle and epoch).
  """

  def __init__(
    self,
    schedule: UpdateSchedule,
    rollout: Callable[[Any, Batch, int], Batch],
    select: Callable[[Batch, int, int, int], Batch],
  ):
    self.schedule = schedule
    self.rollout = rollout
    self.select = select
    self._cycle: int | None = None
    self._batch: Batch | None = None

  def __call__(self, state, batch: Batch, step: int) -> Batch:
    cycle, epoch, minibatch = self.schedule.position(step)
    if cycle != self._cycle:
      self._batch = self.rollout(state.params, batch, cycle)
      self._cycle = cycle
    return self.select(self._batch, cycle, epoch, minibatch)
