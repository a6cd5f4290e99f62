"""SentencePiece text vocabulary trained locally on item titles and queries.

The model follows the T5 / seqio convention for special pieces: 0 = <pad>,
1 = </s> (EOS), 2 = <unk>, no BOS. Piece ids returned here are raw SentencePiece
ids; `token_layout.TokenLayout.text_tokens` adds the generator's text offset.
"""

from __future__ import annotations

import io
import logging
import os
import pathlib
import tempfile
from collections.abc import Sequence

import gin
import numpy as np
import sentencepiece as spm

from gr_jax import io_utils

PAD_PIECE_ID = 0
EOS_PIECE_ID = 1
UNK_PIECE_ID = 2


def check_texts(texts: Sequence[str], what: str) -> list[str]:
  """`texts` as a list, or TypeError naming `what` when it is not a sequence of str."""
  if isinstance(texts, str):
    raise TypeError(f"{what}: texts must be a sequence of str, got a single str")
  texts = list(texts)
  for row, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(f"{what}: texts[{row}] is {type(text).__name__}, expected str")
  return texts


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
  """Writes `data` to `path` through a temp file + rename: readers never see a torn file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp_path = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
  io_utils.normal_permissions(tmp_path)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp_path, path)
  except BaseException:
    pathlib.Path(tmp_path).unlink(missing_ok=True)
    raise


@gin.configurable(denylist=["texts", "path"])
def train_text_vocab(
  texts: Sequence[str],
  path: str | os.PathLike,
  vocab_size: int = 8000,
  model_type: str = "unigram",
  character_coverage: float = 0.9995,
  normalization_rule_name: str = "nmt_nfkc",
  allow_smaller_vocab: bool = True,
  max_sentences: int = 2_000_000,
  num_threads: int = 4,
  seed: int = 0,
) -> pathlib.Path:
  """Trains a SentencePiece model on `texts` and writes it to `path`.

  Deterministic: the same texts and arguments give a byte-identical model file.

  Args:
    texts: training sentences (titles, queries); empty strings are skipped.
    path: output .model file; written atomically, parent directories created.
    vocab_size: number of pieces, the 3 special pieces included.
    model_type: 'unigram' or 'bpe'.
    character_coverage: fraction of characters covered by single-char pieces;
      the rarest rest map to <unk>.
    normalization_rule_name: SentencePiece normaliser ('nmt_nfkc', 'nmt_nfkc_cf'
      to also case-fold, 'identity').
    allow_smaller_vocab: for unigram, a corpus too small for `vocab_size` gets
      as many pieces as it supports instead of an error (read
      `TextVocab.vocab_size` for the result).
    max_sentences: corpora larger than this are subsampled (seeded) to this many
      sentences before training.
    num_threads: SentencePiece trainer threads.
    seed: seed of the subsampling.

  Returns:
    The path of the written model.

  Raises:
    TypeError: `texts` is not a sequence of str.
    ValueError: empty corpus, bad argument, or SentencePiece rejects the corpus
      for this vocab_size.
  """
  texts = check_texts(texts, "train_text_vocab")
  sentences = [text for text in texts if text.strip()]
  if not sentences:
    raise ValueError(f"train_text_vocab: no non-empty text to train on ({len(texts)} texts given)")
  if model_type not in ("unigram", "bpe"):
    raise ValueError(f"train_text_vocab: model_type must be 'unigram' or 'bpe', got {model_type!r}")
  if vocab_size < 4:
    raise ValueError(f"train_text_vocab: vocab_size must be >= 4, got {vocab_size}")
  if max_sentences < 1:
    raise ValueError(f"train_text_vocab: max_sentences must be >= 1, got {max_sentences}")
  if len(sentences) > max_sentences:
    keep = np.random.default_rng(seed).choice(len(sentences), max_sentences, replace=False)
    sentences = [sentences[i] for i in np.sort(keep)]

  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences),
      model_writer=model,
      vocab_size=vocab_size,
      model_type=model_type,
      character_coverage=character_coverage,
      normalization_rule_name=normalization_rule_name,
      hard_vocab_limit=not allow_smaller_vocab,
      pad_id=PAD_PIECE_ID,
      eos_id=EOS_PIECE_ID,
      unk_id=UNK_PIECE_ID,
      bos_id=-1,
      input_sentence_size=0,
      num_threads=num_threads,
      minloglevel=2,
    )
  except RuntimeError as e:
    raise ValueError(
      f"train_text_vocab: SentencePiece could not train a {model_type} vocabulary of "
      f"{vocab_size} pieces on {len(sentences)} sentences for {path}: {e}"
    ) from e
  trained_size = spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()
  if trained_size < vocab_size:
    logging.warning(
      "train_text_vocab: corpus of %d sentences supports only %d of the %d pieces asked for %s",
      len(sentences),
      trained_size,
      vocab_size,
      path,
    )
  path = pathlib.Path(path)
  _write_atomically(path, model.getvalue())
  return path


class PieceVocabulary:
  """What every text vocabulary shares: padding a batch of encodings, decoding ids.

  Subclasses set `path`, `vocab_size`, `label` (how messages name them) and implement
  `encode(texts) -> list[np.ndarray]` and `_decode_ids(ids: list[int]) -> str`.
  """

  label = "text vocab"

  def encode_padded(self, texts: Sequence[str], max_len: int, pad_id: int = -1) -> np.ndarray:
    """Texts -> [texts, max_len] int32 piece ids, truncated, right-padded with `pad_id`.

    Padding is -1 by default (as the data schema's id lists), so it can never be
    confused with a piece once `TokenLayout.text_tokens` adds its offset: mask
    `ids >= 0` first.

    Raises:
      TypeError: `texts` is not a sequence of str.
      ValueError: max_len < 1.
    """
    if max_len < 1:
      raise ValueError(
        f"{self.label} {self.path}: encode_padded max_len must be >= 1, got {max_len}"
      )
    pieces = self.encode(texts)
    padded = np.full((len(pieces), max_len), pad_id, np.int32)  # [texts, max_len]
    for row, ids in enumerate(pieces):
      ids = ids[:max_len]
      padded[row, : len(ids)] = ids
    return padded

  def decode(self, ids) -> str | list[str]:
    """Piece ids -> text; negative ids (padding) are skipped.

    Args:
      ids: a 1-D sequence of ids (-> str) or a 2-D array / list of sequences (-> list[str]).

    Raises:
      ValueError: an id is >= vocab_size.
    """
    if isinstance(ids, np.ndarray):
      batched = ids.ndim == 2
    else:
      batched = len(ids) > 0 and not np.isscalar(ids[0])
    if batched:
      return [self._decode_one(row) for row in ids]
    return self._decode_one(ids)

  def _decode_one(self, ids) -> str:
    ids = np.asarray(ids, np.int64).reshape(-1)
    ids = ids[ids >= 0]
    if np.any(ids >= self.vocab_size):
      raise ValueError(
        f"{self.label} {self.path}: decode got piece id {int(ids.max())} >= vocab_size "
        f"{self.vocab_size}"
      )
    return self._decode_ids(ids.tolist())

  def as_seqio_vocabulary(self) -> SingleTextVocab:
    """The one-string-at-a-time form the SFT tasks encode with (`encode(str)`, `vocab_size`).

    The subset of `seqio.Vocabulary` the tasks call, without seqio: importing seqio loads
    TensorFlow, which evaluation, RL and serving do not need (gr_jax/tf_guard.py).
    """
    return SingleTextVocab(self)


class SingleTextVocab:
  """`encode(str) -> list[int]`, `decode(ids) -> str`, `vocab_size` over a PieceVocabulary."""

  def __init__(self, vocab: PieceVocabulary):
    self._vocab = vocab

  @property
  def vocab_size(self) -> int:
    return self._vocab.vocab_size

  def encode(self, text: str) -> list[int]:
    return self._vocab.encode([text])[0].tolist()

  def decode(self, ids) -> str:
    return self._vocab._decode_one(ids)


class TextVocab(PieceVocabulary):
  """A trained SentencePiece model: text <-> piece ids."""

  def __init__(self, path: pathlib.Path, model_proto: bytes):
    self.path = path
    self._processor = spm.SentencePieceProcessor(model_proto=model_proto)

  @classmethod
  def load(cls, path: str | os.PathLike) -> TextVocab:
    """Loads a model written by `train_text_vocab`.

    Raises:
      FileNotFoundError: no file at `path`.
      ValueError: the file is not a SentencePiece model with the expected special pieces.
    """
    path = pathlib.Path(path)
    if not path.is_file():
      raise FileNotFoundError(f"text vocab: no model file at {path}")
    try:
      vocab = cls(path, path.read_bytes())
    except RuntimeError as e:
      raise ValueError(f"text vocab: {path} is not a SentencePiece model: {e}") from e
    processor = vocab._processor
    specials = (processor.pad_id(), processor.eos_id(), processor.unk_id())
    if specials != (PAD_PIECE_ID, EOS_PIECE_ID, UNK_PIECE_ID):
      raise ValueError(
        f"text vocab: {path}: (pad, eos, unk) piece ids are {specials}, expected "
        f"{(PAD_PIECE_ID, EOS_PIECE_ID, UNK_PIECE_ID)} (train it with train_text_vocab)"
      )
    return vocab

  @property
  def vocab_size(self) -> int:
    return self._processor.get_piece_size()

  def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
    """Texts -> one [num_pieces] int32 array of piece ids per text (no EOS)."""
    texts = check_texts(texts, f"text vocab {self.path}: encode")
    return [np.asarray(ids, np.int32) for ids in self._processor.encode(texts, out_type=int)]

  def _decode_ids(self, ids: list[int]) -> str:
    return self._processor.decode(ids)
