"""A reward read from the simulated world instead of the logs.

For data made by the built-in world (gr_jax/data/world), the reward of a SID for a
request can come from the world's truth: the SID's items alone are served to the
world's ranker, exposure and click model for that request, through the simulation
of the online A/B test (gr_jax/eval/online.py, `OnlineWorld.serve`), and the reward
is the expected clicks plus `purchases` x the expected purchases. The logged-feedback
reward (gr_jax/rl/rewards.py) knows only the few items the logged system showed;
this one grades every valid SID by how much the request's user would engage with
its items: a denser signal. A SID holding several items is served as all of them,
as retrieval expands it (so it can earn more than one expected click); a SID with
no item (invalid) earns 0.

`train_rl.reward` picks one of REWARDS. The world is numpy; its reward enters the
jitted rollout through `jax.pure_callback`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import gin
import jax
import jax.numpy as jnp
import numpy as np

from gr_jax import errors
from gr_jax.eval import online as online_lib
from gr_jax.sid import tables as tables_lib

REWARDS = ("logged", "simulated")
# (batch, group) -> [B, G+E] float32 rewards, inside the jitted rollout.
RewardFn = Callable[[dict, object], jax.Array]


class SimulatedRewardError(errors.UserError):
  """The simulated reward was asked for data that no simulated world stands behind."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SimulatedRewardWeights:
  """Reward = clicks x expected clicks + purchases x expected purchases of the SID's items."""

  clicks: float = 1.0
  purchases: float = 0.0


class SimulatedReward:
  """The world's expected engagement with each SID's items, per request.

  Args:
    online: the world's simulated ranker and users.
    sid_tables: the SID -> items table of the run's tokenizer.
    weights: weights of expected clicks and purchases.
  """

  def __init__(
    self,
    online: online_lib.OnlineWorld,
    sid_tables: tables_lib.SidTables,
    weights: SimulatedRewardWeights | None = None,
  ):
    self.online = online
    self.sid_tables = sid_tables
    self.weights = weights or SimulatedRewardWeights()
    self.max_items = max(int(np.max(sid_tables.sid_sizes, initial=0)), 1)

  def __call__(self, rows: np.ndarray, sids: np.ndarray) -> np.ndarray:
    """[B] request rows of the logs, [B, M, L] SID codes -> [B, M] float32 rewards."""
    rows, sids = np.asarray(rows), np.asarray(sids)
    batch, members, levels = sids.shape
    items = tables_lib.items_for_sids(self.sid_tables, sids.reshape(-1, levels), self.max_items)
    served = self.online.serve(np.repeat(rows, members), items)  # [B * M] each
    reward = self.weights.clicks * served["clicks"] + self.weights.purchases * served["purchases"]
    return reward.reshape(batch, members).astype(np.float32)

  def in_rollout(self, batch: dict, group) -> jax.Array:
    """The rollout's reward of the group's SIDs ([B, G+E]), computed on the host."""
    shape = jax.ShapeDtypeStruct(group.sid_valid.shape, jnp.float32)
    return jax.pure_callback(self, shape, batch["request_row"], group.sids)


def setting(kind: str) -> str:
  """How a run's reward is recorded with its settings (the weights for 'simulated')."""
  return f"simulated {SimulatedRewardWeights()}" if kind == "simulated" else kind


def make_reward_fn(kind: str, world, sid_tables, num_items: int) -> RewardFn | None:
  """The rollout's reward for `train_rl.reward`: None for 'logged' (the rollout's own).

  Raises:
    errors.GinConfigError: an unknown kind.
    SimulatedRewardError: 'simulated' without a world (real data), or with catalog
      items the world does not know.
  """
  if kind not in REWARDS:
    raise errors.GinConfigError(f"train_rl.reward = {kind!r}: expected one of {REWARDS}")
  if kind == "logged":
    return None
  if world is None:
    raise SimulatedRewardError(
      "train_rl.reward = 'simulated' needs the simulated world behind the data; this work "
      "directory's data has none (real data): use train_rl.reward = 'logged'"
    )
  online = online_lib.for_world(world, num_items)
  if online is None:
    raise SimulatedRewardError(
      "train_rl.reward = 'simulated': the catalog has items added after the world was made, "
      "which its simulated users cannot judge; use train_rl.reward = 'logged'"
    )
  return SimulatedReward(online, sid_tables).in_rollout
