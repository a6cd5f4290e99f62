"""Assigning codes / SIDs to items with a trained tokenizer, including the daily update.

Incremental rule (new items join EXISTING clusters; no existing SID changes):
the new item's latent is quantized level by level exactly as in training, except
that at each level only codes that continue an existing SID prefix are allowed
(a descent of the trie of existing code tuples, nearest allowed code to the
current residual). A known category forces level 1 when that category already
has clusters; otherwise the nearest existing level-1 code is used (counted as a
fallback). When the item's unconstrained codes already exist, the descent picks
them, so re-assigning a training item reproduces its codes. The suffix of a split
cluster is the group with the fewest items (ties: smallest g), deterministic.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import numpy as np

from gr_jax.sid import cluster_split, kmeans, quantizer, rqvae, tables

_HOST_CHUNK = 4096


@functools.partial(jax.jit, static_argnames=("config",))
def _encode_and_quantize(variables, config, features, category_id):
  latents = rqvae.encode(variables, config, features)  # [B, Z]
  codebooks = rqvae.codebooks_of(variables, config)
  codes = quantizer.residual_quantize(
    latents, codebooks, rqvae.forced_codes(config, category_id)
  ).codes
  return latents, codes


def encode_and_assign(
  variables: dict,
  config: rqvae.TokenizerConfig,
  features: np.ndarray,
  category_id: np.ndarray | None,
  batch_size: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
  """Latents and codes of many items, in fixed-size jitted batches (one compile).

  Args:
    variables: tokenizer variables ('params' unless RQ-KMeans, and 'codebook').
    config: tokenizer config.
    features: [N, D] float32.
    category_id: [N] int32 (-1 unknown), or None (no category forcing).
    batch_size: rows per device call.

  Returns:
    (latents [N, Z] float32, codes [N, L] int32).

  Raises:
    ValueError: inputs fail `rqvae.check_tokenizer_inputs`.
  """
  features = np.asarray(features, np.float32)
  rqvae.check_tokenizer_inputs(config, features, category_id, source="assign_codes")
  if category_id is None:
    category_id = np.full(features.shape[0], -1, np.int32)
  category_id = np.asarray(category_id, np.int32)
  variables = nn.meta.unbox(variables)
  num_rows = features.shape[0]
  batch_size = max(1, min(batch_size, num_rows))
  latents, codes = [], []
  for start in range(0, num_rows, batch_size):
    stop = min(start + batch_size, num_rows)
    pad = batch_size - (stop - start)
    batch_features = np.pad(features[start:stop], ((0, pad), (0, 0)))
    batch_categories = np.pad(category_id[start:stop], (0, pad), constant_values=-1)
    batch_latents, batch_codes = _encode_and_quantize(
      variables, config, batch_features, batch_categories
    )
    latents.append(np.asarray(batch_latents)[: stop - start])
    codes.append(np.asarray(batch_codes)[: stop - start])
  num_levels = config.num_levels
  if not codes:
    return np.zeros((0, config.latent_dim), np.float32), np.zeros((0, num_levels), np.int32)
  return np.concatenate(latents), np.concatenate(codes).astype(np.int32)


def assign_codes(
  variables: dict,
  config: rqvae.TokenizerConfig,
  features: np.ndarray,
  category_id: np.ndarray | None,
  batch_size: int = 4096,
) -> np.ndarray:
  """[N, D] features -> [N, L] int32 codes (see `encode_and_assign`)."""
  return encode_and_assign(variables, config, features, category_id, batch_size)[1]


def build_catalog_sids(
  variables: dict,
  config: rqvae.TokenizerConfig,
  features: np.ndarray,
  category_id: np.ndarray | None,
  batch_size: int = 4096,
) -> tuple[np.ndarray, tables.SidTables]:
  """Codes, suffix and tables for a whole catalog.

  Returns:
    (codes [N, L] int32, `SidTables` with item_sid [N, L+1]).
  """
  codes = assign_codes(variables, config, features, category_id, batch_size)
  item_sid = cluster_split.add_suffix(codes, config)
  level_sizes = config.codebook_sizes + (cluster_split.suffix_size(item_sid, config),)
  return codes, tables.build_sid_tables(item_sid, level_sizes)


def _constrained_descent(
  latents: np.ndarray,
  category_id: np.ndarray | None,
  codebooks: list[np.ndarray],
  prefix_keys: list[np.ndarray],
  codebook_sizes: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
  """Trie-constrained residual quantization on the host.

  Args:
    latents: [M, Z].
    category_id: [M] forced level-1 codes (-1 = none) or None.
    codebooks: L arrays [K_l, Z].
    prefix_keys: L sorted int64 arrays; prefix_keys[l] = keys of existing prefixes of
      length l + 1.
    codebook_sizes: K_l.

  Returns:
    (codes [M, L] int32, [M] bool: a known category had no existing cluster).
  """
  residual = latents.astype(np.float32)
  keys = np.zeros(latents.shape[0], np.int64)
  codes = []
  category_fallback = np.zeros(latents.shape[0], bool)
  for level, (codebook, size) in enumerate(zip(codebooks, codebook_sizes)):
    distances = (
      np.sum(residual**2, axis=1, keepdims=True)
      - 2.0 * residual @ codebook.T
      + np.sum(codebook**2, axis=1)[None, :]
    )  # [M, K]
    candidates = keys[:, None] * size + np.arange(size)[None, :]  # [M, K]
    position = np.minimum(
      np.searchsorted(prefix_keys[level], candidates), len(prefix_keys[level]) - 1
    )
    allowed = prefix_keys[level][position] == candidates  # [M, K]
    choice = np.argmin(np.where(allowed, distances, np.inf), axis=1)
    if level == 0 and category_id is not None:
      known = category_id >= 0
      forced_ok = known & allowed[np.arange(len(choice)), np.maximum(category_id, 0)]
      category_fallback = known & ~forced_ok
      choice = np.where(forced_ok, category_id, choice)
    codes.append(choice)
    residual = residual - codebook[choice]
    keys = keys * size + choice
  return np.stack(codes, axis=1).astype(np.int32), category_fallback


def assign_new_items(
  variables: dict,
  config: rqvae.TokenizerConfig,
  sid_tables: tables.SidTables,
  features: np.ndarray,
  category_id: np.ndarray | None,
  batch_size: int = 4096,
) -> tuple[np.ndarray, dict]:
  """Daily update: SIDs for new items, all of them existing SIDs (module doc has the rule).

  Args:
    variables: trained tokenizer variables.
    config: tokenizer config.
    sid_tables: the current tables (not modified).
    features: [M, D] new items' features.
    category_id: [M] their category ids (-1 unknown) or None.
    batch_size: rows per device call.

  Returns:
    (item_sid [M, L+1] int32, stats: share of items whose own codes already existed,
    number of items whose category had no cluster).

  Raises:
    ValueError: empty tables, or inputs fail `rqvae.check_tokenizer_inputs`.
  """
  if sid_tables.num_sids == 0:
    raise ValueError("assign_new_items: the SID tables are empty; there is no cluster to join")
  num_levels = config.num_levels
  sizes = config.codebook_sizes
  latents, own_codes = encode_and_assign(variables, config, features, category_id, batch_size)
  existing = sid_tables.sids[:, :num_levels]
  prefix_keys = [
    np.unique(cluster_split.code_keys(existing[:, : level + 1], sizes[: level + 1]))
    for level in range(num_levels)
  ]
  codebooks = [
    np.asarray(c, np.float32) for c in rqvae.codebooks_of(nn.meta.unbox(variables), config)
  ]
  forced = (
    np.asarray(category_id, np.int64)
    if (config.force_category and category_id is not None)
    else None
  )
  # Items whose own codes exist keep them (the descent would pick them too); only the rest
  # descend the trie.
  own_exists = np.isin(cluster_split.code_keys(own_codes, sizes), prefix_keys[-1])
  codes = own_codes.copy()
  fallback = np.zeros(len(codes), bool)
  missing = np.flatnonzero(~own_exists)
  for start in range(0, len(missing), _HOST_CHUNK):
    rows = missing[start : start + _HOST_CHUNK]
    codes[rows], fallback[rows] = _constrained_descent(
      latents[rows], None if forced is None else forced[rows], codebooks, prefix_keys, sizes
    )
  groups = _smallest_group(sid_tables, codes)
  item_sid = np.concatenate([codes, groups[:, None]], axis=1).astype(np.int32)
  stats = {
    "num_new_items": int(codes.shape[0]),
    "share_own_codes_existed": float(np.mean(own_exists)) if len(codes) else 0.0,
    "num_category_fallback": int(np.sum(fallback)),
  }
  return item_sid, stats


def _smallest_group(sid_tables: tables.SidTables, codes: np.ndarray) -> np.ndarray:
  """[M, L] existing code tuples -> [M] suffix of their smallest group (ties: smallest g)."""
  num_levels = codes.shape[1]
  sizes = sid_tables.level_sizes[:num_levels]
  table_keys = cluster_split.code_keys(sid_tables.sids[:, :num_levels], sizes)  # [S] sorted
  order = np.lexsort((sid_tables.sids[:, -1], sid_tables.sid_sizes, table_keys))
  unique_keys, first = np.unique(table_keys[order], return_index=True)
  best_group = sid_tables.sids[order[first], -1]
  position = np.searchsorted(unique_keys, cluster_split.code_keys(codes, sizes))
  return best_group[position]


def fit_rq_kmeans(
  config: rqvae.TokenizerConfig,
  features: np.ndarray,
  category_id: np.ndarray | None,
  seed: int = 0,
) -> dict:
  """Variables of the RQ-KMeans baseline (config.method == 'rq_kmeans'), ready for
  `assign_codes` / `build_catalog_sids`.

  Raises:
    ValueError: the config is not an RQ-KMeans config, or the inputs are bad.
  """
  if config.method != "rq_kmeans":
    raise ValueError(
      f"fit_rq_kmeans needs TokenizerConfig.method = 'rq_kmeans', got '{config.method}'"
    )
  features = np.asarray(features, np.float32)
  rqvae.check_tokenizer_inputs(config, features, category_id, source="fit_rq_kmeans")
  forced = category_id if config.force_category else None
  codebook = kmeans.rq_kmeans_codebooks(
    features, forced, config.codebook_sizes, seed, config.kmeans_iters
  )
  return {"codebook": codebook}
