"""Tokenizer diagnostics: code usage, cluster sizes, reconstruction, query retrieval."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gr_jax.sid import cluster_split, quantizer, rqvae, tables


def code_usage(codes: np.ndarray, codebook_sizes: tuple[int, ...]) -> dict[str, float]:
  """Per level: share of the K_l codes used and perplexity exp(H) of the code histogram.

  Args:
    codes: [N, L] int codes.
    codebook_sizes: K_l.

  Returns:
    {'usage_l{l}': float, 'perplexity_l{l}': float} for every level.
  """
  stats = {}
  for level, size in enumerate(codebook_sizes):
    counts = np.bincount(np.asarray(codes)[:, level], minlength=size).astype(np.float64)
    probs = counts / max(counts.sum(), 1.0)
    nonzero = probs[probs > 0]
    stats[f"usage_l{level}"] = float(np.mean(counts > 0))
    stats[f"perplexity_l{level}"] = float(np.exp(-np.sum(nonzero * np.log(nonzero))))
  return stats


def cluster_stats(sid_tables: tables.SidTables, num_code_levels: int) -> dict:
  """Items per SID and the effect of the suffix.

  Args:
    sid_tables: SID tables.
    num_code_levels: L (positions before the suffix).

  Returns:
    num_sids, num_code_tuples, items-per-SID mean/p50/p90/p99/max, the largest SID,
    largest code tuple (cluster before the split), and the share of items whose code
    tuple carries more than one suffix value (split clusters).
  """
  sizes = sid_tables.sid_sizes
  code_keys = cluster_split.code_keys(
    sid_tables.sids[:, :num_code_levels], sid_tables.level_sizes[:num_code_levels]
  )
  _, tuple_index, groups_per_tuple = np.unique(code_keys, return_inverse=True, return_counts=True)
  items_per_tuple = np.bincount(tuple_index.reshape(-1), weights=sizes)
  in_split = groups_per_tuple[tuple_index.reshape(-1)] > 1  # [S]
  num_items = max(int(sizes.sum()), 1)
  largest = int(np.argmax(sizes)) if len(sizes) else 0
  return {
    "num_items": int(sizes.sum()),
    "num_sids": int(sid_tables.num_sids),
    "num_code_tuples": int(len(groups_per_tuple)),
    "items_per_sid_mean": float(np.mean(sizes)) if len(sizes) else 0.0,
    "items_per_sid_p50": float(np.percentile(sizes, 50)) if len(sizes) else 0.0,
    "items_per_sid_p90": float(np.percentile(sizes, 90)) if len(sizes) else 0.0,
    "items_per_sid_p99": float(np.percentile(sizes, 99)) if len(sizes) else 0.0,
    "items_per_sid_max": int(np.max(sizes, initial=0)),
    "largest_sid": sid_tables.sids[largest].tolist() if len(sizes) else [],
    "largest_code_tuple_items": int(np.max(items_per_tuple, initial=0)),
    "share_items_in_split_clusters": float(np.sum(sizes[in_split]) / num_items),
  }


@functools.partial(jax.jit, static_argnames=("config",))
def _reconstruct(variables, config, features, category_id):
  latents = rqvae.encode(variables, config, features)
  quantized = quantizer.residual_quantize(
    latents, rqvae.codebooks_of(variables, config), rqvae.forced_codes(config, category_id)
  ).quantized
  if config.method == "rq_kmeans":
    return quantized
  return rqvae.RQVAE(config).apply(
    {"params": variables["params"]}, quantized, method=rqvae.RQVAE.decode
  )


def reconstruction_error(
  variables: dict,
  config: rqvae.TokenizerConfig,
  features: np.ndarray,
  category_id: np.ndarray | None,
  batch_size: int = 4096,
) -> float:
  """Mean squared error per element of D(z_q) (z_q itself for RQ-KMeans) against x."""
  variables = nn.meta.unbox(variables)
  features = np.asarray(features, np.float32)
  rqvae.check_tokenizer_inputs(config, features, category_id, source="reconstruction_error")
  if category_id is None:
    category_id = np.full(features.shape[0], -1, np.int32)
  total = 0.0
  for start in range(0, features.shape[0], batch_size):
    rows = features[start : start + batch_size]
    recon = _reconstruct(
      variables, config, rows, np.asarray(category_id[start : start + batch_size])
    )
    total += float(np.sum(np.square(np.asarray(recon) - rows)))
  return total / max(features.size, 1)


@functools.partial(jax.jit, static_argnames=("config",))
def _retrieval_hits(variables, config, item_features, query_features):
  items = rqvae.encode(variables, config, item_features)
  queries = rqvae.encode(variables, config, query_features)
  items = items / jnp.linalg.norm(items, axis=-1, keepdims=True).clip(1e-12)
  queries = queries / jnp.linalg.norm(queries, axis=-1, keepdims=True).clip(1e-12)
  scores = queries @ items.T  # [B, B] query i vs item j
  own = jnp.diagonal(scores)[:, None]  # [B, 1]
  return jnp.sum(scores > own, axis=1)  # [B] items ranked above the true one


def retrieval_accuracy(
  variables: dict,
  config: rqvae.TokenizerConfig,
  query_features: np.ndarray,
  item_features: np.ndarray,
  batch_size: int = 128,
  ks: tuple[int, ...] = (1, 10),
) -> dict[str, float]:
  """In-batch query -> item retrieval accuracy of the latents on held-out pairs.

  Pairs are cut into consecutive batches of `batch_size` (the last partial batch is
  dropped so every query sees the same number of candidates); for each query the
  true item must rank within the top k of the batch's items by cosine similarity.

  Args:
    variables: tokenizer variables.
    config: tokenizer config.
    query_features: [P, D] query features.
    item_features: [P, D] features of each query's item.
    batch_size: candidates per query.
    ks: cut-offs.

  Returns:
    {'retrieval_top{k}': accuracy} ({} when fewer than `batch_size` pairs).
  """
  variables = nn.meta.unbox(variables)
  rqvae.check_tokenizer_inputs(config, np.asarray(item_features), source="retrieval items")
  rqvae.check_tokenizer_inputs(config, np.asarray(query_features), source="retrieval queries")
  num_batches = len(query_features) // batch_size
  if num_batches == 0:
    return {}
  ranks = []
  for index in range(num_batches):
    rows = slice(index * batch_size, (index + 1) * batch_size)
    ranks.append(
      np.asarray(
        _retrieval_hits(
          variables,
          config,
          np.asarray(item_features[rows], np.float32),
          np.asarray(query_features[rows], np.float32),
        )
      )
    )
  ranks = np.concatenate(ranks)
  return {f"retrieval_top{k}": float(np.mean(ranks < k)) for k in ks}


def compute_diagnostics(
  variables: dict,
  config: rqvae.TokenizerConfig,
  features: np.ndarray,
  category_id: np.ndarray | None,
  codes: np.ndarray,
  sid_tables: tables.SidTables,
  heldout_query_features: np.ndarray | None = None,
  heldout_item_features: np.ndarray | None = None,
  retrieval_batch_size: int = 128,
) -> dict:
  """All diagnostics of a tokenized catalog as one JSON-serialisable dict.

  Args:
    variables: tokenizer variables.
    config: tokenizer config.
    features: [N, D] catalog features.
    category_id: [N] category ids or None.
    codes: [N, L] the catalog's codes.
    sid_tables: the catalog's SID tables.
    heldout_query_features: optional [P, D] held-out queries.
    heldout_item_features: optional [P, D] their items' features.
    retrieval_batch_size: in-batch candidates of the retrieval accuracy.

  Returns:
    Diagnostics dict.
  """
  result = {"method": config.method, "codebook_sizes": list(config.codebook_sizes)}
  result.update(code_usage(codes, config.codebook_sizes))
  result.update(cluster_stats(sid_tables, config.num_levels))
  result["recon_mse"] = reconstruction_error(variables, config, features, category_id)
  if category_id is not None and config.force_category:
    known = np.asarray(category_id) >= 0
    result["share_level1_equals_category"] = (
      float(np.mean(codes[known, 0] == np.asarray(category_id)[known])) if known.any() else 1.0
    )
  if heldout_query_features is not None and heldout_item_features is not None:
    result.update(
      retrieval_accuracy(
        variables, config, heldout_query_features, heldout_item_features, retrieval_batch_size
      )
    )
  return result
