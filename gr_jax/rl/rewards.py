"""Rewards for sampled SIDs from logged feedback on what the downstream ranker showed.

METHOD.md section 5: the reward of a SID is decided by the first rule that
matches, in this order (the values are not added up):

  1. it is the SID of a purchased item           -> `purchase` (1.0)
  2. it is the SID of a clicked item             -> `click`    (1.0)
  3. it is the SID of an exposed item            -> `exposure` (0.5)
  4. it is a valid SID (exists in the item pool) -> `valid`    (0.1)
  5. otherwise                                   -> `invalid`  (0.0)

A SID matching a logged item is a real item's SID, so rules 1-3 take precedence
over the sampler's validity flag: an item-pool restriction of the trie never
hides a click. Logged sets are [B, M, L] SID arrays with a [B, M] mask
(padding rows masked out); SIDs are compared by equality of all L levels.
"""

from __future__ import annotations

import dataclasses

import gin
import jax.numpy as jnp


@gin.configurable
@dataclasses.dataclass(frozen=True)
class RewardValues:
  """Reward of each feedback tier (first match wins).

  Attributes:
    purchase: reward of the SID of a purchased item.
    click: reward of the SID of a clicked item.
    exposure: reward of the SID of an exposed item.
    valid: reward of a valid SID without logged feedback.
    invalid: reward of an invalid SID.
  """

  purchase: float = 1.0
  click: float = 1.0
  exposure: float = 0.5
  valid: float = 0.1
  invalid: float = 0.0


def sid_in_set(sids: jnp.ndarray, logged: jnp.ndarray, logged_mask: jnp.ndarray) -> jnp.ndarray:
  """Whether each SID equals (on all levels) one of the unmasked logged SIDs of its row.

  Args:
    sids: [B, G+E, L] int SID codes.
    logged: [B, M, L] int SID codes of a logged set.
    logged_mask: [B, M] bool, False on padding rows.

  Returns:
    [B, G+E] bool.

  Raises:
    ValueError: when the shapes do not line up.
  """
  if sids.ndim != 3 or logged.ndim != 3:
    raise ValueError(f"sid_in_set: sids {sids.shape} and logged {logged.shape} must be [B, G+E, L]")
  if sids.shape[0] != logged.shape[0] or sids.shape[2] != logged.shape[2]:
    raise ValueError(
      f"sid_in_set: sids {sids.shape} and logged {logged.shape} differ in batch or levels"
    )
  if logged_mask.shape != logged.shape[:2]:
    raise ValueError(f"sid_in_set: logged_mask {logged_mask.shape} != {logged.shape[:2]}")
  # [B, G+E, M]: all levels equal.
  equal = jnp.all(sids[:, :, None, :] == logged[:, None, :, :], axis=-1)
  return jnp.any(equal & logged_mask[:, None, :], axis=-1)


def logged_feedback_rewards(
  sampled: jnp.ndarray,
  sample_valid: jnp.ndarray,
  purchased: jnp.ndarray,
  purchased_mask: jnp.ndarray,
  clicked: jnp.ndarray,
  clicked_mask: jnp.ndarray,
  exposed: jnp.ndarray,
  exposed_mask: jnp.ndarray,
  values: RewardValues | None = None,
) -> jnp.ndarray:
  """Reward of each sampled SID, first matching tier wins (see the module docstring).

  Args:
    sampled: [B, G, L] int SID codes.
    sample_valid: [B, G] bool, True when the SID exists in the item pool.
    purchased, clicked, exposed: [B, M_*, L] int SIDs of the logged items.
    purchased_mask, clicked_mask, exposed_mask: [B, M_*] bool, False on padding.
    values: reward of each tier; defaults to `RewardValues()` (gin-configurable).

  Returns:
    [B, G] float32 rewards.

  Raises:
    ValueError: when `sample_valid` does not match `sampled`.
  """
  values = RewardValues() if values is None else values
  if sample_valid.shape != sampled.shape[:2]:
    raise ValueError(
      f"logged_feedback_rewards: sample_valid {sample_valid.shape} != sampled {sampled.shape[:2]}"
    )
  in_purchased = sid_in_set(sampled, purchased, purchased_mask)  # [B, G]
  in_clicked = sid_in_set(sampled, clicked, clicked_mask)  # [B, G]
  in_exposed = sid_in_set(sampled, exposed, exposed_mask)  # [B, G]
  # Nested where from the lowest tier up: the outermost (purchase) wins.
  reward = jnp.where(sample_valid, values.valid, values.invalid)
  reward = jnp.where(in_exposed, values.exposure, reward)
  reward = jnp.where(in_clicked, values.click, reward)
  reward = jnp.where(in_purchased, values.purchase, reward)
  return reward.astype(jnp.float32)
