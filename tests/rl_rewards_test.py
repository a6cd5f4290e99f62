import jax.numpy as jnp
import numpy as np
import pytest

from gr_jax.rl import rewards


def _set(sids, num_rows):
  """Pads a list of SIDs to [1, num_rows, L] (-1 padding) with its mask."""
  levels = 3
  array = -np.ones((1, num_rows, levels), np.int32)
  mask = np.zeros((1, num_rows), bool)
  for row, sid in enumerate(sids):
    array[0, row] = sid
    mask[0, row] = True
  return jnp.asarray(array), jnp.asarray(mask)


def test_first_match_wins_on_hand_made_logged_sets():
  purchased = _set([(1, 2, 3)], 2)
  clicked = _set([(1, 2, 3), (4, 5, 6)], 3)
  exposed = _set([(4, 5, 6), (7, 8, 9), (1, 2, 3)], 4)
  sampled = jnp.array(
    [
      [
        (1, 2, 3),  # purchased, clicked and exposed -> 1.0
        (4, 5, 6),  # clicked and exposed -> 1.0 (not 1.5, not 0.5)
        (7, 8, 9),  # exposed only -> 0.5
        (7, 8, 0),  # shares a prefix with an exposed SID, valid -> 0.1
        (9, 9, 9),  # invalid -> 0
        (7, 8, 9),  # exposed, flagged invalid by the sampler: a logged SID still counts -> 0.5
        (-1, -1, -1),  # equals the padding rows, which are masked -> invalid 0
      ]
    ],
    jnp.int32,
  )
  valid = jnp.array([[True, True, True, True, False, False, False]])
  got = rewards.logged_feedback_rewards(sampled, valid, *purchased, *clicked, *exposed)
  np.testing.assert_allclose(got, [[1.0, 1.0, 0.5, 0.1, 0.0, 0.5, 0.0]])
  assert got.dtype == jnp.float32


def test_tiers_are_separate_configurable_values():
  values = rewards.RewardValues(purchase=3.0, click=2.0, exposure=0.25, valid=0.05, invalid=-1.0)
  purchased = _set([(1, 1, 1)], 1)
  clicked = _set([(1, 1, 1), (2, 2, 2)], 2)
  exposed = _set([(2, 2, 2), (3, 3, 3)], 2)
  sampled = jnp.array([[(1, 1, 1), (2, 2, 2), (3, 3, 3), (4, 4, 4), (5, 5, 5)]], jnp.int32)
  valid = jnp.array([[True, True, True, True, False]])
  got = rewards.logged_feedback_rewards(sampled, valid, *purchased, *clicked, *exposed, values)
  np.testing.assert_allclose(got, [[3.0, 2.0, 0.25, 0.05, -1.0]])


def test_rows_only_see_their_own_logged_sets():
  # Row 0 clicked (1, 1); row 1 clicked (2, 2). The same samples in both rows.
  clicked = jnp.array([[(1, 1)], [(2, 2)]], jnp.int32)
  clicked_mask = jnp.ones((2, 1), bool)
  empty = jnp.zeros((2, 1, 2), jnp.int32)
  empty_mask = jnp.zeros((2, 1), bool)
  sampled = jnp.array([[(1, 1), (2, 2)], [(1, 1), (2, 2)]], jnp.int32)
  valid = jnp.ones((2, 2), bool)
  got = rewards.logged_feedback_rewards(
    sampled, valid, empty, empty_mask, clicked, clicked_mask, empty, empty_mask
  )
  np.testing.assert_allclose(got, [[1.0, 0.1], [0.1, 1.0]])


def test_shape_errors_name_the_argument():
  sids = jnp.zeros((2, 3, 4), jnp.int32)
  with pytest.raises(ValueError, match="levels"):
    rewards.sid_in_set(sids, jnp.zeros((2, 5, 3), jnp.int32), jnp.ones((2, 5), bool))
  with pytest.raises(ValueError, match="logged_mask"):
    rewards.sid_in_set(sids, jnp.zeros((2, 5, 4), jnp.int32), jnp.ones((2, 4), bool))
  logged = jnp.zeros((2, 1, 4), jnp.int32)
  mask = jnp.ones((2, 1), bool)
  with pytest.raises(ValueError, match="sample_valid"):
    rewards.logged_feedback_rewards(
      sids, jnp.ones((2, 2), bool), logged, mask, logged, mask, logged, mask
    )
