import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gr_jax.decoding import trie as trie_lib


def brute_force_children(sids: np.ndarray, level: int) -> dict[tuple, set]:
  """Prefix of length `level` -> set of level-`level` codes that continue it."""
  children: dict[tuple, set] = {}
  for sid in sids.tolist():
    children.setdefault(tuple(sid[:level]), set()).add(sid[level])
  return children


# Jitted once per level rather than dispatched op by op: keeps the tests fast.
valid_next_mask = jax.jit(trie_lib.valid_next_mask, static_argnums=1)
next_node = jax.jit(trie_lib.next_node, static_argnums=1)
contains = jax.jit(trie_lib.contains)
sid_leaf_ids = jax.jit(trie_lib.sid_leaf_ids)


@functools.partial(jax.jit, static_argnums=2)
def walk(trie, prefixes: jax.Array, depth: int) -> jax.Array:
  """[M, depth] prefixes -> [M] depth-`depth` node ids."""
  nodes = jnp.zeros(prefixes.shape[0], jnp.int32)
  for level in range(depth):
    nodes = trie_lib.next_node(trie, level, nodes, prefixes[:, level])
  return nodes


def test_hand_example():
  sids = np.array([[0, 1, 2], [0, 1, 0], [2, 0, 1], [0, 0, 0], [2, 0, 1]])
  for dense in (1 << 10, 0):
    trie = trie_lib.build_trie_index(sids, (3, 2, 3), dense_level2_max_entries=dense)
    assert (trie.level2_node is None) == (dense == 0)
    assert trie.num_sids == 4
    np.testing.assert_array_equal(valid_next_mask(trie, 0, jnp.array([0])), [[1, 0, 1]])
    np.testing.assert_array_equal(
      valid_next_mask(trie, 1, jnp.array([0, 1, 2, -1])),
      [[1, 1], [0, 0], [1, 0], [0, 0]],
    )
    # Depth-2 ids follow the sorted prefixes (0,0), (0,1), (2,0).
    np.testing.assert_array_equal(
      next_node(trie, 1, jnp.array([0, 0, 2, 1, -1]), jnp.array([0, 1, 0, 0, 0])),
      [0, 1, 2, -1, -1],
    )
    np.testing.assert_array_equal(
      valid_next_mask(trie, 2, jnp.array([0, 1, 2])),
      [[1, 0, 0], [1, 0, 1], [0, 1, 0]],
    )
    # Leaf ids are rows of the sorted unique SIDs: (0,0,0) (0,1,0) (0,1,2) (2,0,1).
    np.testing.assert_array_equal(
      sid_leaf_ids(trie, jnp.array([[2, 0, 1], [0, 1, 2], [0, 1, 1], [1, 0, 0]])),
      [3, 2, -1, -1],
    )


@pytest.mark.parametrize("dense_level2_max_entries", [1 << 20, 0])
# 40 codes span two bit words; 33 and 64 put codes on both sides of word edges (31 / 32 / 63).
@pytest.mark.parametrize("level_sizes", [(6, 5, 40, 3), (4, 33, 64, 2)])
def test_random_sets_match_brute_force(dense_level2_max_entries, level_sizes):
  rng = np.random.default_rng(0)
  product = np.array(list(itertools.product(*[range(s) for s in level_sizes])), np.int32)
  sids = product[rng.choice(len(product), 400, replace=False)]
  duplicated = np.concatenate([sids, sids[:50]])[rng.permutation(450)]
  trie = trie_lib.build_trie_index(
    duplicated, level_sizes, dense_level2_max_entries=dense_level2_max_entries
  )
  assert trie.num_sids == 400
  unique = trie_lib.unique_sids(sids, level_sizes)
  np.testing.assert_array_equal(unique, np.unique(sids, axis=0))
  for level in range(len(level_sizes)):
    children = brute_force_children(unique, level)
    prefixes = np.array(sorted(children), np.int32).reshape(len(children), level)
    nodes = walk(trie, jnp.asarray(prefixes), level)
    assert (nodes >= 0).all()
    mask = np.asarray(valid_next_mask(trie, level, nodes))
    want = np.zeros_like(mask)
    for row, prefix in enumerate(map(tuple, prefixes.tolist())):
      want[row, sorted(children[prefix])] = True
    np.testing.assert_array_equal(mask, want)
  np.testing.assert_array_equal(sid_leaf_ids(trie, jnp.asarray(unique)), np.arange(400))
  in_set = {tuple(s) for s in sids.tolist()}
  expected = np.array([tuple(s) in in_set for s in product.tolist()])
  np.testing.assert_array_equal(contains(trie, jnp.asarray(product)), expected)
  # Codes out of range never match.
  c0, c1, c2, c3 = level_sizes
  assert not contains(trie, jnp.array([[c0, 0, 0, 0], [0, 0, 0, -1], [0, 0, c2, 0]])).any()
  assert not contains(trie, jnp.array([[0, c1, 0, 0], [0, -1, 0, 0], [0, 0, 0, c3]])).any()


def test_under_jit_and_as_pytree():
  sids = np.array([[1, 2, 3], [1, 2, 4]])
  trie = trie_lib.build_trie_index(sids, (3, 4, 5))
  step = jax.jit(lambda t, nodes, codes: trie_lib.next_node(t, 2, nodes, codes))
  nodes = walk(trie, jnp.array([[1, 2]]), 2)
  np.testing.assert_array_equal(step(trie, nodes, jnp.array([4])), [1])
  # Default: level-0 mask, then CSR offsets, bit rows and rank rows for levels 1 and 2.
  assert trie.level2_node is None and len(jax.tree.leaves(trie)) == 7
  assert trie.child_bits[1].shape == (3, 1) and trie.child_bits[2].shape == (1, 1)
  assert trie.child_rank[2].shape == (1, 1) and trie.child_rank[2].dtype == jnp.uint16
  # With a dense level-1 table: level-0 mask, the table, level-2 CSR offsets, bit and rank rows.
  dense = trie_lib.build_trie_index(sids, (3, 4, 5), dense_level2_max_entries=12)
  assert dense.level2_node.shape == (3, 4) and len(jax.tree.leaves(dense)) == 5


def test_rank_rows_count_the_set_bits_before_each_word():
  # Node (0,) has children 0, 31, 32, 33, 64, 99: words 0..3 hold 2, 2, 1, 1 of them.
  codes = [0, 31, 32, 33, 64, 99]
  sids = np.array([[0, c] for c in codes] + [[1, 5]])
  trie = trie_lib.build_trie_index(sids, (2, 100))
  np.testing.assert_array_equal(trie.child_rank[1], [[0, 2, 4, 5], [0, 1, 1, 1]])
  children = next_node(trie, 1, jnp.zeros(len(codes) + 2, jnp.int32), jnp.array(codes + [1, 63]))
  np.testing.assert_array_equal(children, [0, 1, 2, 3, 4, 5, -1, -1])


def test_bad_input_raises():
  with pytest.raises(ValueError, match="row 1 level 2: code 5"):
    trie_lib.build_trie_index(np.array([[0, 0, 0], [0, 0, 5]]), (2, 2, 5))
  with pytest.raises(ValueError, match=r"shape \[S, 3\]"):
    trie_lib.build_trie_index(np.zeros((4, 2), np.int32), (2, 2, 2))
  with pytest.raises(ValueError, match="no SIDs"):
    trie_lib.build_trie_index(np.zeros((0, 3), np.int32), (2, 2, 2))
  with pytest.raises(ValueError, match="integer"):
    trie_lib.build_trie_index(np.zeros((1, 3), np.float32), (2, 2, 2))
