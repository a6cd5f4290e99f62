"""Retrieval metrics: SID hitrate (the paper's tables), truncated hitrate, Recall/NDCG.

Hitrate@N (METHOD.md section 6) = mean over requests of the share of target items
whose SID is among the top-N beams, i.e. the item is in the expanded set. Requests
without any target item are left out of the mean (and counted).

Every metric is also available per request (`request_shares`, `recall_ndcg(...,
per_request=True)`), so that `eval/stats.py` can put a bootstrap interval on it and
compare two systems on the same requests.
"""

from __future__ import annotations

import numpy as np

from gr_jax.data.schema import PAD_ITEM
from gr_jax.sid import cluster_split, tables

# Ways to rank the union of the items the beams reached.
RANK_ORDERS = ("beam", "efficiency")
WITHIN_CLUSTER_RULES = ("efficiency", "item_id")


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
    retrieved: [B, K, L] SID codes, best first.
    retrieved_valid: [B, K] bool (False for beams that found nothing).
    target_items: [B, M] item ids padded with PAD_ITEM.
    item_sid: [N, L] SID of every item.
    level_sizes: radix of each SID position.

  Returns:
    ([B, M] bool hit, [B, M] bool target mask).
  """
  mask = target_items != PAD_ITEM  # [B, M]
  target_keys = _keys(item_sid[np.maximum(target_items, 0)], level_sizes)  # [B, M]
  got_keys = np.where(retrieved_valid, _keys(retrieved, level_sizes), -2)  # [B, K]
  hit = np.any(target_keys[:, :, None] == got_keys[:, None, :], axis=-1) & mask  # [B, M]
  return hit, mask


def request_shares(hit: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-request share of targets hit.

  Args:
    hit: [B, M] bool.
    mask: [B, M] bool, True for real targets.

  Returns:
    ([B'] float shares of the requests that have a target, [B] bool which those are).
  """
  counts = mask.sum(-1)  # [B]
  rows = counts > 0
  shares = (hit & mask).sum(-1)[rows] / counts[rows]
  return shares.astype(np.float64), rows


def hitrate(hit: np.ndarray, mask: np.ndarray) -> dict[str, float]:
  """Mean over requests with targets of the share of targets hit."""
  shares, rows = request_shares(hit, mask)
  return {
    "hitrate": float(shares.mean()) if shares.size else 0.0,
    "requests": int(rows.sum()),
    "requests_without_target": int((~rows).sum()),
  }


def sid_hitrate(retrieved, retrieved_valid, target_items, item_sid, level_sizes) -> dict:
  """Hitrate@K for the K retrieved SIDs (see module docstring)."""
  hit, mask = target_sid_hits(retrieved, retrieved_valid, target_items, item_sid, level_sizes)
  return hitrate(hit, mask)


def _beam_members(retrieved, retrieved_valid, sid_tables, efficiency_score, within_cluster):
  """[B, K, W] items of each beam's SID (PAD_ITEM-padded), ordered inside each cluster."""
  if within_cluster not in WITHIN_CLUSTER_RULES:
    raise ValueError(
      f"within_cluster: unknown rule '{within_cluster}' ({', '.join(WITHIN_CLUSTER_RULES)})"
    )
  batch, beams, levels = retrieved.shape
  members = tables.items_for_sids(sid_tables, retrieved.reshape(-1, levels))  # [B*K, W]
  members = members.reshape(batch, beams, -1)  # [B, K, W]
  members = np.where(retrieved_valid[:, :, None], members, PAD_ITEM)
  if within_cluster == "efficiency":
    score = np.where(members >= 0, efficiency_score[np.maximum(members, 0)], -np.inf)
    order = np.argsort(-score, axis=-1, kind="stable")
    members = np.take_along_axis(members, order, axis=-1)
  return members


def _rank_union(items: np.ndarray, efficiency_score: np.ndarray, order: str) -> np.ndarray:
  """One request's reached items (beam order, repeats allowed) -> its de-duplicated ranking."""
  unique, first = np.unique(items, return_index=True)  # unique is sorted by item id
  if order == "beam":
    return items[np.sort(first)]  # each item at its first place
  # By efficiency, highest first; equal scores by item id (stable sort of sorted ids).
  return unique[np.argsort(-efficiency_score[unique], kind="stable")]


def ranked_items(
  retrieved: np.ndarray,
  retrieved_valid: np.ndarray,
  sid_tables: tables.SidTables,
  efficiency_score: np.ndarray,
  *,
  max_items: int,
  within_cluster: str = "efficiency",
  order: str = "beam",
  chunk: int = 512,
) -> np.ndarray:
  """Turns beams into one ranked, de-duplicated item list per request.

  Two rules rank the union of the items the beams reached:
  - 'beam': items of the best beam first, then the next beam's, and so on; inside
    one cluster by `within_cluster`: 'efficiency' (descending efficiency score) or
    'item_id' (catalog order, an ablation that ignores popularity). What a
    retrieval channel returns, and what Recall/NDCG rank.
  - 'efficiency': the whole union by descending efficiency score (ties by item id),
    the paper's offline top-1K protocol (METHOD.md section 4).

  Args:
    retrieved: [B, K, L] SID codes, best first.
    retrieved_valid: [B, K] bool.
    sid_tables: the SID -> items table.
    efficiency_score: [N] float item score.
    max_items: length of each list (truncation; the paper's top-1K).
    within_cluster: rule inside a cluster for order='beam'.
    order: 'beam' or 'efficiency' (see above).
    chunk: requests expanded at once (bounds the [chunk, K, W] buffers).

  Returns:
    [B, max_items] int32 item ids, PAD_ITEM-padded.
  """
  if order not in RANK_ORDERS:
    raise ValueError(f"order: unknown rule '{order}' ({', '.join(RANK_ORDERS)})")
  efficiency_score = np.asarray(efficiency_score)
  out = np.full((len(retrieved), max_items), PAD_ITEM, np.int32)
  for start in range(0, len(retrieved), chunk):
    part = slice(start, start + chunk)
    members = _beam_members(
      retrieved[part], retrieved_valid[part], sid_tables, efficiency_score, within_cluster
    )
    flat = members.reshape(len(members), -1)  # [b, K*W] beam order kept
    for row, reached in enumerate(flat):
      items = _rank_union(reached[reached >= 0], efficiency_score, order)[:max_items]
      out[start + row, : len(items)] = items
  return out


def reached_item_counts(
  retrieved: np.ndarray, retrieved_valid: np.ndarray, sid_tables: tables.SidTables
) -> np.ndarray:
  """[B] number of distinct items the valid beams expand to (before any truncation)."""
  batch, beams, levels = retrieved.shape
  rows = tables.sid_index(sid_tables, retrieved.reshape(-1, levels)).reshape(batch, beams)
  rows = np.where(retrieved_valid, rows, -1)  # [B, K] row in the SID table, -1 for none
  counts = np.zeros(batch, np.int64)
  for request, found in enumerate(rows):
    # An item has one SID, so distinct SIDs' cluster sizes add up.
    distinct = np.unique(found[found >= 0])
    counts[request] = sid_tables.sid_sizes[distinct].sum()
  return counts


def item_hits(ranked: np.ndarray, target_items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """([B, M] bool target found in the ranked list, [B, M] bool target mask)."""
  mask = target_items != PAD_ITEM  # [B, M]
  hit = np.zeros_like(mask)
  for row in range(len(ranked)):
    hit[row] = np.isin(target_items[row], ranked[row][ranked[row] >= 0]) & mask[row]
  return hit, mask


def item_hitrate(ranked: np.ndarray, target_items: np.ndarray) -> dict[str, float]:
  """Share of target items found in the (truncated) ranked list, mean over requests."""
  return hitrate(*item_hits(ranked, target_items))


def recall_ndcg(
  ranked: np.ndarray, target: np.ndarray, ks=(10, 50), *, per_request: bool = False
) -> dict:
  """Leave-one-out Recall@K (= HIT@K) and NDCG@K for one target item per request.

  Args:
    ranked: [B, N] item ids, best first, PAD_ITEM-padded.
    target: [B] the held-out item.
    ks: cut-offs.
    per_request: return [B] arrays of per-request terms instead of their means.
  """
  match = ranked == target[:, None]  # [B, N]
  found = match.any(-1)
  rank = np.where(found, match.argmax(-1), np.iinfo(np.int32).max)  # 0-based
  out = {}
  for k in ks:
    inside = rank < k
    recall = inside.astype(np.float64)
    ndcg = np.where(inside, 1.0 / np.log2(rank + 2.0), 0.0)
    out[f"recall@{k}"] = recall if per_request else float(recall.mean())
    out[f"ndcg@{k}"] = ndcg if per_request else float(ndcg.mean())
  return out
