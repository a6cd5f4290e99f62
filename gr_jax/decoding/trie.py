"""Vectorised trie over the valid SIDs: built on the host, queried on device.

A node is a unique SID prefix. Node ids per depth d (prefix length d):

  depth 0       the root, id 0;
  depth 1       the level-0 code itself (ids 0..C_0-1, valid or not), so no table is needed;
  depth d >= 2  rank of the prefix among the unique length-d prefixes in lexicographic order.
                At depth L (L >= 2) the id is the row of the SID in the sorted unique SID array
                (`unique_sids`), which is what downstream tables can key on.

Transitions from depth l (choosing the code of level l):

  level 0       `level1_valid` [C_0] bool;
  level 1       CSR as below, or a dense `level2_node` [C_0, C_1] table (child id or -1) when
                C_0 * C_1 is at most `dense_level2_max_entries` (default 0: the bit rows are
                smaller and faster to turn into a mask, see benchmarks/README.md);
  level l >= 2  CSR: children of node n are the depth-(l+1) ids
                child_start[n]..child_start[n+1] (contiguous: ids follow lexicographic order).
                The sorted child codes of node n are stored as a fixed-width bit row
                `child_bits[n]` [ceil(C_l / 32)] uint32: bit c set when code c is a child.
                The child id of code c is child_start[n] plus the number of set bits below c:
                `child_rank[n, c // 32]` (set bits in the words before c's word, stored) plus
                the set bits below c in its own word, so a step is O(1) per beam.

Every query is one gather of a table row, with static shapes, so it runs inside `jax.jit` on any
device (the STATIC layout: a dense table at the top, CSR below). The bit row replaces a row of
child codes padded to the level's maximum fan-out: with skewed categories the fan-out reaches
hundreds, and at paper scale (3M SIDs, codebooks 2048 x 1024 x 1024 x 100) the whole trie takes
760 MiB with padded int16 rows and 126 MiB with bit rows, at the same one gather per query. The
rank rows add 57 MiB there (183 MiB in all) and make the step to a child 3 scalar reads instead of
a 32-word popcount (level 2 of a search step 0.35 -> 0.2 ms on CPU, benchmarks/README.md).
"""

from __future__ import annotations

import gin
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

# Largest product of level sizes that still fits a mixed-radix int64 key.
_MAX_INT64_KEY = 2**62


@struct.dataclass
class TrieIndex:
  """Device-side trie over valid SIDs (a pytree; level sizes are static).

  Attributes:
    level1_valid: [C_0] bool, whether a level-0 code starts some valid SID.
    level2_node: [C_0, C_1] int32 depth-2 node id or -1, or None when level 1 is CSR.
    child_start: per level l, [num_nodes_l + 1] int32 CSR offsets into depth-(l+1) ids; None for
      levels served by a dense table (level 0 always, level 1 when `level2_node` is set).
    child_bits: per level l, [num_nodes_l, ceil(C_l / 32)] uint32 bit rows of child codes; None
      where `child_start` is None.
    child_rank: per level l, [num_nodes_l, ceil(C_l / 32)] uint16 (int32 when C_l > 65535) set
      bits of `child_bits` in the words before each word; None where `child_start` is None.
    level_sizes: codebook size of each level (static).
    num_sids: number of unique valid SIDs (static).
  """

  level1_valid: jax.Array
  level2_node: jax.Array | None
  child_start: tuple[jax.Array | None, ...]
  child_bits: tuple[jax.Array | None, ...]
  child_rank: tuple[jax.Array | None, ...]
  level_sizes: tuple[int, ...] = struct.field(pytree_node=False)
  num_sids: int = struct.field(pytree_node=False)

  @property
  def num_levels(self) -> int:
    return len(self.level_sizes)


def _check_sids(sids: np.ndarray, level_sizes: tuple[int, ...], argument: str) -> np.ndarray:
  """Returns `sids` as int64 [S, L] or raises naming the first bad row and level."""
  sids = np.asarray(sids)
  if sids.ndim != 2 or sids.shape[1] != len(level_sizes):
    raise ValueError(f"{argument}: expected shape [S, {len(level_sizes)}], got {sids.shape}")
  if not np.issubdtype(sids.dtype, np.integer):
    raise ValueError(f"{argument}: expected integer codes, got dtype {sids.dtype}")
  if sids.shape[0] == 0:
    raise ValueError(f"{argument}: no SIDs given; a trie needs at least one valid SID")
  sids = sids.astype(np.int64)
  sizes = np.asarray(level_sizes, np.int64)
  bad = (sids < 0) | (sids >= sizes)
  if bad.any():
    row, level = np.argwhere(bad)[0]
    raise ValueError(
      f"{argument}: row {row} level {level}: code {sids[row, level]} outside "
      f"[0, {level_sizes[level]})"
    )
  return sids


def unique_sids(sids: np.ndarray, level_sizes: tuple[int, ...]) -> np.ndarray:
  """[S, L] codes -> [U, L] int32 unique SIDs in lexicographic order (leaf id = row).

  Raises:
    ValueError: on a wrong shape, an empty set or a code outside its level.
  """
  level_sizes = tuple(int(s) for s in level_sizes)
  sids = _check_sids(sids, level_sizes, "sids")
  if np.prod(np.asarray(level_sizes, np.float64)) < _MAX_INT64_KEY:
    # A mixed-radix key sorts like the rows and is far faster than np.unique(axis=0).
    strides = np.cumprod((level_sizes[1:] + (1,))[::-1])[::-1].astype(np.int64)  # [L]
    keys = np.sort(sids @ strides)  # [S]; sort + diff beats np.unique's hashing here
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]  # [U]
    return ((keys[:, None] // strides) % np.asarray(level_sizes, np.int64)).astype(np.int32)
  return np.unique(sids, axis=0).astype(np.int32)


def _num_words(size: int) -> int:
  """uint32 words of a bit row over `size` codes."""
  return -(-size // 32)


@gin.configurable(allowlist=["dense_level2_max_entries"])
def build_trie_index(
  sids: np.ndarray,
  level_sizes: tuple[int, ...],
  *,
  dense_level2_max_entries: int = 0,
) -> TrieIndex:
  """Builds the trie with vectorised numpy (no per-SID Python loop) and puts it on device.

  Args:
    sids: [S, L] integer codes of valid SIDs; duplicates are allowed.
    level_sizes: codebook size of each of the L levels (e.g. layout.sid_level_sizes).
    dense_level2_max_entries: use a dense [C_0, C_1] int32 table for level 1 when C_0 * C_1 is
      at most this; 0 (default) keeps level 1 in CSR bit rows, which build the [rows, C_1] mask from
      4 bytes per 32 codes instead of 4 bytes per code (faster on CPU, 8 MiB smaller at paper
      scale).

  Returns:
    The TrieIndex, arrays on the default device.

  Raises:
    ValueError: on a wrong shape, an empty set or a code outside its level.
  """
  level_sizes = tuple(int(s) for s in level_sizes)
  if any(s <= 0 for s in level_sizes):
    raise ValueError(f"level_sizes must be positive, got {level_sizes}")
  unique = unique_sids(sids, level_sizes)  # [U, L]
  num_sids, num_levels = unique.shape
  # starts[i, d]: row i is the first row of a new prefix of length d + 1.
  changed = np.logical_or.accumulate(unique[1:] != unique[:-1], axis=1)  # [U-1, L]
  starts = np.concatenate([np.ones((1, num_levels), bool), changed], axis=0)  # [U, L]

  def node_of_row(depth: int) -> np.ndarray:
    """[U] id of each row's depth-`depth` prefix (depth >= 1)."""
    if depth == 1:
      return unique[:, 0].astype(np.int64)
    return np.cumsum(starts[:, depth - 1]) - 1

  level1_valid = np.zeros(level_sizes[0], bool)
  level1_valid[unique[:, 0]] = True
  level2_node = None
  child_start: list[np.ndarray | None] = [None]
  child_bits: list[np.ndarray | None] = [None]
  child_rank: list[np.ndarray | None] = [None]
  for level in range(1, num_levels):
    first_rows = np.flatnonzero(starts[:, level])  # one row per depth-(level+1) node
    parent = node_of_row(level)[first_rows]  # [num_children], non-decreasing
    codes = unique[first_rows, level]  # [num_children]
    num_parents = level_sizes[0] if level == 1 else int(starts[:, level - 1].sum())
    if level == 1 and level_sizes[0] * level_sizes[1] <= dense_level2_max_entries:
      level2_node = np.full(level_sizes[:2], -1, np.int32)
      level2_node[parent, codes] = np.arange(first_rows.size, dtype=np.int32)
      child_start.append(None)
      child_bits.append(None)
      child_rank.append(None)
      continue
    counts = np.bincount(parent, minlength=num_parents)  # [num_parents]
    child_start.append(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    bits = np.zeros((num_parents, _num_words(level_sizes[level])), np.uint32)
    bit_values = np.left_shift(np.uint32(1), (codes % 32).astype(np.uint32))  # [num_children]
    np.bitwise_or.at(bits, (parent, codes // 32), bit_values)
    child_bits.append(bits)
    rank_dtype = np.uint16 if level_sizes[level] <= np.iinfo(np.uint16).max else np.int32
    per_word = np.bitwise_count(bits).astype(rank_dtype)  # [num_parents, W]
    child_rank.append(np.cumsum(per_word, axis=1, dtype=rank_dtype) - per_word)  # exclusive

  to_device = lambda x: None if x is None else jnp.asarray(x)
  return TrieIndex(
    level1_valid=jnp.asarray(level1_valid),
    level2_node=to_device(level2_node),
    child_start=tuple(to_device(x) for x in child_start),
    child_bits=tuple(to_device(x) for x in child_bits),
    child_rank=tuple(to_device(x) for x in child_rank),
    level_sizes=level_sizes,
    num_sids=num_sids,
  )


def _check_level(trie: TrieIndex, level: int) -> None:
  if not 0 <= level < trie.num_levels:
    raise ValueError(f"level {level} outside [0, {trie.num_levels})")


def valid_next_mask(trie: TrieIndex, level: int, node_ids: jax.Array) -> jax.Array:
  """Which level-`level` codes continue each prefix.

  Args:
    trie: the index.
    level: static level of the code being chosen (0-based); node_ids are depth-`level` ids.
    node_ids: [rows] int32 node ids; -1 (a dead prefix) allows nothing.

  Returns:
    [rows, C_level] bool.
  """
  _check_level(trie, level)
  alive = node_ids >= 0  # [rows]
  safe = jnp.where(alive, node_ids, 0)  # [rows]
  if level == 0:
    return alive[:, None] & trie.level1_valid[None, :]
  if level == 1 and trie.level2_node is not None:
    return alive[:, None] & (trie.level2_node[safe] >= 0)
  words = trie.child_bits[level][safe]  # [rows, W]
  bit_index = jnp.arange(32, dtype=jnp.uint32)
  bits = (words[:, :, None] >> bit_index) & 1  # [rows, W, 32]
  mask = bits.reshape(node_ids.shape[0], -1)[:, : trie.level_sizes[level]] > 0  # [rows, C]
  return alive[:, None] & mask


def next_node(trie: TrieIndex, level: int, node_ids: jax.Array, codes: jax.Array) -> jax.Array:
  """Child of each node along a level-`level` code.

  Args:
    trie: the index.
    level: static level of `codes` (0-based); node_ids are depth-`level` ids.
    node_ids: [rows] int32 node ids, -1 for a dead prefix.
    codes: [rows] int32 codes of level `level` (any value; out of range gives -1).

  Returns:
    [rows] int32 depth-(level+1) node ids, -1 where the prefix is not valid.
  """
  _check_level(trie, level)
  size = trie.level_sizes[level]
  ok = (node_ids >= 0) & (codes >= 0) & (codes < size)  # [rows]
  safe_node = jnp.where(ok, node_ids, 0)
  safe_code = jnp.where(ok, codes, 0)
  if level == 0:
    child = jnp.where(trie.level1_valid[safe_code], safe_code, -1)
  elif level == 1 and trie.level2_node is not None:
    child = trie.level2_node[safe_node, safe_code]
  else:
    # Three scalar reads per beam (the code's word, its rank, the first child), not a bit row.
    word = safe_code // 32  # [rows]
    bit = (safe_code % 32).astype(jnp.uint32)  # [rows]
    code_word = trie.child_bits[level][safe_node, word]  # [rows] uint32
    found = ((code_word >> bit) & 1) > 0  # [rows]
    below = jax.lax.population_count(code_word & ((jnp.uint32(1) << bit) - 1))  # [rows]
    rank = trie.child_rank[level][safe_node, word].astype(jnp.int32) + below.astype(jnp.int32)
    child = jnp.where(found, trie.child_start[level][safe_node] + rank, -1)
  return jnp.where(ok, child, -1).astype(jnp.int32)


def sid_leaf_ids(trie: TrieIndex, sids: jax.Array) -> jax.Array:
  """[..., L] codes -> [...] int32 leaf id (row in `unique_sids`), -1 when not a valid SID."""
  flat = jnp.reshape(sids, (-1, trie.num_levels)).astype(jnp.int32)  # [M, L]
  nodes = jnp.zeros(flat.shape[0], jnp.int32)  # the root
  for level in range(trie.num_levels):
    nodes = next_node(trie, level, nodes, flat[:, level])
  return nodes.reshape(sids.shape[:-1])


def contains(trie: TrieIndex, sids: jax.Array) -> jax.Array:
  """[..., L] codes -> [...] bool, whether each SID is in the trie."""
  return sid_leaf_ids(trie, sids) >= 0
