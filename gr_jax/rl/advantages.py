"""Group-relative advantage estimators, registered by name (the config picks one).

Every estimator maps rewards [B, G+E] and a member mask [B, G+E] to
advantages [B, G+E] (0 on masked members) and a [B] bool saying which
groups have zero reward spread (all members equal: no learning signal from the
policy-gradient term). Statistics are taken over the valid members of each
group (axis 1) only, never across the batch axis: mixing groups would silently
turn GRPO into a batch-baseline REINFORCE.

  grpo:    A = (R - mean(R)) / (std(R) + eps), population std (ddof 0)
  dr_grpo: A = R - mean(R)   (Dr. GRPO: no std division)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp

# Two rewards closer than this count as equal when deciding zero spread.
SPREAD_TOLERANCE = 1e-6


class Advantages(NamedTuple):
  """Output of an advantage estimator.

  Attributes:
    advantages: [B, G+E] float32, 0 on masked members.
    zero_spread: [B] bool, True where all valid members share one reward.
  """

  advantages: jnp.ndarray
  zero_spread: jnp.ndarray


AdvantageEstimator = Callable[[jnp.ndarray, jnp.ndarray, float], Advantages]

_ESTIMATORS: dict[str, AdvantageEstimator] = {}


def register_advantage_estimator(name: str) -> Callable[[AdvantageEstimator], AdvantageEstimator]:
  """Decorator registering `fn(rewards, member_mask, eps) -> Advantages` under `name`.

  Raises:
    ValueError: when `name` is already registered.
  """

  def register(fn: AdvantageEstimator) -> AdvantageEstimator:
    if name in _ESTIMATORS:
      raise ValueError(f"advantage estimator '{name}' is already registered")
    _ESTIMATORS[name] = fn
    return fn

  return register


def get_advantage_estimator(name: str) -> AdvantageEstimator:
  """The estimator registered under `name`.

  Raises:
    ValueError: naming the known estimators when `name` is unknown.
  """
  if name not in _ESTIMATORS:
    raise ValueError(f"unknown advantage estimator '{name}', known: {sorted(_ESTIMATORS)}")
  return _ESTIMATORS[name]


def group_moments(
  rewards: jnp.ndarray, member_mask: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Mean, population std and zero-spread flag over the valid members of each group.

  Args:
    rewards: [B, G+E] float rewards.
    member_mask: [B, G+E] bool.

  Returns:
    mean [B], std [B], zero_spread [B] bool. A group without valid
    members has mean 0, std 0 and counts as zero spread.
  """
  weights = member_mask.astype(jnp.float32)  # [B, G+E]
  count = jnp.maximum(weights.sum(axis=1), 1.0)  # [B]
  mean = (rewards * weights).sum(axis=1) / count  # [B]
  centred = (rewards - mean[:, None]) * weights  # [B, G+E]
  std = jnp.sqrt((centred**2).sum(axis=1) / count)  # [B]
  high = jnp.max(jnp.where(member_mask, rewards, -jnp.inf), axis=1)
  low = jnp.min(jnp.where(member_mask, rewards, jnp.inf), axis=1)
  zero_spread = ~(high - low > SPREAD_TOLERANCE)  # also True for empty groups (-inf - inf)
  return mean, std, zero_spread


def _check(rewards: jnp.ndarray, member_mask: jnp.ndarray) -> None:
  if rewards.ndim != 2 or member_mask.shape != rewards.shape:
    raise ValueError(
      f"advantages: rewards {rewards.shape} must be [B, G+E] and match mask {member_mask.shape}"
    )


@register_advantage_estimator("grpo")
def grpo_advantages(
  rewards: jnp.ndarray, member_mask: jnp.ndarray, eps: float = 1e-6
) -> Advantages:
  """(R - mean) / (std + eps) within each group (GRPO, DeepSeekMath)."""
  _check(rewards, member_mask)
  mean, std, zero_spread = group_moments(rewards, member_mask)
  advantages = (rewards - mean[:, None]) / (std[:, None] + eps)
  return Advantages(jnp.where(member_mask, advantages, 0.0).astype(jnp.float32), zero_spread)


@register_advantage_estimator("dr_grpo")
def dr_grpo_advantages(
  rewards: jnp.ndarray, member_mask: jnp.ndarray, eps: float = 1e-6
) -> Advantages:
  """R - mean within each group (Dr. GRPO); `eps` is unused, kept for one signature."""
  del eps
  _check(rewards, member_mask)
  mean, _, zero_spread = group_moments(rewards, member_mask)
  advantages = rewards - mean[:, None]
  return Advantages(jnp.where(member_mask, advantages, 0.0).astype(jnp.float32), zero_spread)
