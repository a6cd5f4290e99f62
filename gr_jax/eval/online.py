"""Simulated online A/B test: the channel's items put through the world's ranker and users.

The built-in world knows every request's intent, every user's taste and the click
and purchase model behind its logs (gr_jax/data/world/simulator.py). So the items a
generator retrieves for a test request can be served as if the channel were live:
the world's ranker scores them (true utility + ranker noise), shows its top
`exposure_k` in score order, and the position-biased click model and the purchase
model give the request's expected clicks and purchases. No published system can
run this check: it tells whether an offline (logged) gain would show online.

The ranker noise of (request, item) is a fixed hash of both, so two systems that
retrieve the same item for the same request see the same score (common random
numbers: paired comparisons stay sharp). Expected values, not sampled clicks,
remove the click noise.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from absl import logging
from scipy import special

from gr_jax.data import schema
from gr_jax.data.world import simulator


@dataclasses.dataclass(frozen=True)
class _Items:
  """The item truth `simulator.relevance_and_utility` reads."""

  leaf: np.ndarray  # [N] int32
  attributes: np.ndarray  # [N, 2] int32
  brand: np.ndarray  # [N] int32
  price: np.ndarray  # [N] int32
  quality: np.ndarray  # [N] float32 standardised log efficiency


@dataclasses.dataclass(frozen=True)
class _Tree:
  leaf_mid: np.ndarray  # [leaves] int32
  leaf_top: np.ndarray  # [leaves] int32


class OnlineWorld:
  """Serves retrieved items to the world's simulated ranker and users.

  Args:
    world: a generated or loaded world (its logs are the requests served).
    seed: seed of the ranker-noise hash.
  """

  def __init__(self, world: simulator.World, seed: int = 0):
    self.config = world.config
    log_eff = np.log(world.catalog.efficiency_score.astype(np.float64))
    quality = ((log_eff - log_eff.mean()) / (log_eff.std() + 1e-6)).astype(np.float32)
    self.items = _Items(
      leaf=world.catalog.category_id.astype(np.int32),
      attributes=world.item_attributes,
      brand=world.item_brand_id,
      price=world.item_price_band,
      quality=quality,
    )
    self.tree = _Tree(leaf_mid=world.leaf_mid, leaf_top=world.mid_top[world.leaf_mid])
    self.world = world
    self.seed = int(seed)
    self.exam = simulator.examination(self.config)  # [k]

  def _intent(self, rows: np.ndarray) -> tuple:
    w = self.world
    leaf = w.query_intent_leaf[rows]
    mid = w.leaf_mid[leaf]
    return (
      self.tree.leaf_top[leaf],
      leaf,
      mid,
      w.query_intent_is_mid[rows],
      w.query_attribute[rows],
      w.query_brand[rows],
    )

  def _taste(self, rows: np.ndarray) -> tuple:
    w = self.world
    profile = w.user_profile[w.logs.user_id[rows]]  # [B, 2]
    segment = profile[:, 0] * simulator.NUM_AGE_BANDS + profile[:, 1]
    return segment, w.segment_brand_affinity, w.segment_price[segment]

  def ranker_noise(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """[B, C] standard normal noise, a fixed function of (seed, request id, item id)."""
    request = self.world.logs.request_id[rows].astype(np.uint64)[:, None]
    mixed = _splitmix64(_splitmix64(request ^ np.uint64(self.seed)) ^ items.astype(np.uint64))
    uniform = ((mixed >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
    return special.ndtri(uniform).astype(np.float32)

  def serve(self, rows: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray]:
    """Expected engagement when the channel alone feeds the ranker.

    Args:
      rows: [B] request rows of the world's logs.
      items: [B, C] retrieved item ids, PAD_ITEM-padded (order does not matter:
        the ranker re-ranks them).

    Returns:
      {'clicks': [B], 'purchases': [B]} expected clicks and purchases per request,
      and 'relevance' [B]: mean true relevance of the shown items (NaN when none).
    """
    rows = np.asarray(rows)
    items = np.asarray(items)
    valid = items != schema.PAD_ITEM  # [B, C]
    safe = np.where(valid, items, 0)
    relevance, utility = simulator.relevance_and_utility(
      self.config, self.items, self.tree, self._intent(rows), safe, self._taste(rows)
    )  # [B, C] each
    score = utility + self.config.ranker_noise * self.ranker_noise(rows, safe)
    score = np.where(valid, score, -np.inf)
    k = min(self.config.exposure_k, items.shape[1])
    order = np.argsort(-score, axis=1, kind="stable")[:, :k]  # [B, k] display order
    shown = np.isfinite(np.take_along_axis(score, order, axis=1))  # [B, k]
    shown_utility = np.take_along_axis(utility, order, axis=1)
    click, purchase = simulator.engagement_probabilities(self.config, self.exam[:k], shown_utility)
    clicks = np.where(shown, click, 0.0).sum(1)
    shown_relevance = np.where(shown, np.take_along_axis(relevance, order, axis=1), 0.0)
    count = shown.sum(1)
    return {
      "clicks": clicks.astype(np.float64),
      "purchases": np.where(shown, click * purchase, 0.0).sum(1).astype(np.float64),
      "relevance": np.where(count > 0, shown_relevance.sum(1) / np.maximum(count, 1), np.nan),
    }

  def logged(self, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The same expectations for what the logged system showed (its exposure, in order)."""
    rows = np.asarray(rows)
    exposed = self.world.logs.exposed[rows]  # [B, k] display order
    shown = exposed != schema.PAD_ITEM
    _, utility = simulator.relevance_and_utility(
      self.config,
      self.items,
      self.tree,
      self._intent(rows),
      np.where(shown, exposed, 0),
      self._taste(rows),
    )
    k = exposed.shape[1]
    click, purchase = simulator.engagement_probabilities(self.config, self.exam[:k], utility)
    return {
      "clicks": np.where(shown, click, 0.0).sum(1).astype(np.float64),
      "purchases": np.where(shown, click * purchase, 0.0).sum(1).astype(np.float64),
    }


def for_world(world: simulator.World | None, num_items: int) -> OnlineWorld | None:
  """The world's simulated users for a catalog of `num_items` items, or None: for real
  data (no world), and for a catalog with items added after the world was made (the
  world knows no true utility for them, so no simulated user could judge them)."""
  if world is None:
    return None
  known = world.catalog.num_items
  if num_items > known:
    logging.warning(
      "online simulation off: the catalog has %d items added after the world was made "
      "(the world knows its %d items only)",
      num_items - known,
      known,
    )
    return None
  return OnlineWorld(world)


def _splitmix64(x: np.ndarray) -> np.ndarray:
  """A fixed 64-bit mixing function (SplitMix64's finaliser), elementwise on uint64."""
  with np.errstate(over="ignore"):
    x = (x + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)).astype(np.uint64)
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)).astype(np.uint64)
    return x ^ (x >> np.uint64(31))
