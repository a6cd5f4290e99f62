"""Beam search over SID codes, constrained by a trie of valid SIDs or not.

The model enters as a step function (t5x's `tokens_to_logits`):

  step_fn(tokens [B * K] int32, cache) -> (logits [B * K, V] float32, cache)

where every cache leaf has the flattened batch B * K as axis 0. Decoding starts from
`first_logits` [B, V] and the `cache` (batch B) that prefilling the prompt left behind. A SID
has exactly L levels, so the loop is unrolled over levels in Python (each level has its own
static code range) and there is no length penalty: every hypothesis has the same length, so a
penalty could not change the ranking.

Everything here is pure and traceable: call it inside `jax.jit` with the step function closed over
and `beam_size` / `layout` static. Batch sharding passes through with no collective: beams stay
inside their batch row, the cache reorder is a per-row gather (a gather with a batch dimension,
which the SPMD partitioner keeps local), and the top-k keeps the batch sharded (see
`batch_local_top_k`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gin
import jax
import jax.numpy as jnp

from gr_jax.decoding import trie as trie_lib
from gr_jax.models.token_layout import TokenLayout

StepFn = Callable[[jax.Array, Any], tuple[jax.Array, Any]]

NEG_INF = -jnp.inf


def level_slice(layout: TokenLayout, level: int, values: jax.Array) -> jax.Array:
  """[..., V] over the vocabulary -> [..., C_level] over the codes of `level` (static slice)."""
  start = layout.sid_offset(level)
  return values[..., start : start + layout.sid_level_sizes[level]]


def level_log_probs(layout: TokenLayout, level: int, logits: jax.Array) -> jax.Array:
  """[..., V] logits -> [..., C_level] full-vocabulary log-probs of the level's codes."""
  logits = logits.astype(jnp.float32)
  return level_slice(layout, level, logits) - jax.nn.logsumexp(logits, axis=-1, keepdims=True)


def repeat_cache(cache: Any, copies: int) -> Any:
  """Cache with batch B -> batch B * copies, copies of a row adjacent (row b -> b*copies + i)."""

  def repeat(leaf):
    expanded = jnp.broadcast_to(leaf[:, None], (leaf.shape[0], copies, *leaf.shape[1:]))
    return expanded.reshape(leaf.shape[0] * copies, *leaf.shape[1:])  # [B * copies, ...]

  return jax.tree.map(repeat, cache)


def gather_beams(cache: Any, parents: jax.Array) -> Any:
  """Reorders a [B * K, ...] cache so that beam k of row b takes beam parents[b, k] of row b.

  Args:
    cache: pytree whose leaves have batch B * K on axis 0.
    parents: [B, K] int32 beam indices in [0, K).

  Returns:
    The reordered cache, same shapes.
  """
  batch, beams = parents.shape

  def gather(leaf):
    rows = leaf.reshape(batch, beams, *leaf.shape[1:])  # [B, K, ...]
    picked = jax.vmap(lambda row, index: row[index])(rows, parents)  # [B, K, ...]
    return picked.reshape(leaf.shape)

  return jax.tree.map(gather, cache)


def batch_local_top_k(values: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """[B, M] -> the k largest values [B, k] and their indices [B, k], largest first.

  `approx_max_k` at recall 1.0 is exact (CPU / GPU lower it to an exact top-k, TPU's recall
  target 1.0 keeps every candidate), and the SPMD partitioner keeps its batch axis sharded,
  while it all-gathers the whole batch of a `lax.top_k` onto every device.
  """
  return jax.lax.approx_max_k(values, k, recall_target=1.0)


def allowed_codes(
  level: int,
  nodes: jax.Array,
  *,
  layout: TokenLayout,
  trie: trie_lib.TrieIndex | None,
  allowed_first: jax.Array | None,
) -> jax.Array | None:
  """Which codes of `level` a hypothesis may take next.

  Args:
    level: static level being chosen.
    nodes: [B, K] depth-`level` trie node ids (ignored without a trie).
    layout: token layout.
    trie: the valid-SID trie, or None for any code of the level.
    allowed_first: optional [B, C_0] bool per-request restriction of level-0 codes.

  Returns:
    [B, K, C_level] bool (broadcastable), or None when every code is allowed.
  """
  mask = None
  if trie is not None:
    batch, beams = nodes.shape
    mask = trie_lib.valid_next_mask(trie, level, nodes.reshape(-1))
    mask = mask.reshape(batch, beams, layout.sid_level_sizes[level])  # [B, K, C]
  if level == 0 and allowed_first is not None:
    first = allowed_first[:, None, :]  # [B, 1, C_0]
    mask = first if mask is None else mask & first
  return mask


def check_decoding_inputs(
  first_logits: jax.Array,
  *,
  layout: TokenLayout,
  trie: trie_lib.TrieIndex | None,
  allowed_first: jax.Array | None,
) -> None:
  """Raises ValueError naming the argument whose shape does not fit the layout."""
  if first_logits.ndim != 2 or first_logits.shape[1] != layout.vocab_size:
    raise ValueError(
      f"first_logits: expected [batch, {layout.vocab_size}] (layout.vocab_size), "
      f"got {first_logits.shape}"
    )
  if trie is not None and tuple(trie.level_sizes) != layout.sid_level_sizes:
    raise ValueError(
      f"trie: level sizes {trie.level_sizes} differ from layout.sid_level_sizes "
      f"{layout.sid_level_sizes}"
    )
  expected_first = (first_logits.shape[0], layout.sid_level_sizes[0])
  if allowed_first is not None and tuple(allowed_first.shape) != expected_first:
    raise ValueError(f"allowed_first: expected shape {expected_first}, got {allowed_first.shape}")


@gin.configurable(allowlist=["beam_size"])
def beam_search(
  step_fn: StepFn,
  first_logits: jax.Array,
  cache: Any,
  *,
  layout: TokenLayout,
  beam_size: int,
  trie: trie_lib.TrieIndex | None = None,
  allowed_first: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Top-`beam_size` SIDs per request by summed log-probability.

  Args:
    step_fn: (tokens [rows], cache) -> (logits [rows, V], cache), cache leaves batch-major.
    first_logits: [B, V] logits for the first SID token (after the prompt).
    cache: the step function's cache for the B prompts.
    layout: token layout; level l codes are tokens layout.sid_offset(l) + code.
    beam_size: K, number of SIDs returned per request (static).
    trie: constrain to the SIDs of this trie, or None for any code of each level.
    allowed_first: optional [B, C_0] bool, level-0 codes each request may start with.

  Returns:
    sids: [B, K, L] int32 codes, best first; -1 on beams that are not valid.
    scores: [B, K] float32 summed log-probs (full-vocabulary softmax); -inf where not valid.
    valid: [B, K] bool; False on the beams beyond the allowed SIDs of nonzero probability
      (fewer than K exist).

  Raises:
    ValueError: on shapes that do not fit the layout or a beam_size < 1.
  """
  if beam_size < 1:
    raise ValueError(f"beam_size must be >= 1, got {beam_size}")
  check_decoding_inputs(first_logits, layout=layout, trie=trie, allowed_first=allowed_first)
  batch, vocab = first_logits.shape
  num_levels = layout.num_sid_levels
  logits = first_logits[:, None, :]  # [B, 1, V]: one live beam per request before level 0
  scores = jnp.zeros((batch, 1), jnp.float32)  # [B, beams]
  codes = jnp.zeros((batch, 1, 0), jnp.int32)  # [B, beams, levels so far]
  nodes = jnp.zeros((batch, 1), jnp.int32)  # [B, beams] trie node ids (root)
  for level in range(num_levels):
    beams = scores.shape[1]
    size = layout.sid_level_sizes[level]
    log_probs = level_log_probs(layout, level, logits)  # [B, beams, C]
    candidates = scores[:, :, None] + log_probs  # [B, beams, C]
    mask = allowed_codes(level, nodes, layout=layout, trie=trie, allowed_first=allowed_first)
    if mask is not None:
      candidates = jnp.where(mask, candidates, NEG_INF)
    candidates = candidates.reshape(batch, beams * size)  # [B, beams * C]
    if beams * size < beam_size:
      padding = jnp.full((batch, beam_size - beams * size), NEG_INF, candidates.dtype)
      candidates = jnp.concatenate([candidates, padding], axis=1)  # [B, K]
    scores, flat_index = batch_local_top_k(candidates, beam_size)  # [B, K] each, best first
    alive = scores > NEG_INF  # [B, K]
    # Dead picks may point into the padding: park them on beam 0, they stay -inf.
    parents = jnp.where(alive, flat_index // size, 0)  # [B, K]
    chosen = jnp.where(alive, flat_index % size, 0)  # [B, K]
    codes = jnp.take_along_axis(codes, parents[:, :, None], axis=1)  # [B, K, level]
    codes = jnp.concatenate([codes, chosen[:, :, None]], axis=2)  # [B, K, level + 1]
    if trie is not None:
      parent_nodes = jnp.take_along_axis(nodes, parents, axis=1)  # [B, K]
      nodes = trie_lib.next_node(trie, level, parent_nodes.reshape(-1), chosen.reshape(-1))
      nodes = nodes.reshape(batch, beam_size)  # [B, K]
    if level + 1 < num_levels:
      cache = repeat_cache(cache, beam_size) if level == 0 else gather_beams(cache, parents)
      tokens = (chosen + layout.sid_offset(level)).reshape(-1)  # [B * K]
      flat_logits, cache = step_fn(tokens, cache)
      logits = flat_logits.reshape(batch, beam_size, vocab)  # [B, K, V]
  valid = scores > NEG_INF  # [B, K]
  sids = jnp.where(valid[:, :, None], codes, -1)  # [B, K, L]
  return sids, scores, valid
