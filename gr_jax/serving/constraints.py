"""Per-request constraints: a category allow-list on device, item filters on the host.

Two places constrain a request without a new compiled program:

- Level 0 of the beam search (on device): a [C_0] bool mask of the level-0 codes a
  request may start with, an input of the compiled decode (`Retriever.decode`'s
  `allowed_first`). A category allow-list becomes this mask through the level-0 codes
  the allowed categories' items use (for CQ-SID the level-0 code is the category, so
  the mask is exact; for other tokenizers a code may hold items of other categories
  too, which the item filter then drops).
- After expansion (on the host): excluded item ids, a brand allow-list, an
  efficiency-score range, and the category allow-list again (exact for any tokenizer).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gr_jax.data import schema


@dataclasses.dataclass(frozen=True)
class ItemFilter:
  """What a request lets through after its SIDs are expanded to items.

  Attributes:
    categories: leaf category ids allowed (None: any).
    exclude_items: item ids never returned.
    brands: brands allowed (None: any).
    min_efficiency, max_efficiency: inclusive efficiency-score range (None: open).
  """

  categories: tuple[int, ...] | None = None
  exclude_items: tuple[int, ...] = ()
  brands: tuple[str, ...] | None = None
  min_efficiency: float | None = None
  max_efficiency: float | None = None

  @property
  def empty(self) -> bool:
    return self == ItemFilter()


class CatalogConstraints:
  """Category -> level-0 codes, and item filters over one catalog and SID assignment.

  Args:
    catalog: the items (category_id, brand, efficiency_score are read).
    item_sid: [N, L] SID codes of the items (column 0 is the level-0 code).
    first_level_size: C_0, the number of level-0 codes.
  """

  def __init__(self, catalog: schema.Catalog, item_sid: np.ndarray, first_level_size: int):
    self.num_items = catalog.num_items
    self.num_categories = catalog.num_categories
    self.first_level_size = int(first_level_size)
    self.category_id = np.asarray(catalog.category_id, np.int64)  # [N]
    self.brand = np.asarray(catalog.brand, object)  # [N]
    self.efficiency_score = np.asarray(catalog.efficiency_score, np.float32)  # [N]
    known = self.category_id >= 0
    # [num_categories, C_0]: which level-0 codes hold an item of each category.
    self.category_codes = np.zeros((self.num_categories, self.first_level_size), bool)
    self.category_codes[self.category_id[known], np.asarray(item_sid)[known, 0]] = True

  def allowed_first(self, categories: tuple[int, ...] | None) -> np.ndarray:
    """[C_0] bool level-0 codes of the allowed categories' items (all True for None)."""
    if categories is None:
      return np.ones(self.first_level_size, bool)
    return self.category_codes[np.asarray(categories, np.int64)].any(0)

  def keep(self, items: np.ndarray, item_filter: ItemFilter) -> np.ndarray:
    """[M] item ids (PAD_ITEM allowed) -> [M] bool: a real item the filter lets through."""
    items = np.asarray(items)
    real = items != schema.PAD_ITEM
    safe = np.where(real, items, 0)
    ok = real.copy()
    if item_filter.categories is not None:
      ok &= np.isin(self.category_id[safe], np.asarray(item_filter.categories, np.int64))
    if item_filter.exclude_items:
      ok &= ~np.isin(items, np.asarray(item_filter.exclude_items, np.int64))
    if item_filter.brands is not None:
      ok &= np.isin(self.brand[safe], np.asarray(item_filter.brands, object))
    if item_filter.min_efficiency is not None:
      ok &= self.efficiency_score[safe] >= item_filter.min_efficiency
    if item_filter.max_efficiency is not None:
      ok &= self.efficiency_score[safe] <= item_filter.max_efficiency
    return ok
