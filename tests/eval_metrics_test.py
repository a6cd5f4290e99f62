"""Oracle tests for gr_jax/eval/metrics.py: every expected value is worked out by hand."""

import numpy as np
import pytest

from gr_jax.data.schema import PAD_ITEM
from gr_jax.eval import metrics
from gr_jax.sid import tables

LEVELS = (3, 4, 2)
# Items 0..6 in four clusters: A=(0,0,0): {0, 3}; B=(0,1,0): {1}; C=(1,2,0): {2, 4, 6};
# D=(2,3,1): {5}.
ITEM_SID = np.array(
  [[0, 0, 0], [0, 1, 0], [1, 2, 0], [0, 0, 0], [1, 2, 0], [2, 3, 1], [1, 2, 0]], np.int32
)
A, B, C, D = [0, 0, 0], [0, 1, 0], [1, 2, 0], [2, 3, 1]
# Efficiency: item 6 > 4 > 1 > 0 > 5 > 3 > 2.
EFFICIENCY = np.array([3.0, 4.0, 0.5, 1.0, 6.0, 2.0, 9.0], np.float32)


@pytest.fixture(scope="module")
def sid_tables():
  return tables.build_sid_tables(ITEM_SID, LEVELS)


def _pad(rows, width):
  out = np.full((len(rows), width), PAD_ITEM, np.int32)
  for i, row in enumerate(rows):
    out[i, : len(row)] = row
  return out


def test_hits_count_each_target_once_even_when_beams_repeat_a_sid():
  retrieved = np.array([[A, A, C]])  # [1, 3, 3]: SID A twice
  valid = np.ones((1, 3), bool)
  targets = _pad([[0, 3, 5]], 3)  # two items of A, one of D
  hit, mask = metrics.target_sid_hits(retrieved, valid, targets, ITEM_SID, LEVELS)
  np.testing.assert_array_equal(hit, [[True, True, False]])
  assert metrics.hitrate(hit, mask)["hitrate"] == pytest.approx(2 / 3)


def test_invalid_beams_and_out_of_range_codes_hit_nothing():
  retrieved = np.array([[A, B], [[5, 0, 0], C]])  # row 1 beam 0: code 5 >= level size 3
  valid = np.array([[False, True], [True, True]])  # row 0's beam A is marked invalid
  targets = _pad([[0], [2]], 1)
  hit, _ = metrics.target_sid_hits(retrieved, valid, targets, ITEM_SID, LEVELS)
  np.testing.assert_array_equal(hit, [[False], [True]])


def test_requests_without_targets_are_left_out_and_counted():
  hit = np.array([[True, False], [False, False], [True, True]])
  mask = np.array([[True, True], [False, False], [True, False]])
  shares, rows = metrics.request_shares(hit, mask)
  np.testing.assert_allclose(shares, [0.5, 1.0])
  np.testing.assert_array_equal(rows, [True, False, True])
  result = metrics.hitrate(hit, mask)
  assert result == {"hitrate": 0.75, "requests": 2, "requests_without_target": 1}


def test_hitrate_of_no_request_is_zero_not_nan():
  result = metrics.hitrate(np.zeros((2, 1), bool), np.zeros((2, 1), bool))
  assert result == {"hitrate": 0.0, "requests": 0, "requests_without_target": 2}


def test_beam_order_deduplicates_at_first_place_and_orders_inside_clusters(sid_tables):
  retrieved = np.array([[C, A, C, B]])  # C repeated after A
  valid = np.ones((1, 4), bool)
  by_efficiency = metrics.ranked_items(
    retrieved, valid, sid_tables, EFFICIENCY, max_items=8, within_cluster="efficiency"
  )
  # C by efficiency (6, 4, 2), then A (0, 3), then B (1); C's repeat adds nothing.
  np.testing.assert_array_equal(by_efficiency[0], [6, 4, 2, 0, 3, 1, PAD_ITEM, PAD_ITEM])
  by_id = metrics.ranked_items(
    retrieved, valid, sid_tables, EFFICIENCY, max_items=8, within_cluster="item_id"
  )
  np.testing.assert_array_equal(by_id[0], [2, 4, 6, 0, 3, 1, PAD_ITEM, PAD_ITEM])


def test_efficiency_order_ranks_the_whole_union_by_score(sid_tables):
  retrieved = np.array([[A, C], [D, B]])
  valid = np.array([[True, True], [True, False]])
  ranked = metrics.ranked_items(
    retrieved, valid, sid_tables, EFFICIENCY, max_items=6, order="efficiency"
  )
  # Row 0: union {0, 3, 2, 4, 6} by score 9, 6, 3, 1, 0.5; row 1: only D's item 5.
  np.testing.assert_array_equal(ranked[0], [6, 4, 0, 3, 2, PAD_ITEM])
  np.testing.assert_array_equal(ranked[1], [5] + [PAD_ITEM] * 5)


def test_efficiency_ties_break_by_item_id(sid_tables):
  flat = np.ones(len(ITEM_SID), np.float32)
  ranked = metrics.ranked_items(
    np.array([[C, A]]), np.ones((1, 2), bool), sid_tables, flat, max_items=5, order="efficiency"
  )
  np.testing.assert_array_equal(ranked[0], [0, 2, 3, 4, 6])


def test_truncation_binds_only_when_the_union_is_longer(sid_tables):
  retrieved = np.array([[A, C, B]])  # union of 6 items
  valid = np.ones((1, 3), bool)
  targets = _pad([[2, 1]], 2)  # the two lowest-efficiency reachable: 0.5 and 4.0
  cut = metrics.ranked_items(
    retrieved, valid, sid_tables, EFFICIENCY, max_items=3, order="efficiency"
  )
  np.testing.assert_array_equal(cut[0], [6, 4, 1])  # binds: 6 items -> top 3 by score
  assert metrics.item_hitrate(cut, targets)["hitrate"] == pytest.approx(0.5)
  whole = metrics.ranked_items(
    retrieved, valid, sid_tables, EFFICIENCY, max_items=10, order="efficiency"
  )
  assert metrics.item_hitrate(whole, targets)["hitrate"] == pytest.approx(1.0)
  # Without a binding cut, the truncated hitrate equals the SID hitrate.
  sid_rate = metrics.sid_hitrate(retrieved, valid, targets, ITEM_SID, LEVELS)["hitrate"]
  assert sid_rate == pytest.approx(1.0)


def test_ranking_is_the_same_in_chunks(sid_tables):
  rng = np.random.default_rng(0)
  retrieved = np.array([A, B, C, D])[rng.integers(0, 4, (9, 3))]  # [9, 3, 3]
  valid = rng.random((9, 3)) > 0.2
  for order in metrics.RANK_ORDERS:
    whole = metrics.ranked_items(retrieved, valid, sid_tables, EFFICIENCY, max_items=7, order=order)
    chunked = metrics.ranked_items(
      retrieved, valid, sid_tables, EFFICIENCY, max_items=7, order=order, chunk=2
    )
    np.testing.assert_array_equal(whole, chunked)


def test_unknown_rules_are_named(sid_tables):
  args = (np.array([[A]]), np.ones((1, 1), bool), sid_tables, EFFICIENCY)
  with pytest.raises(ValueError, match="order: unknown rule 'score'"):
    metrics.ranked_items(*args, max_items=2, order="score")
  with pytest.raises(ValueError, match="within_cluster: unknown rule 'brand'"):
    metrics.ranked_items(*args, max_items=2, within_cluster="brand")


def test_reached_item_counts_add_distinct_clusters(sid_tables):
  retrieved = np.array([[A, C, A], [D, [2, 3, 0], B]])  # row 1 beam 1: a SID nobody has
  valid = np.array([[True, True, True], [True, True, False]])
  np.testing.assert_array_equal(metrics.reached_item_counts(retrieved, valid, sid_tables), [5, 1])


def test_recall_and_ndcg_at_ranks_zero_one_and_outside():
  ranked = np.array([[7, 1, 2], [1, 7, 2], [1, 2, 3], [PAD_ITEM, PAD_ITEM, PAD_ITEM]])
  target = np.array([7, 7, 7, 7])
  scores = metrics.recall_ndcg(ranked, target, ks=(1, 2), per_request=True)
  np.testing.assert_array_equal(scores["recall@1"], [1, 0, 0, 0])
  np.testing.assert_array_equal(scores["recall@2"], [1, 1, 0, 0])
  np.testing.assert_allclose(scores["ndcg@1"], [1.0, 0.0, 0.0, 0.0])
  np.testing.assert_allclose(scores["ndcg@2"], [1.0, 1.0 / np.log2(3.0), 0.0, 0.0])
  means = metrics.recall_ndcg(ranked, target, ks=(2,))
  assert means["recall@2"] == pytest.approx(0.5)
  assert means["ndcg@2"] == pytest.approx((1.0 + 1.0 / np.log2(3.0)) / 4)
