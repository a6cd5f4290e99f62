"""One EG-GRPO step, generic over the model (METHOD.md section 5).

The model enters through two injected callables, so any generator (and any
sampler: temperature, constrained or not) is a wiring choice of the caller:

  sample_fn(params, batch, rng) -> (sampled [B, G, L] int codes, valid [B, G] bool)
      draws G SIDs per request from the policy; the caller builds it from the
      config's `group_size`, `temperature` and `constrained_sampling`.
  logprob_fn(params, batch, sids [B, G+E, L]) -> [B, G+E, L] float token log-probs
      teacher-forced log p(s_l | input, s_<l) of each SID, at temperature 1.

A step is two phases:
  1. `make_rollout(config, sample_fn, logprob_fn)` gives a pure (jit-able)
     function `rollout(old_params, ref_params, batch, rng) -> batch'` that
     samples G SIDs, adds E experts from the logged clicks / exposures, scores
     the enlarged group with the logged-feedback reward (or a given reward function,
     e.g. gr_jax/rl/simulated_reward.py), computes group
     advantages and the old-policy and reference log-probs of every member
     (experts by teacher forcing), and returns the input batch plus those
     fields (ROLLOUT_KEYS).
  2. `EgGrpoTask.loss(variables, batch', rng)` evaluates the clipped objective
     with the current params; it implements the trainer's TrainTask protocol,
     so one rollout batch can feed one or several optimizer updates.

The input batch holds the model inputs plus the logged feedback as SIDs:
`purchased`, `clicked`, `exposed` [B, M, L] int and `*_mask` [B, M] bool.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np

from gr_jax.rl import advantages as advantages_lib
from gr_jax.rl import experts as experts_lib
from gr_jax.rl import losses
from gr_jax.rl import rewards as rewards_lib

Batch = dict[str, Any]
SampleFn = Callable[[Any, Batch, jax.Array], tuple[jax.Array, jax.Array]]
LogprobFn = Callable[[Any, Batch, jax.Array], jax.Array]
InitFn = Callable[[jax.Array, Batch], dict]
RewardFn = Callable[[Batch, Any], jax.Array]

FEEDBACK_KEYS = (
  "purchased",
  "purchased_mask",
  "clicked",
  "clicked_mask",
  "exposed",
  "exposed_mask",
)
ROLLOUT_KEYS = (
  "group_sids",  # [B, G+E, L] int32: sampled SIDs, then experts
  "group_mask",  # [B, G+E] bool: members in statistics and loss
  "is_expert",  # [B, G+E] bool
  "sid_valid",  # [B, G+E] bool: sampler validity flag (experts True)
  "rewards",  # [B, G+E] float32
  "advantages",  # [B, G+E] float32
  "zero_spread",  # [B] bool
  "logp_old",  # [B, G+E, L] float32, rollout params
  "logp_ref",  # [B, G+E, L] float32, frozen reference
)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EgGrpoConfig:
  """EG-GRPO knobs (paper defaults; [default] where the paper is silent).

  Attributes:
    group_size: G, sampled SIDs per request.
    num_experts: E, expert SIDs per request (0 = vanilla GRPO).
    temperature: rollout sampling temperature (for the caller's sample_fn).
    constrained_sampling: sample only valid SIDs (for the caller's sample_fn).
    dedup_sampled: mask sampled SIDs that repeat an earlier sample of the group.
    clip_eps: PPO clip range.
    kl_weight: weight of the k3 KL to the reference (0 disables it).
    kl_clip: bound on the reference log-ratio inside k3.
    kl_on_experts: also apply the KL term on expert tokens.
    advantage_estimator: registered estimator name ('grpo', 'dr_grpo').
    advantage_eps: eps in (R - mean) / (std + eps).
    luffy_shaping: LUFFY policy shaping f(p) = p / (p + gamma) on expert tokens.
    luffy_gamma: gamma of the shaping function.
    reward_values: reward of each feedback tier.
  """

  group_size: int = 8
  num_experts: int = 2
  temperature: float = 1.0
  constrained_sampling: bool = False
  dedup_sampled: bool = False
  clip_eps: float = 0.2
  kl_weight: float = 1.0
  kl_clip: float = 10.0
  kl_on_experts: bool = False
  advantage_estimator: str = "grpo"
  advantage_eps: float = 1e-6
  luffy_shaping: bool = False
  luffy_gamma: float = 0.1
  reward_values: rewards_lib.RewardValues = dataclasses.field(
    default_factory=rewards_lib.RewardValues
  )

  def __post_init__(self):
    checks = (
      ("group_size", self.group_size >= 1, ">= 1"),
      ("num_experts", self.num_experts >= 0, ">= 0"),
      ("temperature", self.temperature > 0, "> 0"),
      ("clip_eps", 0 < self.clip_eps < 1, "in (0, 1)"),
      ("kl_weight", self.kl_weight >= 0, ">= 0"),
      ("kl_clip", self.kl_clip > 0, "> 0"),
      ("advantage_eps", self.advantage_eps > 0, "> 0"),
      ("luffy_gamma", self.luffy_gamma > 0, "> 0"),
    )
    for name, ok, expected in checks:
      if not ok:
        raise ValueError(f"EgGrpoConfig.{name} must be {expected}, got {getattr(self, name)}")
    # Fails early, naming the known estimators, on a typo in gin.
    advantages_lib.get_advantage_estimator(self.advantage_estimator)


def _check_feedback(batch: Batch) -> None:
  missing = [key for key in FEEDBACK_KEYS if key not in batch]
  if missing:
    raise ValueError(f"EG-GRPO batch lacks logged-feedback fields {missing}; has {sorted(batch)}")


def make_rollout(
  config: EgGrpoConfig,
  sample_fn: SampleFn,
  logprob_fn: LogprobFn,
  reward_fn: RewardFn | None = None,
) -> Callable[[Any, Any, Batch, jax.Array], Batch]:
  """Builds the rollout phase of an EG-GRPO step.

  Args:
    config: the EG-GRPO knobs.
    sample_fn: `(params, batch, rng) -> (sampled [B, G, L], valid [B, G])`.
    logprob_fn: `(params, batch, sids [B, G+E, L]) -> [B, G+E, L]` token log-probs.
    reward_fn: `(batch, group) -> [B, G+E]` rewards of the enlarged group; None for
      the logged-feedback reward (`config.reward_values`).

  Returns:
    A pure function `rollout(old_params, ref_params, batch, rng)` returning the
    batch plus the ROLLOUT_KEYS fields (gradients stopped). It raises
    ValueError when the batch lacks logged feedback or the sampler's output
    does not have G = config.group_size SIDs per request.
  """
  estimator = advantages_lib.get_advantage_estimator(config.advantage_estimator)

  def logged_reward(batch: Batch, group: experts_lib.Group) -> jax.Array:
    return rewards_lib.logged_feedback_rewards(
      group.sids,
      group.sid_valid,
      batch["purchased"],
      batch["purchased_mask"],
      batch["clicked"],
      batch["clicked_mask"],
      batch["exposed"],
      batch["exposed_mask"],
      config.reward_values,
    )

  def rollout(old_params: Any, ref_params: Any, batch: Batch, rng: jax.Array) -> Batch:
    _check_feedback(batch)
    sample_rng, expert_rng = jax.random.split(rng)
    sampled, sample_valid = sample_fn(old_params, batch, sample_rng)
    batch_size = batch["clicked"].shape[0]
    levels = batch["clicked"].shape[2]
    expected = (batch_size, config.group_size, levels)
    if tuple(sampled.shape) != expected or tuple(sample_valid.shape) != expected[:2]:
      raise ValueError(
        f"sample_fn returned sampled {sampled.shape}, valid {sample_valid.shape}; expected "
        f"{expected} and {expected[:2]} (EgGrpoConfig.group_size={config.group_size})"
      )
    experts, expert_mask = experts_lib.draw_experts(
      expert_rng,
      batch["clicked"],
      batch["clicked_mask"],
      batch["exposed"],
      batch["exposed_mask"],
      config.num_experts,
    )
    group = experts_lib.build_group(
      sampled, sample_valid, experts, expert_mask, dedup_sampled=config.dedup_sampled
    )
    rewards = (reward_fn or logged_reward)(batch, group)  # [B, G+E]
    advantages = estimator(rewards, group.member_mask, config.advantage_eps)
    logp_old = logprob_fn(old_params, batch, group.sids)  # [B, G+E, L]
    logp_ref = logprob_fn(ref_params, batch, group.sids)  # [B, G+E, L]
    fields = {
      "group_sids": group.sids,
      "group_mask": group.member_mask,
      "is_expert": group.is_expert,
      "sid_valid": group.sid_valid,
      "rewards": rewards,
      "advantages": advantages.advantages,
      "zero_spread": advantages.zero_spread,
      "logp_old": logp_old.astype(jnp.float32),
      "logp_ref": logp_ref.astype(jnp.float32),
    }
    return {**batch, **jax.lax.stop_gradient(fields)}

  return rollout


class EgGrpoTask:
  """TrainTask for the update phase: the clipped objective on a rollout batch.

  Args:
    config: the EG-GRPO knobs.
    logprob_fn: `(params, batch, sids [B, G+E, L]) -> [B, G+E, L]` token log-probs;
      the same function the rollout used, so the ratio is 1 at the first update.
    init_fn: `(rng, batch) -> variables` of the policy (the trainer restores the
      stage-3 checkpoint into this structure).
  """

  def __init__(self, config: EgGrpoConfig, logprob_fn: LogprobFn, init_fn: InitFn):
    self.config = config
    self.logprob_fn = logprob_fn
    self.init_fn = init_fn

  def init(self, rng: jax.Array, batch: dict[str, np.ndarray]) -> dict:
    """Variables of the policy, from `init_fn`."""
    return self.init_fn(rng, batch)

  def loss_terms(self, params: Any, batch: Batch) -> tuple[jax.Array, losses.PolicyLossTerms]:
    """(logp_new [B, G+E, L], per-token loss terms) of a rollout batch under `params`.

    Raises:
      ValueError: when the batch is not a rollout batch.
    """
    missing = [key for key in ROLLOUT_KEYS if key not in batch]
    if missing:
      raise ValueError(f"EgGrpoTask: batch lacks rollout fields {missing}; run make_rollout")
    config = self.config
    logp_new = self.logprob_fn(params, batch, batch["group_sids"])  # [B, G+E, L]
    terms = losses.policy_loss_terms(
      logp_new,
      batch["logp_old"],
      batch["logp_ref"],
      batch["advantages"],
      batch["group_mask"],
      batch["is_expert"],
      clip_eps=config.clip_eps,
      kl_clip=config.kl_clip,
      kl_on_experts=config.kl_on_experts,
      luffy_shaping=config.luffy_shaping,
      luffy_gamma=config.luffy_gamma,
    )
    return logp_new, terms

  def loss(
    self, variables: dict, batch: Batch, rng: jax.Array
  ) -> tuple[jax.Array, tuple[dict[str, jax.Array], dict]]:
    """(scalar loss, (metrics, non-'params' collections unchanged)).

    Raises:
      ValueError: when the batch is not a rollout batch.
    """
    del rng  # The objective is deterministic given the rollout.
    logp_new, terms = self.loss_terms(variables["params"], batch)
    loss, metrics = losses.reduce_policy_loss(
      terms, logp_new, batch["is_expert"], self.config.kl_weight
    )
    metrics.update(
      losses.group_metrics(
        batch["rewards"],
        batch["group_mask"],
        batch["is_expert"],
        batch["sid_valid"],
        batch["zero_spread"],
      )
    )
    collections = {name: value for name, value in variables.items() if name != "params"}
    return loss, (metrics, collections)
