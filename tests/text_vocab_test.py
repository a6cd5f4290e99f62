"""Tests for the SentencePiece text vocabulary."""

import gin
import numpy as np
import pytest

from gr_jax import tf_guard
from gr_jax.data.text import vocab as text_vocab
from gr_jax.data.text.vocab import TextVocab, train_text_vocab

_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "be", "da", "fe", "gu")


def _corpus(num_texts: int = 2000, seed: int = 0) -> list[str]:
  """Titles of 2-8 words drawn from 300 made-up words (Zipf-like frequencies)."""
  rng = np.random.default_rng(seed)
  words = ["".join(rng.choice(_SYLLABLES, rng.integers(2, 4))) for _ in range(300)]
  frequency = 1.0 / np.arange(1, len(words) + 1)
  frequency /= frequency.sum()
  return [" ".join(rng.choice(words, rng.integers(2, 9), p=frequency)) for _ in range(num_texts)]


@pytest.fixture(scope="module")
def corpus():
  return _corpus()


@pytest.fixture(scope="module")
def vocab(corpus, tmp_path_factory):
  path = tmp_path_factory.mktemp("vocab") / "text.model"
  return TextVocab.load(train_text_vocab(corpus, path, vocab_size=120))


def test_vocab_has_requested_size_and_t5_special_pieces(vocab):
  assert vocab.vocab_size == 120
  processor = vocab._processor
  assert (processor.pad_id(), processor.eos_id(), processor.unk_id(), processor.bos_id()) == (
    0,
    1,
    2,
    -1,
  )


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_round_trip_on_training_text(corpus, tmp_path, model_type):
  vocab = TextVocab.load(
    train_text_vocab(corpus, tmp_path / "v.model", vocab_size=150, model_type=model_type)
  )
  pieces = vocab.encode(corpus)
  assert all(ids.dtype == np.int32 and ids.ndim == 1 for ids in pieces)
  # Frequent words should merge into few pieces; a character split would be far longer.
  assert np.mean([len(ids) for ids in pieces]) < np.mean([len(t) for t in corpus]) / 3
  assert vocab.decode(pieces) == corpus
  assert all(text_vocab.UNK_PIECE_ID not in ids for ids in pieces)


def test_training_is_deterministic(corpus, tmp_path):
  first = train_text_vocab(corpus, tmp_path / "a.model", vocab_size=100)
  second = train_text_vocab(corpus, tmp_path / "b.model", vocab_size=100)
  assert first.read_bytes() == second.read_bytes()


def test_subsampling_is_seeded(corpus, tmp_path):
  first = train_text_vocab(corpus, tmp_path / "a.model", vocab_size=80, max_sentences=300, seed=3)
  second = train_text_vocab(corpus, tmp_path / "b.model", vocab_size=80, max_sentences=300, seed=3)
  assert first.read_bytes() == second.read_bytes()


def test_write_is_atomic_and_overwrites(corpus, tmp_path):
  path = tmp_path / "sub" / "text.model"
  path.parent.mkdir()
  path.write_bytes(b"stale")
  train_text_vocab(corpus, path, vocab_size=90)
  assert TextVocab.load(path).vocab_size == 90
  assert sorted(p.name for p in path.parent.iterdir()) == ["text.model"]


def test_small_corpus_lowers_vocab_size_or_raises(tmp_path):
  tiny = ["hello world", "foo bar baz"] * 5
  vocab = TextVocab.load(train_text_vocab(tiny, tmp_path / "small.model", vocab_size=500))
  assert 3 < vocab.vocab_size < 500
  assert vocab.decode(vocab.encode(tiny)) == tiny
  with pytest.raises(ValueError, match=r"500 pieces on 10 sentences.*strict\.model"):
    train_text_vocab(tiny, tmp_path / "strict.model", vocab_size=500, allow_smaller_vocab=False)


@pytest.mark.parametrize(
  "texts, error, match",
  [
    ([], ValueError, "no non-empty text"),
    (["", "   "], ValueError, "no non-empty text"),
    (["ok", 3, "fine"], TypeError, r"texts\[1\] is int"),
    (["ok", None], TypeError, r"texts\[1\] is NoneType"),
    ("a single string", TypeError, "single str"),
  ],
)
def test_bad_corpus_raises_clear_error(tmp_path, texts, error, match):
  with pytest.raises(error, match=match):
    train_text_vocab(texts, tmp_path / "bad.model", vocab_size=50)
  assert not (tmp_path / "bad.model").exists()


def test_bad_arguments_raise(corpus, tmp_path):
  with pytest.raises(ValueError, match="model_type"):
    train_text_vocab(corpus, tmp_path / "x.model", model_type="word_piece")
  with pytest.raises(ValueError, match="vocab_size"):
    train_text_vocab(corpus, tmp_path / "x.model", vocab_size=2)


def test_encode_padded_truncates_and_pads_with_minus_one(vocab, corpus):
  texts = corpus[:20]
  pieces = vocab.encode(texts)
  padded = vocab.encode_padded(texts, max_len=4)
  assert padded.shape == (20, 4) and padded.dtype == np.int32
  for row, ids in enumerate(pieces):
    kept = min(len(ids), 4)
    np.testing.assert_array_equal(padded[row, :kept], ids[:kept])
    assert np.all(padded[row, kept:] == -1)
  assert vocab.encode_padded(corpus[:1], max_len=40, pad_id=0)[0, -1] == 0
  with pytest.raises(ValueError, match="max_len"):
    vocab.encode_padded(texts, max_len=0)


def test_decode_skips_padding_and_rejects_out_of_range(vocab, corpus):
  padded = vocab.encode_padded(corpus[:5], max_len=40)
  assert vocab.decode(padded) == corpus[:5]
  assert vocab.decode(padded[0]) == corpus[0]
  assert vocab.decode([]) == ""
  with pytest.raises(ValueError, match="piece id 120 >= vocab_size 120"):
    vocab.decode([5, 120])


def test_encode_rejects_non_str(vocab):
  with pytest.raises(TypeError, match=r"texts\[0\] is bytes"):
    vocab.encode([b"kalo mine"])


def test_load_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.model"):
    TextVocab.load(tmp_path / "missing.model")
  (tmp_path / "garbage.model").write_bytes(b"not a model")
  with pytest.raises(ValueError, match="garbage.model"):
    TextVocab.load(tmp_path / "garbage.model")


def test_vocab_size_from_gin(corpus, tmp_path):
  gin.parse_config("train_text_vocab.vocab_size = 70")
  try:
    assert TextVocab.load(train_text_vocab(corpus, tmp_path / "g.model")).vocab_size == 70
  finally:
    gin.clear_config()


def test_single_text_form_matches_seqio(vocab, corpus):
  seqio = tf_guard.seqio()
  reference = seqio.SentencePieceVocabulary(str(vocab.path), extra_ids=0)
  single = vocab.as_seqio_vocabulary()
  assert single.vocab_size == reference.vocab_size == vocab.vocab_size
  for text in corpus[:20]:
    ids = single.encode(text)
    assert ids == reference.encode(text)
    np.testing.assert_array_equal(ids, vocab.encode([text])[0])
    assert single.decode(ids) == reference.decode(ids) == text
