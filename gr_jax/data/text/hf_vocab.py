"""A pretrained model's Hugging Face tokenizer (tokenizer.json) as the text vocabulary.

The alternative to text_vocab's SentencePiece vocabulary for a generator started from a
pretrained Qwen2 / Qwen2.5 checkpoint (models/hf_qwen.py): piece ids are the tokenizer's own ids,
so `TokenLayout.text_tokens` (+ text_offset) lands each piece on the embedding row the pretrained
model learned for it. The layout's special tokens (PAD, EOS, BOS, SEP, UNK), profile and SID
tokens stay outside the text range and get new rows; the tokenizer's own special tokens
(<|endoftext|>, <|im_start|>, ...) are ordinary text pieces to the layout.

Encoding adds no special tokens (prompts are built by the SFT tasks). Only the `tokenizers`
library is used, not `transformers`.
"""

from __future__ import annotations

import os
import pathlib
import shutil
from collections.abc import Sequence

import numpy as np
import tokenizers

from gr_jax.data.text import vocab as text_vocab

TOKENIZER_FILE = "tokenizer.json"


def tokenizer_file(path: str | os.PathLike) -> pathlib.Path:
  """`path` itself if it is a file, else `path`/tokenizer.json (a checkpoint folder)."""
  path = pathlib.Path(path)
  return path / TOKENIZER_FILE if path.is_dir() else path


class HfTokenizerVocab(text_vocab.PieceVocabulary):
  """A Hugging Face `tokenizers` tokenizer: text <-> piece ids (same interface as TextVocab)."""

  label = "hf tokenizer"

  def __init__(self, path: pathlib.Path, tokenizer: tokenizers.Tokenizer):
    self.path = path
    self._tokenizer = tokenizer
    # Ids of the added tokens can follow the model vocabulary with gaps; the text range must
    # cover the largest id.
    self._size = max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1

  @classmethod
  def load(cls, path: str | os.PathLike) -> HfTokenizerVocab:
    """Loads tokenizer.json, or the tokenizer.json of a checkpoint folder.

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is not a `tokenizers` tokenizer.
    """
    path = tokenizer_file(path)
    if not path.is_file():
      raise FileNotFoundError(f"hf tokenizer: no {TOKENIZER_FILE} at {path}")
    try:
      tokenizer = tokenizers.Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises its own Exception type for a bad file
      raise ValueError(f"hf tokenizer: {path} is not a tokenizers tokenizer.json: {e}") from e
    return cls(path, tokenizer)

  @property
  def vocab_size(self) -> int:
    """Number of ids (added special tokens included): the layout's text_vocab_size."""
    return self._size

  def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
    """Texts -> one [num_pieces] int32 array of piece ids per text (no special tokens)."""
    texts = text_vocab.check_texts(texts, f"hf tokenizer {self.path}: encode")
    encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
    return [np.asarray(e.ids, np.int32) for e in encodings]

  def _decode_ids(self, ids: list[int]) -> str:
    return self._tokenizer.decode(ids, skip_special_tokens=False)


def install_tokenizer(source: str | os.PathLike, destination: str | os.PathLike) -> pathlib.Path:
  """Copies a checkpoint's tokenizer.json to `destination` (idempotent).

  Args:
    source: tokenizer.json or a checkpoint folder holding one.
    destination: where the run keeps it.

  Returns:
    `destination`.

  Raises:
    FileNotFoundError: no tokenizer at `source`.
    ValueError: `destination` already holds a different tokenizer (the run was started from
      another model).
  """
  source = tokenizer_file(source)
  destination = pathlib.Path(destination)
  if not source.is_file():
    raise FileNotFoundError(f"hf tokenizer: no {TOKENIZER_FILE} at {source}")
  if destination.exists():
    if destination.read_bytes() != source.read_bytes():
      raise ValueError(
        f"hf tokenizer: {destination} already holds another tokenizer than {source} (this work "
        "directory was started from another model; use a fresh one)"
      )
    return destination
  destination.parent.mkdir(parents=True, exist_ok=True)
  tmp = destination.with_name(destination.name + ".tmp")
  shutil.copyfile(source, tmp)
  os.replace(tmp, destination)
  return destination
