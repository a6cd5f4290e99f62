import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gr_jax.rl import experts


def _logged(rows, num_rows, levels=2):
  """[batch, num_rows, L] SIDs (-1 padding) and mask from per-row lists of SIDs."""
  array = -np.ones((len(rows), num_rows, levels), np.int32)
  mask = np.zeros((len(rows), num_rows), bool)
  for b, sids in enumerate(rows):
    for m, sid in enumerate(sids):
      array[b, m] = sid
      mask[b, m] = True
  return jnp.asarray(array), jnp.asarray(mask)


def _rows(sids, mask):
  return [
    [tuple(int(c) for c in sid) for sid, ok in zip(row_sids, row_mask) if ok]
    for row_sids, row_mask in zip(np.asarray(sids), np.asarray(mask))
  ]


def test_fewer_than_k_fills_from_exposed_then_masks():
  clicked = _logged(
    [
      [(1, 1), (1, 1)],  # one distinct clicked SID (repeated), two exposed
      [],  # no click: exposed only, one of them also a duplicate
      [],  # nothing logged: every slot masked
      [(5, 5), (6, 6), (7, 7), (8, 8)],  # four clicked: K=3 all from clicked
    ],
    4,
  )
  exposed = _logged(
    [
      [(1, 1), (2, 2), (3, 3)],
      [(4, 4), (4, 4)],
      [],
      [(9, 9)],
    ],
    3,
  )
  got, mask = experts.draw_experts(jax.random.key(0), *clicked, *exposed, num_experts=3)
  assert got.shape == (4, 3, 2) and mask.shape == (4, 3)
  rows = _rows(got, mask)
  # Clicked (1, 1) first, then both distinct exposed SIDs (the exposed copy of (1, 1) dropped).
  assert rows[0] == [(1, 1), (2, 2), (3, 3)]
  assert rows[1] == [(4, 4)]
  assert rows[2] == []
  assert len(rows[3]) == 3 and set(rows[3]) <= {(5, 5), (6, 6), (7, 7), (8, 8)}
  np.testing.assert_array_equal(mask.sum(1), [3, 1, 0, 3])
  # Filled slots come first; masked slots hold code 0.
  np.testing.assert_array_equal(mask[1], [True, False, False])
  assert np.all(np.asarray(got)[~np.asarray(mask)] == 0)


def test_clicked_before_exposed_no_duplicates_and_random_within_tier():
  clicked = _logged([[(1, 0), (2, 0), (3, 0), (2, 0), (4, 0)]], 6)
  exposed = _logged([[(7, 0), (8, 0), (1, 0)]], 3)
  draw = jax.jit(jax.vmap(lambda rng: experts.draw_experts(rng, *clicked, *exposed, 2)))
  sids, mask = draw(jax.random.split(jax.random.key(1), 400))
  sids = np.asarray(sids)[:, 0, :, 0]  # [draws, K]: level-0 code identifies the SID
  assert np.asarray(mask).all()
  # Always two distinct clicked SIDs, never an exposed one.
  assert np.all(sids[:, 0] != sids[:, 1])
  assert set(np.unique(sids)) == {1, 2, 3, 4}
  # Uniform over the 4 distinct clicked SIDs (the repeated (2, 0) is not favoured):
  # each is chosen with probability 1/2; 400 draws -> std 0.025.
  share = np.array([(sids == code).any(1).mean() for code in (1, 2, 3, 4)])
  np.testing.assert_allclose(share, 0.5, atol=0.1)
  # Laid out in logged order.
  order = {1: 0, 2: 1, 3: 2, 4: 4}
  assert all(order[a] < order[b] for a, b in sids)


def test_zero_experts_and_more_slots_than_candidates():
  clicked = _logged([[(1, 2)]], 1)
  exposed = _logged([[]], 1)
  got, mask = experts.draw_experts(jax.random.key(0), *clicked, *exposed, num_experts=0)
  assert got.shape == (1, 0, 2) and mask.shape == (1, 0)
  got, mask = experts.draw_experts(jax.random.key(0), *clicked, *exposed, num_experts=4)
  assert _rows(got, mask) == [[(1, 2)]]
  with pytest.raises(ValueError, match="num_experts"):
    experts.draw_experts(jax.random.key(0), *clicked, *exposed, num_experts=-1)


def test_build_group_layout_and_dedup():
  sampled = jnp.array([[(1, 1), (2, 2), (1, 1), (3, 3)]], jnp.int32)
  sample_valid = jnp.array([[True, False, True, True]])
  expert_sids = jnp.array([[(1, 1), (0, 0)]], jnp.int32)
  expert_mask = jnp.array([[True, False]])
  group = experts.build_group(sampled, sample_valid, expert_sids, expert_mask)
  assert group.sids.shape == (1, 6, 2)
  np.testing.assert_array_equal(group.sids[0, :4], sampled[0])
  np.testing.assert_array_equal(group.member_mask, [[True] * 5 + [False]])
  np.testing.assert_array_equal(group.is_expert, [[False] * 4 + [True] * 2])
  np.testing.assert_array_equal(group.sid_valid, [[True, False, True, True, True, False]])
  # The repeated sample (1, 1) is masked; a sample equal to an expert is kept.
  dedup = experts.build_group(sampled, sample_valid, expert_sids, expert_mask, dedup_sampled=True)
  np.testing.assert_array_equal(dedup.member_mask, [[True, True, False, True, True, False]])
  with pytest.raises(ValueError, match="levels"):
    experts.build_group(sampled, sample_valid, jnp.zeros((1, 2, 3), jnp.int32), expert_mask)
