"""SID suffix: the paper's cluster split (Algorithm 1) and TIGER's collision index.

A SID is (s_1, ..., s_L, g): the L codes plus one suffix token g.
"""

from __future__ import annotations

import numpy as np


def code_keys(codes: np.ndarray, level_sizes: tuple[int, ...] | None = None) -> np.ndarray:
  """[N, L] codes -> [N] int64 mixed-radix keys that sort like the code tuples.

  Args:
    codes: [N, L] non-negative ints.
    level_sizes: radix of each column; defaults to column max + 1.

  Returns:
    [N] int64 keys.

  Raises:
    ValueError: the radices overflow int64.
  """
  codes = np.asarray(codes, np.int64)
  if level_sizes is None:
    level_sizes = tuple(
      int(v) + 1 for v in (codes.max(axis=0) if len(codes) else [0] * codes.shape[1])
    )
  if float(np.prod([float(s) for s in level_sizes])) >= 2.0**62:
    raise ValueError(f"level sizes {level_sizes} overflow int64 SID keys")
  keys = np.zeros(codes.shape[0], np.int64)
  for column, size in enumerate(level_sizes):
    keys = keys * int(size) + codes[:, column]
  return keys


def _clusters(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """[N, L] codes -> ([N] cluster index of each item, [C] cluster sizes), clusters sorted."""
  _, cluster, sizes = np.unique(code_keys(codes), return_inverse=True, return_counts=True)
  return cluster.reshape(-1), sizes


def split_clusters(codes: np.ndarray, max_items: int, max_groups: int, seed: int) -> np.ndarray:
  """Algorithm 1: codes -> SIDs with a random group suffix for crowded clusters.

  A cluster (items sharing all L codes) with c > max_items items is split into
  G = min(ceil(c / max_items), max_groups) groups: the items are shuffled (seeded)
  and dealt round-robin, so group sizes differ by at most one and stay <= max_items
  unless max_groups binds. Items of unsplit clusters get g = 0.

  Args:
    codes: [N, L] int codes.
    max_items: T_max.
    max_groups: G_max.
    seed: shuffle seed.

  Returns:
    [N, L+1] int32 SIDs.
  """
  codes = np.asarray(codes)
  cluster, sizes = _clusters(codes)
  num_groups = np.minimum(-(-sizes // max_items), max_groups)  # [C]
  num_groups = np.where(sizes > max_items, num_groups, 1)
  shuffle_keys = np.random.default_rng(seed).random(codes.shape[0])
  order = np.lexsort((shuffle_keys, cluster))  # by cluster, random inside
  starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # [C] first sorted position
  rank = np.empty(codes.shape[0], np.int64)
  rank[order] = np.arange(codes.shape[0]) - starts[cluster[order]]
  groups = rank % num_groups[cluster]
  return np.concatenate([codes, groups[:, None]], axis=1).astype(np.int32)


def unique_suffix(codes: np.ndarray) -> np.ndarray:
  """TIGER's collision suffix: g = rank of the item (by id) among items sharing its codes.

  Args:
    codes: [N, L] int codes.

  Returns:
    [N, L+1] int32 SIDs, unique per item.
  """
  codes = np.asarray(codes)
  cluster, sizes = _clusters(codes)
  order = np.lexsort((np.arange(codes.shape[0]), cluster))
  starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
  rank = np.empty(codes.shape[0], np.int64)
  rank[order] = np.arange(codes.shape[0]) - starts[cluster[order]]
  return np.concatenate([codes, rank[:, None]], axis=1).astype(np.int32)


def add_suffix(codes: np.ndarray, config) -> np.ndarray:
  """[N, L] codes -> [N, L+1] SIDs with the suffix `config.suffix` asks for.

  Args:
    codes: [N, L] codes.
    config: a `rqvae.TokenizerConfig` (suffix, split_max_items, split_max_groups,
      split_seed).

  Returns:
    [N, L+1] int32 SIDs.
  """
  if config.suffix == "cluster_split":
    return split_clusters(codes, config.split_max_items, config.split_max_groups, config.split_seed)
  if config.suffix == "unique":
    return unique_suffix(codes)
  codes = np.asarray(codes, np.int32)
  return np.concatenate([codes, np.zeros((codes.shape[0], 1), np.int32)], axis=1)


def suffix_size(item_sid: np.ndarray, config) -> int:
  """Size of the suffix level in token space (G_max for the split: stable across updates)."""
  if config.suffix == "cluster_split":
    return int(config.split_max_groups)
  return int(np.max(item_sid[:, -1], initial=0)) + 1
