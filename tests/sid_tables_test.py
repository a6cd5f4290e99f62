"""Cluster split, SID tables, artefact round trip and diagnostics on known assignments."""

import json
import os

import numpy as np
import pytest

from gr_jax.sid import cluster_split, diagnostics, rqvae, tables


def _codes_with_cluster_sizes(sizes, seed=0):
  """[sum(sizes), 2] codes: cluster j (codes (j, 0)) holds sizes[j] items, shuffled."""
  codes = np.concatenate([np.full((size, 2), [j, 0]) for j, size in enumerate(sizes)])
  return codes[np.random.default_rng(seed).permutation(len(codes))].astype(np.int32)


def test_split_respects_max_items_unless_max_groups_binds():
  sizes = [3, 50, 51, 120, 1000]
  codes = _codes_with_cluster_sizes(sizes)
  sids = cluster_split.split_clusters(codes, max_items=50, max_groups=10, seed=1)
  assert sids.shape == (len(codes), 3) and sids.dtype == np.int32
  np.testing.assert_array_equal(sids[:, :2], codes)
  for cluster, size in enumerate(sizes):
    groups = sids[codes[:, 0] == cluster, 2]
    expected_groups = 1 if size <= 50 else min(int(np.ceil(size / 50)), 10)
    counts = np.bincount(groups)
    assert len(counts) == expected_groups
    assert counts.max() - counts.min() <= 1  # balanced deal
    if size <= 50:
      assert np.all(groups == 0)
    elif int(np.ceil(size / 50)) <= 10:
      assert counts.max() <= 50
    else:
      assert counts.max() == 100  # G_max binds: 1000 items in 10 groups
  same = cluster_split.split_clusters(codes, max_items=50, max_groups=10, seed=1)
  np.testing.assert_array_equal(sids, same)
  other = cluster_split.split_clusters(codes, max_items=50, max_groups=10, seed=2)
  assert not np.array_equal(sids, other)


def test_unique_suffix_makes_ids_unique():
  codes = _codes_with_cluster_sizes([1, 4, 7])
  sids = cluster_split.unique_suffix(codes)
  assert len(np.unique(sids, axis=0)) == len(codes)
  assert sids[:, 2].max() == 6
  # Rank by item id inside a collision set.
  for cluster in range(3):
    members = np.flatnonzero(codes[:, 0] == cluster)
    np.testing.assert_array_equal(sids[members, 2], np.arange(len(members)))


def _tables():
  codes = _codes_with_cluster_sizes([2, 5, 9], seed=3)
  item_sid = cluster_split.split_clusters(codes, max_items=4, max_groups=100, seed=0)
  return tables.build_sid_tables(item_sid, (3, 1, 100))


def test_item_to_sid_to_items_contains_the_item():
  sid_tables = _tables()
  keys = cluster_split.code_keys(sid_tables.sids, sid_tables.level_sizes)
  assert np.all(np.diff(keys) > 0)  # unique and lexicographically sorted
  expanded = tables.items_for_sids(sid_tables, sid_tables.item_sid)  # [N, W]
  for item in range(len(sid_tables.item_sid)):
    row = expanded[item]
    assert item in row
    members = row[row >= 0]
    np.testing.assert_array_equal(np.sort(members), members)
    assert np.all((sid_tables.item_sid[members] == sid_tables.item_sid[item]).all(axis=1))
  assert sorted(sid_tables.items.tolist()) == list(range(len(sid_tables.item_sid)))


def test_unknown_sids_expand_to_nothing():
  sid_tables = _tables()
  queries = np.array([[0, 0, 99], [2, 0, 0], [7, 0, 0], [-1, 0, 0]])
  index = tables.sid_index(sid_tables, queries)
  assert index[0] == -1 and index[1] >= 0 and index[2] == -1 and index[3] == -1
  expanded = tables.items_for_sids(sid_tables, queries, max_items=3)
  assert expanded.shape == (4, 3)
  assert np.all(expanded[[0, 2, 3]] == -1)
  assert np.all(expanded[1] >= 0)


def test_artefacts_round_trip_and_replace_atomically(tmp_path):
  sid_tables = _tables()
  config = rqvae.TokenizerConfig(feature_dim=4, latent_dim=2, codebook_sizes=(3, 1))
  variables = {"codebook": {"level_0": {"embeddings": np.ones((3, 2), np.float32)}}}
  target = str(tmp_path / "sid")
  tables.write_sid_artefacts(target, sid_tables, {"num_sids": 1}, variables, config)
  tables.write_sid_artefacts(target, sid_tables, {"num_sids": 2}, variables, config)
  assert sorted(os.listdir(tmp_path)) == ["sid"]  # no temp or old directory left behind
  loaded = tables.load_sid_artefacts(target)
  np.testing.assert_array_equal(loaded.tables.item_sid, sid_tables.item_sid)
  np.testing.assert_array_equal(loaded.tables.sids, sid_tables.sids)
  np.testing.assert_array_equal(loaded.tables.offsets, sid_tables.offsets)
  np.testing.assert_array_equal(loaded.tables.items, sid_tables.items)
  assert loaded.tables.level_sizes == sid_tables.level_sizes
  assert loaded.diagnostics == {"num_sids": 2}
  assert loaded.config == config
  np.testing.assert_array_equal(loaded.variables["codebook"]["level_0"]["embeddings"], 1.0)
  with open(os.path.join(target, "diagnostics.json")) as f:
    assert json.load(f) == {"num_sids": 2}
  os.remove(os.path.join(target, "config.json"))
  with pytest.raises(FileNotFoundError, match="config.json"):
    tables.load_sid_artefacts(target)


def test_extend_tables_keeps_existing_sids():
  sid_tables = _tables()
  extended = tables.extend_sid_tables(sid_tables, sid_tables.item_sid[:2])
  n = len(sid_tables.item_sid)
  np.testing.assert_array_equal(extended.item_sid[:n], sid_tables.item_sid)
  expanded = tables.items_for_sids(extended, sid_tables.item_sid[:1])
  assert n in expanded[0] and 0 in expanded[0]


def test_diagnostics_on_known_assignment():
  codes = np.array([[0, 0], [0, 0], [0, 1], [1, 1], [1, 1], [1, 1]])
  usage = diagnostics.code_usage(codes, (4, 2))
  assert usage["usage_l0"] == 0.5 and usage["usage_l1"] == 1.0
  assert usage["perplexity_l0"] == pytest.approx(2.0)  # 3 / 3 split
  p = np.array([2, 4]) / 6
  assert usage["perplexity_l1"] == pytest.approx(np.exp(-np.sum(p * np.log(p))))

  item_sid = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0]])
  stats = diagnostics.cluster_stats(tables.build_sid_tables(item_sid, (4, 2, 2)), 2)
  assert stats["num_sids"] == 4 and stats["num_code_tuples"] == 3
  assert stats["items_per_sid_max"] == 3 and stats["largest_sid"] == [1, 1, 0]
  assert stats["items_per_sid_mean"] == pytest.approx(1.5)
  assert stats["items_per_sid_p50"] == pytest.approx(1.0)
  assert stats["largest_code_tuple_items"] == 3
  assert stats["share_items_in_split_clusters"] == pytest.approx(2 / 6)


def test_tables_reject_out_of_range_sids():
  with pytest.raises(ValueError, match="row 1"):
    tables.build_sid_tables(np.array([[0, 0], [3, 0]]), (3, 1))


def _tables_by_np_unique(item_sid, level_sizes):
  """The previous build_sid_tables: a stable argsort, then np.unique on the sorted keys."""
  keys = cluster_split.code_keys(np.asarray(item_sid, np.int32), level_sizes)
  order = np.argsort(keys, kind="stable")
  _, first, counts = np.unique(keys[order], return_index=True, return_counts=True)
  offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
  return np.asarray(item_sid, np.int32)[order[first]], offsets, order.astype(np.int32)


@pytest.mark.parametrize(
  "case", ["random", "one_item", "one_sid", "all_distinct", "no_items", "largest_codes"]
)
def test_build_sid_tables_equals_np_unique_method(case):
  rng = np.random.default_rng(11)
  level_sizes = (7, 5, 3)
  if case == "random":
    item_sid = rng.integers(0, level_sizes, size=(5000, 3))  # many items per SID
  elif case == "one_item":
    item_sid = np.array([[6, 0, 2]])
  elif case == "one_sid":
    item_sid = np.tile([[3, 4, 1]], (50, 1))
  elif case == "all_distinct":
    item_sid = np.stack(np.unravel_index(rng.permutation(105), level_sizes), axis=1)
  elif case == "no_items":
    item_sid = np.zeros((0, 3), np.int64)
  else:  # SIDs at the top of every level and at zero
    item_sid = np.array([[6, 4, 2], [0, 0, 0], [6, 4, 2], [6, 4, 1], [0, 0, 0]])
  sid_tables = tables.build_sid_tables(item_sid, level_sizes)
  sids, offsets, items = _tables_by_np_unique(item_sid, level_sizes)
  for got, want in ((sid_tables.sids, sids), (sid_tables.offsets, offsets)):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
  assert sid_tables.items.dtype == np.int32
  np.testing.assert_array_equal(sid_tables.items, items)
  assert sid_tables.sids.dtype == np.int32 and sid_tables.sids.shape[1:] == (3,)
