"""The EG-GRPO policy loss: token-level clipped ratio, optional LUFFY shaping, k3 KL.

For every SID token t of every valid member j of a group (log-probs are per
token, teacher-forced; experts' old log-probs come from the old policy too, so
their ratio is 1 at the first update):

  ratio_t   = exp(logp_new_t - logp_old_t)
  surrogate = min(ratio_t * A_j, clip(ratio_t, 1 - eps, 1 + eps) * A_j)

With `luffy_shaping`, expert (off-policy) tokens use LUFFY's policy shaping
instead (Yan et al. 2025, "Learning to Reason under Off-Policy Guidance"): the
ratio is replaced by f(p) = p / (p + gamma) of the current token probability
p = exp(logp_new_t), with no clipping, so surrogate = f(p) * A_j. Its gradient
f'(p) p grad(logp) = gamma p / (p + gamma)^2 grad(logp) keeps a useful signal on
low-probability expert tokens where the plain ratio gradient would vanish.

KL to the frozen reference (the stage-3 SFT model), k3 estimator per token with
the log-ratio clipped to [-c, c] so exp() cannot overflow:

  r = clip(logp_ref_t - logp_new_t, -c, c),   kl_t = exp(r) - r - 1  (>= 0)

k3 is an estimate of KL(pi || pi_ref) only on tokens sampled from the policy, so
by default it is applied to sampled members only (`kl_on_experts` adds experts).

Normalisation (token level, as DAPO): the surrogate is averaged over all valid
tokens of all valid members (sampled and experts) of the whole batch, the KL
over its valid tokens; loss = -mean(surrogate) + kl_weight * mean(kl). Since
every SID has L tokens this equals a per-member mean too.

Note: at the first update (ratio 1) with GRPO advantages summing to 0 in each
group, `pg_loss` reads 0 by construction while its gradient does not vanish;
watch gradient norms and the reward metrics, not the loss value.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp


class PolicyLossTerms(NamedTuple):
  """Per-token terms of the loss, [B, G+E, L] each.

  Attributes:
    surrogate: the objective to maximise (0 on invalid tokens).
    kl: k3 estimate (0 on tokens the KL does not apply to).
    ratio: exp(logp_new - logp_old) (1 on invalid tokens).
    clipped: bool, the clipped branch is the active one (sampled / unshaped tokens).
    pg_weight: float 1 on tokens the surrogate is averaged over.
    kl_weight: float 1 on tokens the KL is averaged over.
    ratio_weight: float 1 on tokens that use the clipped ratio (clip fraction).
  """

  surrogate: jnp.ndarray
  kl: jnp.ndarray
  ratio: jnp.ndarray
  clipped: jnp.ndarray
  pg_weight: jnp.ndarray
  kl_weight: jnp.ndarray
  ratio_weight: jnp.ndarray


def masked_mean(values: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
  """sum(values * weights) / max(sum(weights), 1): 0 when nothing is selected."""
  weights = weights.astype(jnp.float32)
  return (values * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def k3_kl(logp_new: jnp.ndarray, logp_ref: jnp.ndarray, kl_clip: float) -> jnp.ndarray:
  """k3 estimator exp(r) - r - 1 with r = clip(logp_ref - logp_new, -kl_clip, kl_clip)."""
  log_ratio = jnp.clip(logp_ref - logp_new, -kl_clip, kl_clip)
  return jnp.exp(log_ratio) - log_ratio - 1.0


def policy_loss_terms(
  logp_new: jnp.ndarray,
  logp_old: jnp.ndarray,
  logp_ref: jnp.ndarray,
  advantages: jnp.ndarray,
  member_mask: jnp.ndarray,
  is_expert: jnp.ndarray,
  *,
  clip_eps: float = 0.2,
  kl_clip: float = 10.0,
  kl_on_experts: bool = False,
  luffy_shaping: bool = False,
  luffy_gamma: float = 0.1,
) -> PolicyLossTerms:
  """Per-token surrogate and KL terms (see the module docstring for the formulas).

  Args:
    logp_new: [B, G+E, L] token log-probs under the current params.
    logp_old: [B, G+E, L] token log-probs under the rollout (old) params.
    logp_ref: [B, G+E, L] token log-probs under the frozen reference.
    advantages: [B, G+E] per-member advantages.
    member_mask: [B, G+E] bool, valid group members.
    is_expert: [B, G+E] bool, expert (off-policy) members.
    clip_eps: PPO clip range epsilon.
    kl_clip: bound c on the reference log-ratio inside k3.
    kl_on_experts: also apply the KL term on expert tokens.
    luffy_shaping: use f(p) = p / (p + gamma), unclipped, on expert tokens.
    luffy_gamma: gamma of the shaping function.

  Returns:
    The `PolicyLossTerms`.

  Raises:
    ValueError: on mismatched shapes.
  """
  if logp_new.ndim != 3 or logp_old.shape != logp_new.shape or logp_ref.shape != logp_new.shape:
    raise ValueError(
      f"policy_loss_terms: logp_new {logp_new.shape}, logp_old {logp_old.shape}, logp_ref "
      f"{logp_ref.shape} must all be [B, G+E, L]"
    )
  for name, value in (("advantages", advantages), ("member_mask", member_mask)):
    if value.shape != logp_new.shape[:2]:
      raise ValueError(f"policy_loss_terms: {name} {value.shape} != {logp_new.shape[:2]}")
  if is_expert.shape != logp_new.shape[:2]:
    raise ValueError(f"policy_loss_terms: is_expert {is_expert.shape} != {logp_new.shape[:2]}")
  token_valid = jnp.broadcast_to(member_mask[:, :, None], logp_new.shape)  # [B, G+E, L]
  token_expert = jnp.broadcast_to(is_expert[:, :, None], logp_new.shape)  # [B, G+E, L]
  adv = advantages[:, :, None].astype(jnp.float32)  # [B, G+E, 1]
  # Zero the log-ratio on invalid tokens before exp so that masked garbage can
  # neither overflow nor leak NaN gradients through jnp.where.
  log_ratio = jnp.where(token_valid, logp_new - logp_old, 0.0)
  ratio = jnp.exp(log_ratio)  # [B, G+E, L]
  unclipped = ratio * adv
  clipped_value = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
  surrogate = jnp.minimum(unclipped, clipped_value)
  clipped = clipped_value < unclipped
  uses_ratio = token_valid
  if luffy_shaping:
    prob = jnp.exp(jnp.where(token_valid, logp_new, 0.0))
    shaped = prob / (prob + luffy_gamma) * adv
    surrogate = jnp.where(token_expert, shaped, surrogate)
    uses_ratio = token_valid & ~token_expert
  kl_applies = token_valid if kl_on_experts else token_valid & ~token_expert
  safe_ref = jnp.where(kl_applies, logp_ref, logp_new)
  kl = jnp.where(kl_applies, k3_kl(logp_new, safe_ref, kl_clip), 0.0)
  return PolicyLossTerms(
    surrogate=jnp.where(token_valid, surrogate, 0.0),
    kl=kl,
    ratio=ratio,
    clipped=clipped & uses_ratio,
    pg_weight=token_valid.astype(jnp.float32),
    kl_weight=kl_applies.astype(jnp.float32),
    ratio_weight=uses_ratio.astype(jnp.float32),
  )


def reduce_policy_loss(
  terms: PolicyLossTerms, logp_new: jnp.ndarray, is_expert: jnp.ndarray, kl_weight: float
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Token-level means of the terms: the scalar loss and its policy metrics.

  Args:
    terms: output of `policy_loss_terms`.
    logp_new: [B, G+E, L] token log-probs under the current params.
    is_expert: [B, G+E] bool, expert members.
    kl_weight: weight of the KL term.

  Returns:
    (scalar loss, metrics) with metrics `loss`, `pg_loss`, `kl`, `clip_fraction`,
    `ratio_mean`, `entropy_proxy` (-mean logp_new of valid sampled tokens) and
    `expert_logp` (mean logp_new of valid expert tokens).
  """
  pg_loss = -masked_mean(terms.surrogate, terms.pg_weight)
  kl = masked_mean(terms.kl, terms.kl_weight)
  loss = pg_loss + kl_weight * kl
  token_valid = terms.pg_weight > 0  # [B, G+E, L]
  token_expert = jnp.broadcast_to(is_expert[:, :, None], logp_new.shape)
  metrics = {
    "loss": loss,
    "pg_loss": pg_loss,
    "kl": kl,
    "clip_fraction": masked_mean(terms.clipped.astype(jnp.float32), terms.ratio_weight),
    "ratio_mean": masked_mean(terms.ratio, terms.ratio_weight),
    "entropy_proxy": -masked_mean(logp_new, token_valid & ~token_expert),
    "expert_logp": masked_mean(logp_new, token_valid & token_expert),
  }
  return loss, metrics


def clipped_policy_loss(
  *inputs: jnp.ndarray, kl_weight: float = 1.0, **options
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Token-level EG-GRPO loss and its policy metrics.

  Args:
    *inputs: `policy_loss_terms`'s arrays (logp_new, logp_old, logp_ref,
      advantages, member_mask, is_expert).
    kl_weight: the weight of the KL term.
    **options: `policy_loss_terms`'s keyword options (clip_eps, kl_clip, ...).

  Returns:
    (scalar loss, metrics), see `reduce_policy_loss`.
  """
  logp_new, is_expert = inputs[0], inputs[5]
  terms = policy_loss_terms(*inputs, **options)
  return reduce_policy_loss(terms, logp_new, is_expert, kl_weight)


def group_metrics(
  rewards: jnp.ndarray,
  member_mask: jnp.ndarray,
  is_expert: jnp.ndarray,
  sid_valid: jnp.ndarray,
  zero_spread: jnp.ndarray,
) -> dict[str, jnp.ndarray]:
  """Reward and group statistics of a rollout batch.

  Args:
    rewards: [B, G+E] float rewards.
    member_mask: [B, G+E] bool valid members.
    is_expert: [B, G+E] bool expert members.
    sid_valid: [B, G+E] bool sampler validity flag.
    zero_spread: [B] bool groups with zero reward spread.

  Returns:
    `reward_mean_sampled`, `reward_std_sampled`, `reward_mean_expert`,
    `reward_std_expert` (over the valid members of the batch, population std),
    `zero_spread_share`, `sample_valid_rate` (over all sampled slots, masked
    duplicates included) and `expert_fill` (share of expert slots filled).
  """
  sampled_members = member_mask & ~is_expert
  expert_members = member_mask & is_expert

  def mean_std(weights: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    mean = masked_mean(rewards, weights)
    return mean, jnp.sqrt(masked_mean((rewards - mean) ** 2, weights))

  sampled_mean, sampled_std = mean_std(sampled_members)
  expert_mean, expert_std = mean_std(expert_members)
  return {
    "reward_mean_sampled": sampled_mean,
    "reward_std_sampled": sampled_std,
    "reward_mean_expert": expert_mean,
    "reward_std_expert": expert_std,
    "zero_spread_share": jnp.mean(zero_spread.astype(jnp.float32)),
    "sample_valid_rate": masked_mean(sid_valid.astype(jnp.float32), ~is_expert),
    "expert_fill": masked_mean(member_mask.astype(jnp.float32), is_expert),
  }
