"""The Hugging Face tokenizer as the text vocabulary (data/hf_tokenizer_vocab.py)."""

import pathlib

import numpy as np
import pytest

from gr_jax.data import seqio_tasks
from gr_jax.data.text import hf_vocab as hf_tokenizer_vocab
from gr_jax.models.token_layout import NUM_SPECIAL, TokenLayout

FOLDER = pathlib.Path(__file__).parent / "testdata" / "tiny_qwen2_tied"
TEXTS = [
  "organic green tea for runners",
  "Laufschuhe für Damen 🏃 size 44!",
  "  two  spaces\nand a new line\t",
  "",
  "日本語のテキスト",
]


@pytest.fixture(scope="module")
def vocab():
  return hf_tokenizer_vocab.HfTokenizerVocab.load(FOLDER)


def test_round_trips_text(vocab):
  pieces = vocab.encode(TEXTS)
  assert [p.dtype for p in pieces] == [np.int32] * len(TEXTS)
  assert len(pieces[0]) < len(TEXTS[0])  # merges learned from the corpus are used
  assert len(pieces[3]) == 0
  # Byte-level BPE is lossless, also for characters it never saw.
  assert vocab.decode([p.tolist() for p in pieces]) == TEXTS
  assert vocab.decode(pieces[1]) == TEXTS[1]


def test_vocab_size_covers_added_special_tokens(vocab):
  end = vocab._tokenizer.token_to_id("<|im_end|>")
  assert vocab.vocab_size == end + 1 == 293
  assert vocab.encode(["<|im_end|>"])[0].tolist() == [end]
  with pytest.raises(ValueError, match="293"):
    vocab.decode([293])


def test_encode_padded_and_negative_ids(vocab):
  padded = vocab.encode_padded(TEXTS[:2], max_len=4)
  assert padded.shape == (2, 4) and padded.dtype == np.int32
  np.testing.assert_array_equal(padded[0], vocab.encode(TEXTS[:1])[0][:4])
  short = vocab.encode_padded(["tea"], max_len=8)
  assert (short[0, len(vocab.encode(["tea"])[0]) :] == -1).all()
  assert vocab.decode(short[0]) == "tea"
  with pytest.raises(TypeError, match="single str"):
    vocab.encode("tea")


def test_sft_tasks_put_pieces_in_the_text_range(vocab):
  layout = TokenLayout(text_vocab_size=vocab.vocab_size, sid_level_sizes=(8, 4))
  single = vocab.as_seqio_vocabulary()
  assert single.vocab_size == vocab.vocab_size
  assert single.encode(TEXTS[0]) == vocab.encode(TEXTS[:1])[0].tolist()
  encode = seqio_tasks.TextEncoder(vocab, layout)
  tokens = encode(TEXTS[1])
  np.testing.assert_array_equal(tokens, vocab.encode(TEXTS[1:2])[0] + NUM_SPECIAL)
  assert tokens.min() >= layout.text_offset and tokens.max() < layout.gender_offset


def test_load_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="tokenizer.json"):
    hf_tokenizer_vocab.HfTokenizerVocab.load(tmp_path)
  (tmp_path / "tokenizer.json").write_text("{not json")
  with pytest.raises(ValueError, match="not a tokenizers"):
    hf_tokenizer_vocab.HfTokenizerVocab.load(tmp_path)


def test_install_is_idempotent_and_refuses_another_tokenizer(tmp_path):
  dest = tmp_path / "vocab" / "tokenizer.json"
  hf_tokenizer_vocab.install_tokenizer(FOLDER, dest)
  hf_tokenizer_vocab.install_tokenizer(FOLDER / "tokenizer.json", dest)
  assert hf_tokenizer_vocab.HfTokenizerVocab.load(dest).vocab_size == 293
  other = tmp_path / "other.json"
  other.write_text((FOLDER / "tokenizer.json").read_text().replace("<|im_end|>", "<|end|>"))
  with pytest.raises(ValueError, match="another tokenizer"):
    hf_tokenizer_vocab.install_tokenizer(other, dest)
