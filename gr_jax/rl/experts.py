"""Expert SIDs and the enlarged EG-GRPO group (METHOD.md section 5).

Experts are ground-truth SIDs taken from each request's logged feedback and put
into the group as if the policy had generated them, so that every group holds a
positive anchor and a reward spread even when no sample was clicked.

Drawing rule for E experts per request (`draw_experts`):
  * candidates are the distinct SIDs of the clicked items, then the distinct
    SIDs of the exposed items; a SID both clicked and exposed counts as clicked
    and appears once;
  * all clicked candidates come before any exposed one; within a tier the E are
    drawn uniformly at random without replacement (from `rng`);
  * when fewer than E distinct clicked SIDs exist the rest is filled from the
    exposed ones; when fewer than E distinct SIDs exist in all, the remaining
    expert slots are masked out (mask False, codes 0). Masked slots take no part
    in the group mean / std, the rewards metrics or the loss.
  * the chosen experts are laid out in logged order (clicked first), so the
    layout depends only on which SIDs were chosen, not on the draw order.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


def first_occurrence(sids: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Marks the first unmasked occurrence of each distinct SID in a row.

  Args:
    sids: [B, M, L] int SID codes.
    mask: [B, M] bool; masked rows are neither kept nor count as earlier copies.

  Returns:
    [B, M] bool: unmasked and no earlier unmasked row holds the same SID.
  """
  num = sids.shape[1]
  # [B, M, M]: row i equals row j on all levels.
  equal = jnp.all(sids[:, :, None, :] == sids[:, None, :, :], axis=-1)
  earlier = jnp.tril(jnp.ones((num, num), bool), k=-1)  # [M, M]: j < i
  has_earlier_copy = jnp.any(equal & earlier[None] & mask[:, None, :], axis=-1)
  return mask & ~has_earlier_copy


def _check_pair(fn: str, **arrays: jnp.ndarray) -> None:
  """Checks two [B, M, L] SID sets and their [B, M] masks (keyword order: a, a_mask, b, b_mask).

  Raises:
    ValueError: naming `fn` and the arrays whose shapes disagree.
  """
  (a, sids_a), (am, mask_a), (b, sids_b), (bm, mask_b) = arrays.items()
  if sids_a.shape[0] != sids_b.shape[0] or sids_a.shape[2] != sids_b.shape[2]:
    raise ValueError(f"{fn}: {a} {sids_a.shape} and {b} {sids_b.shape} differ in batch or levels")
  if mask_a.shape != sids_a.shape[:2] or mask_b.shape != sids_b.shape[:2]:
    raise ValueError(
      f"{fn}: {am} {mask_a.shape} / {bm} {mask_b.shape} do not match "
      f"{a} {sids_a.shape[:2]} / {b} {sids_b.shape[:2]}"
    )


def draw_experts(
  rng: jax.Array,
  clicked: jnp.ndarray,
  clicked_mask: jnp.ndarray,
  exposed: jnp.ndarray,
  exposed_mask: jnp.ndarray,
  num_experts: int,
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Draws up to E distinct expert SIDs per request, clicked before exposed.

  Args:
    rng: PRNG key of the draw.
    clicked: [B, Mc, L] int SIDs of the clicked items.
    clicked_mask: [B, Mc] bool, False on padding rows.
    exposed: [B, Me, L] int SIDs of the exposed items.
    exposed_mask: [B, Me] bool, False on padding rows.
    num_experts: E >= 0.

  Returns:
    experts: [B, E, L] int32 SIDs (0 in masked slots).
    expert_mask: [B, E] bool, False where fewer than E distinct SIDs exist.

  Raises:
    ValueError: on a negative E or mismatched shapes.
  """
  if num_experts < 0:
    raise ValueError(f"draw_experts: num_experts must be >= 0, got {num_experts}")
  _check_pair(
    "draw_experts",
    clicked=clicked,
    clicked_mask=clicked_mask,
    exposed=exposed,
    exposed_mask=exposed_mask,
  )
  batch, num_clicked, levels = clicked.shape
  candidates = jnp.concatenate([clicked, exposed], axis=1).astype(jnp.int32)  # [B, M, L]
  candidate_mask = jnp.concatenate([clicked_mask, exposed_mask], axis=1)  # [B, M]
  num_candidates = candidates.shape[1]
  if num_candidates < num_experts:
    # Masked padding so that E slots can always be gathered.
    pad = num_experts - num_candidates
    candidates = jnp.concatenate([candidates, jnp.zeros((batch, pad, levels), jnp.int32)], 1)
    candidate_mask = jnp.concatenate([candidate_mask, jnp.zeros((batch, pad), bool)], 1)
    num_candidates = num_experts
  position = jnp.arange(num_candidates)  # [M]
  tier = (position >= num_clicked).astype(jnp.float32)  # [M]: 0 clicked, 1 exposed
  # Clicked rows come first, so a SID in both sets keeps its clicked copy.
  keep = first_occurrence(candidates, candidate_mask)  # [B, M]
  # Random order within a tier, every clicked SID before every exposed one.
  priority = tier[None] + jax.random.uniform(rng, (batch, num_candidates))  # [B, M]
  priority = jnp.where(keep, priority, jnp.inf)
  rank = jnp.argsort(jnp.argsort(priority, axis=1), axis=1)  # [B, M]
  selected = keep & (rank < num_experts)  # [B, M]
  # Lay the chosen ones out in logged order; unchosen rows sort behind them.
  layout_key = jnp.where(selected, position[None], num_candidates + position[None])
  slots = jnp.argsort(layout_key, axis=1)[:, :num_experts]  # [B, E]
  expert_mask = jnp.take_along_axis(selected, slots, axis=1)  # [B, E]
  experts = jnp.take_along_axis(candidates, slots[:, :, None], axis=1)  # [B, E, L]
  experts = jnp.where(expert_mask[:, :, None], experts, 0)
  return experts, expert_mask


class Group(NamedTuple):
  """The enlarged group: G sampled SIDs then E experts per request.

  Attributes:
    sids: [B, G+E, L] int32 SID codes.
    member_mask: [B, G+E] bool, members that take part in statistics and loss.
    is_expert: [B, G+E] bool, True on the E expert slots.
    sid_valid: [B, G+E] bool, the sampler's validity flag; experts are valid.
  """

  sids: jnp.ndarray
  member_mask: jnp.ndarray
  is_expert: jnp.ndarray
  sid_valid: jnp.ndarray


def build_group(
  sampled: jnp.ndarray,
  sample_valid: jnp.ndarray,
  experts: jnp.ndarray,
  expert_mask: jnp.ndarray,
  dedup_sampled: bool = False,
) -> Group:
  """Concatenates sampled and expert SIDs into one group per request.

  Invalid samples stay members (they earn the invalid reward and are pushed
  down); only masked experts and, with `dedup_sampled`, repeated samples are
  masked out.

  Args:
    sampled: [B, G, L] int SIDs sampled from the old policy.
    sample_valid: [B, G] bool, True when the SID exists in the item pool.
    experts: [B, E, L] int expert SIDs.
    expert_mask: [B, E] bool.
    dedup_sampled: mask a sampled SID that repeats an earlier sample of its group.

  Returns:
    The `Group`.

  Raises:
    ValueError: on mismatched shapes.
  """
  if sampled.ndim != 3 or experts.ndim != 3:
    raise ValueError(f"build_group: sampled {sampled.shape}, experts {experts.shape} not [B, M, L]")
  _check_pair(
    "build_group",
    sampled=sampled,
    sample_valid=sample_valid,
    experts=experts,
    expert_mask=expert_mask,
  )
  sample_mask = jnp.ones(sample_valid.shape, bool)  # [B, G]
  if dedup_sampled:
    sample_mask = first_occurrence(sampled, sample_mask)
  sids = jnp.concatenate([sampled, experts], axis=1).astype(jnp.int32)  # [B, G+E, L]
  member_mask = jnp.concatenate([sample_mask, expert_mask], axis=1)  # [B, G+E]
  is_expert = jnp.concatenate(
    [jnp.zeros(sample_valid.shape, bool), jnp.ones(expert_mask.shape, bool)], axis=1
  )
  sid_valid = jnp.concatenate([sample_valid, expert_mask], axis=1)
  return Group(sids=sids, member_mask=member_mask, is_expert=is_expert, sid_valid=sid_valid)
