"""Retrieval metrics: SID hitrate (the paper's tables), truncated hitrate, Recall/NDCG.

Hitrate@N (METHOD.md section 6) = mean over requests of the share of target items
whose SID is among the top-N beams, i.e. the item is in the expanded set. Requests
without any target item are left out of the mean (and counted).
"""

from __future__ import annotations

import numpy as np

from gr_jax.data.schema import PAD_ITEM
from gr_jax.sid import cluster_split, tables


def _keys(sids: np.ndarray, level_sizes) -> np.ndarray:
  """[..., L] codes -> [...] int64 keys; -1 where a code is outside its level."""
  flat = np.asarray(sids, np.int64).reshape(-1, len(level_sizes))
  ok = np.all((flat >= 0) & (flat < np.asarray(level_sizes)), axis=1)
  keys = cluster_split.code_keys(np.where(ok[:, None], flat, 0), tuple(level_sizes))
  return np.where(ok, keys, -1).reshape(np.shape(sids)[:-1])


def target_sid_hits(
  retrieved: np.ndarray,
  retrieved_valid: np.ndarray,
  target_items: np.ndarray,
  item_sid: np.ndarray,
  level_sizes,
) -> tuple[np.ndarray, np.ndarray]:
  """Which target items have their SID among the retrieved SIDs.

  Args:
    retrieved: [R, K, L] SID codes, best first.
    retrieved_valid: [R, K] bool (False for beams that found nothing).
    target_items: [R, M] item ids padded with PAD_ITEM.
    item_sid: [N, L] SID of every item.
    level_sizes: radix of each SID position.

  Returns:
    ([R, M] bool hit, [R, M] bool target mask).
  """
  mask = target_items != PAD_ITEM  # [R, M]
  target_keys = _keys(item_sid[np.maximum(target_items, 0)], level_sizes)  # [R, M]
  got_keys = np.where(retrieved_valid, _keys(retrieved, level_sizes), -2)  # [R, K]
  hit = np.any(target_keys[:, :, None] == got_keys[:, None, :], axis=-1) & mask  # [R, M]
  return hit, mask


def hitrate(hit: np.ndarray, mask: np.ndarray) -> dict[str, float]:
  """Mean over requests with targets of the share of targets hit."""
  counts = mask.sum(-1)
  rows = counts > 0
  share = hit.sum(-1)[rows] / counts[rows]
  return {
    "hitrate": float(share.mean()) if share.size else 0.0,
    "requests": int(rows.sum()),
    "requests_without_target": int((~rows).sum()),
  }


def sid_hitrate(retrieved, retrieved_valid, target_items, item_sid, level_sizes) -> dict:
  """Hitrate@K for the K retrieved SIDs (see module docstring)."""
  hit, mask = target_sid_hits(retrieved, retrieved_valid, target_items, item_sid, level_sizes)
  return hitrate(hit, mask)


def ranked_items(
  retrieved: np.ndarray,
  retrieved_valid: np.ndarray,
  sid_tables: tables.SidTables,
  efficiency_score: np.ndarray,
  *,
  max_items: int,
  within_cluster: str = "efficiency",
) -> np.ndarray:
  """Turns beams into one ranked, de-duplicated item list per request.

  The rule: items of the best beam first, then the next beam's, and so on; inside
  one cluster, by `within_cluster`: 'efficiency' (descending efficiency score,
  the paper's offline truncation key) or 'item_id' (catalog order, an ablation
  that ignores popularity).

  Args:
    retrieved: [R, K, L] SID codes, best first.
    retrieved_valid: [R, K] bool.
    sid_tables: the SID -> items table.
    efficiency_score: [N] float item score.
    max_items: length of each list (truncation; the paper's top-1K).
    within_cluster: tie-break rule inside a cluster.

  Returns:
    [R, max_items] int32 item ids, PAD_ITEM-padded.
  """
  num_requests, beams, levels = retrieved.shape
  members = tables.items_for_sids(sid_tables, retrieved.reshape(-1, levels))  # [R*K, W]
  members = members.reshape(num_requests, beams, -1)  # [R, K, W]
  members = np.where(retrieved_valid[:, :, None], members, PAD_ITEM)
  if within_cluster == "efficiency":
    score = np.where(members >= 0, efficiency_score[np.maximum(members, 0)], -np.inf)
    order = np.argsort(-score, axis=-1, kind="stable")
    members = np.take_along_axis(members, order, axis=-1)
  elif within_cluster != "item_id":
    raise ValueError(f"within_cluster: unknown rule '{within_cluster}' (efficiency, item_id)")
  flat = members.reshape(num_requests, -1)  # [R, K*W] beam order kept
  out = np.full((num_requests, max_items), PAD_ITEM, np.int32)
  for row in range(num_requests):
    items = flat[row][flat[row] >= 0]
    _, first = np.unique(items, return_index=True)  # de-duplicate, keep first place
    items = items[np.sort(first)][:max_items]
    out[row, : len(items)] = items
  return out


def item_hitrate(ranked: np.ndarray, target_items: np.ndarray) -> dict[str, float]:
  """Share of target items found in the (truncated) ranked list, mean over requests."""
  mask = target_items != PAD_ITEM  # [R, M]
  hit = np.zeros_like(mask)
  for row in range(len(ranked)):
    hit[row] = np.isin(target_items[row], ranked[row][ranked[row] >= 0]) & mask[row]
  return hitrate(hit, mask)


def recall_ndcg(ranked: np.ndarray, target: np.ndarray, ks=(10, 50)) -> dict[str, float]:
  """Leave-one-out Recall@K (= HIT@K) and NDCG@K for one target item per request.

  Args:
    ranked: [R, N] item ids, best first, PAD_ITEM-padded.
    target: [R] the held-out item.
  """
  match = ranked == target[:, None]  # [R, N]
  found = match.any(-1)
  rank = np.where(found, match.argmax(-1), np.iinfo(np.int32).max)  # 0-based
  out = {}
  for k in ks:
    inside = rank < k
    out[f"recall@{k}"] = float(inside.mean())
    out[f"ndcg@{k}"] = float(np.where(inside, 1.0 / np.log2(rank + 2.0), 0.0).mean())
  return out
