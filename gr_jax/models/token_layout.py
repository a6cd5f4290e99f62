"""The one place that owns the generator's token-id layout.

Every id the generator reads or writes lives in one flat vocabulary:

    [0, NUM_SPECIAL)                     special tokens (PAD, EOS, BOS, SEP, UNK)
    [text_offset, +text_vocab_size)      text pieces (SentencePiece id + text_offset)
    [gender_offset, +num_genders)        user-profile gender tokens
    [age_offset, +num_age_bands)         user-profile age-band tokens
    [sid_offset(l), +sid_level_sizes[l]) SID codes of level l, levels back to back

A SID is a tuple of L codes (for CQ-SID with cluster split: s1, s2, s3, group);
`sid_to_tokens` and `tokens_to_sid` convert between code space and token space.
Nothing else in the code base may add or subtract these offsets by hand.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

PAD_ID = 0
EOS_ID = 1
BOS_ID = 2
SEP_ID = 3
UNK_ID = 4
NUM_SPECIAL = 5


@dataclasses.dataclass(frozen=True)
class TokenLayout:
  """Token-id layout of the generator's vocabulary.

  Attributes:
    text_vocab_size: number of text pieces (SentencePiece vocabulary size).
    sid_level_sizes: codebook size of each SID level, e.g. (2048, 1024, 1024, 100).
    num_genders: number of gender profile values.
    num_age_bands: number of age-band profile values.
  """

  text_vocab_size: int
  sid_level_sizes: tuple[int, ...]
  num_genders: int = 3
  num_age_bands: int = 8

  def __post_init__(self):
    if self.text_vocab_size < 0:
      raise ValueError(f"text_vocab_size must be >= 0, got {self.text_vocab_size}")
    if not self.sid_level_sizes or any(int(s) <= 0 for s in self.sid_level_sizes):
      raise ValueError(f"sid_level_sizes must be positive, got {self.sid_level_sizes}")
    object.__setattr__(self, "sid_level_sizes", tuple(int(s) for s in self.sid_level_sizes))

  @property
  def text_offset(self) -> int:
    return NUM_SPECIAL

  @property
  def gender_offset(self) -> int:
    return self.text_offset + self.text_vocab_size

  @property
  def age_offset(self) -> int:
    return self.gender_offset + self.num_genders

  @property
  def num_sid_levels(self) -> int:
    return len(self.sid_level_sizes)

  def sid_offset(self, level: int) -> int:
    """First token id of SID level `level` (0-based)."""
    if not 0 <= level < self.num_sid_levels:
      raise ValueError(f"SID level {level} outside [0, {self.num_sid_levels})")
    return self.age_offset + self.num_age_bands + sum(self.sid_level_sizes[:level])

  @property
  def sid_offsets(self) -> np.ndarray:
    """[L] int32 first token id of each level."""
    return np.array([self.sid_offset(lvl) for lvl in range(self.num_sid_levels)], np.int32)

  @property
  def vocab_size(self) -> int:
    return self.sid_offset(self.num_sid_levels - 1) + self.sid_level_sizes[-1]

  def text_tokens(self, piece_ids: np.ndarray) -> np.ndarray:
    return np.asarray(piece_ids, np.int32) + self.text_offset

  def profile_tokens(self, gender: np.ndarray, age_band: np.ndarray) -> np.ndarray:
    """[...] gender, [...] age band -> [..., 2] token ids."""
    gender = np.asarray(gender)
    age_band = np.asarray(age_band)
    if np.any((gender < 0) | (gender >= self.num_genders)):
      raise ValueError(f"gender outside [0, {self.num_genders})")
    if np.any((age_band < 0) | (age_band >= self.num_age_bands)):
      raise ValueError(f"age band outside [0, {self.num_age_bands})")
    return np.stack([gender + self.gender_offset, age_band + self.age_offset], -1).astype(np.int32)

  def sid_to_tokens(self, sids):
    """[..., L] codes -> [..., L] token ids (numpy or jax arrays)."""
    return sids + self.sid_offsets.astype(sids.dtype)

  def tokens_to_sid(self, tokens):
    """[..., L] token ids -> [..., L] codes (numpy or jax arrays)."""
    return tokens - self.sid_offsets.astype(tokens.dtype)

  def is_valid_sid_token(self, tokens):
    """[..., L] token ids -> [..., L] bool: token lies in its level's range."""
    codes = self.tokens_to_sid(tokens)
    sizes = np.asarray(self.sid_level_sizes, np.int32)
    return (codes >= 0) & (codes < sizes.astype(codes.dtype))

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self))

  @classmethod
  def from_json(cls, text: str) -> TokenLayout:
    return cls(**json.loads(text))
