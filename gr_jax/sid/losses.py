"""Contrastive losses of the tokenizer: query-item InfoNCE and category SupCon."""

from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG_INF = -1e9


def _normalize(x: jax.Array) -> jax.Array:
  return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-12)


def bidirectional_info_nce(
  item_latents: jax.Array,
  query_latents: jax.Array,
  has_query: jax.Array,
  temperature: float,
) -> jax.Array:
  """Symmetric query<->item InfoNCE with in-batch negatives, cosine similarity.

  Row i pairs item i with query i. Rows without a query take no part: they are
  neither anchors nor negatives. With S the [B, B] cosine similarities / temperature
  restricted to valid rows V:

    L = 1/2 * mean_{i in V} [ -log softmax_j(S_ij)_i - log softmax_j(S_ji)_i ]

  Args:
    item_latents: [B, Z].
    query_latents: [B, Z].
    has_query: [B] bool.
    temperature: softmax temperature (0.1 in the paper).

  Returns:
    Scalar loss; 0 when no row has a query.
  """
  items = _normalize(item_latents)
  queries = _normalize(query_latents)
  logits = items @ queries.T / temperature  # [B, B] item i vs query j
  valid = has_query.astype(bool)
  pair_mask = valid[:, None] & valid[None, :]  # [B, B]
  logits = jnp.where(pair_mask, logits, _NEG_INF)
  diagonal = jnp.diagonal(logits)  # [B]
  item_to_query = jax.nn.logsumexp(logits, axis=1) - diagonal
  query_to_item = jax.nn.logsumexp(logits, axis=0) - diagonal
  per_row = 0.5 * (item_to_query + query_to_item)  # [B]
  num_valid = jnp.sum(valid.astype(jnp.float32))
  return jnp.sum(jnp.where(valid, per_row, 0.0)) / jnp.maximum(num_valid, 1.0)


def category_supervised_contrastive(
  latents: jax.Array, category_id: jax.Array, temperature: float
) -> jax.Array:
  """Supervised contrastive loss (Khosla et al. 2020) with same-category positives.

  For an anchor i with known category and at least one other same-category row:

    L_i = -1/|P(i)| sum_{p in P(i)} log( exp(s_ip) / sum_{a != i, a known} exp(s_ia) )

  Rows with unknown category (-1) are neither anchors nor in the denominators.

  Args:
    latents: [B, Z].
    category_id: [B] int32, -1 when unknown.
    temperature: softmax temperature.

  Returns:
    Scalar mean over anchors; 0 when there is none.
  """
  normed = _normalize(latents)
  logits = normed @ normed.T / temperature  # [B, B]
  batch = latents.shape[0]
  known = category_id >= 0
  not_self = ~jnp.eye(batch, dtype=bool)
  candidates = known[:, None] & known[None, :] & not_self  # [B, B]
  positives = candidates & (category_id[:, None] == category_id[None, :])
  log_denominator = jax.nn.logsumexp(jnp.where(candidates, logits, _NEG_INF), axis=1)  # [B]
  log_prob = logits - log_denominator[:, None]  # [B, B]
  num_positives = jnp.sum(positives.astype(jnp.float32), axis=1)  # [B]
  anchor_loss = -jnp.sum(jnp.where(positives, log_prob, 0.0), axis=1) / jnp.maximum(
    num_positives, 1.0
  )
  anchors = num_positives > 0
  num_anchors = jnp.sum(anchors.astype(jnp.float32))
  return jnp.sum(jnp.where(anchors, anchor_loss, 0.0)) / jnp.maximum(num_anchors, 1.0)
