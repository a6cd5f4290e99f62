import numpy as np
import pytest

from gr_jax.models import token_layout


def test_ranges_are_disjoint_and_round_trip():
  layout = token_layout.TokenLayout(text_vocab_size=100, sid_level_sizes=(8, 4, 4, 3))
  assert layout.text_offset == token_layout.NUM_SPECIAL
  assert layout.sid_offset(0) == layout.age_offset + layout.num_age_bands
  assert layout.vocab_size == layout.sid_offset(3) + 3
  sids = np.array([[7, 3, 0, 2], [0, 0, 3, 1]], np.int32)
  tokens = layout.sid_to_tokens(sids)
  assert tokens.min() >= layout.sid_offset(0)
  np.testing.assert_array_equal(layout.tokens_to_sid(tokens), sids)
  assert layout.is_valid_sid_token(tokens).all()
  # A level-0 token in the level-1 slot is out of range there.
  swapped = tokens[:, ::-1]
  assert not layout.is_valid_sid_token(swapped).all()
  assert token_layout.TokenLayout.from_json(layout.to_json()) == layout


def test_bad_profile_and_sizes_raise():
  layout = token_layout.TokenLayout(text_vocab_size=10, sid_level_sizes=(2, 2))
  with pytest.raises(ValueError, match="gender"):
    layout.profile_tokens(np.array([5]), np.array([0]))
  with pytest.raises(ValueError, match="sid_level_sizes"):
    token_layout.TokenLayout(text_vocab_size=10, sid_level_sizes=(2, 0))
