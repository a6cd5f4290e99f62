"""The Retriever refuses inputs it cannot serve, with a named error, before any device work."""

import jax
import numpy as np
import pytest

from gr_jax import errors
from gr_jax.models import decoder, hf_qwen
from gr_jax.models.token_layout import TokenLayout
from gr_jax.serving import retriever as retriever_lib
from gr_jax.sid import tables

LEVELS = (4, 4, 2)


@pytest.fixture(scope="module")
def parts():
  layout = TokenLayout(text_vocab_size=50, sid_level_sizes=LEVELS)
  config = hf_qwen.generator_model_config("tiny", layout.vocab_size, {}, None)
  params = decoder.init_params(config, jax.random.key(0))
  item_sid = np.array([[0, 1, 0], [0, 1, 1], [3, 2, 0], [1, 0, 0]], np.int32)
  return layout, config, params, tables.build_sid_tables(item_sid, LEVELS)


def _retriever(parts, scores=None):
  layout, config, params, sid_tables = parts
  scores = np.ones(4, np.float32) if scores is None else scores
  return retriever_lib.Retriever(params, config, layout, sid_tables, scores)


def test_valid_prompts_retrieve_items(parts):
  items = _retriever(parts).retrieve(np.full((2, 6), 5, np.int32), beam_size=2, max_items=3)
  assert items.shape == (2, 3)


@pytest.mark.parametrize(
  "prompts, beam, match",
  [
    (np.zeros((0, 6), np.int32), 2, "empty batch"),
    (np.full((2, 6), 0.5), 2, "2-D integer array"),
    (np.zeros(6, np.int32), 2, "2-D integer array"),
    (np.full((2, 6), 10_000, np.int32), 2, r"prompt 0 token 0 is 10000, outside the vocabulary"),
    (np.full((2, 6), -3, np.int32), 2, "outside the vocabulary"),
    (np.zeros((2, 6), np.int32), 0, "beam_size must be an integer >= 1"),
    (np.zeros((1, 5000), np.int32), 2, "exceed the model's max_len"),
  ],
)
def test_bad_prompts_and_beams(parts, prompts, beam, match):
  with pytest.raises(errors.RetrieverInputError, match=match):
    _retriever(parts).retrieve(prompts, beam_size=beam)


def test_bad_max_items_and_item_scores(parts):
  with pytest.raises(errors.RetrieverInputError, match="max_items must be an integer >= 1"):
    _retriever(parts).retrieve(np.zeros((1, 6), np.int32), beam_size=1, max_items=0)
  with pytest.raises(errors.RetrieverInputError, match="efficiency_score has 3 items"):
    _retriever(parts, scores=np.ones(3, np.float32))
  layout, config, params, sid_tables = parts
  other = TokenLayout(text_vocab_size=50, sid_level_sizes=(4, 4, 3))
  with pytest.raises(errors.RetrieverInputError, match="different tokenizers"):
    retriever_lib.Retriever(params, config, other, sid_tables, np.ones(4, np.float32))
