"""Hugging Face Qwen2 checkpoints -> our decoder: logits equal transformers' (models/hf_qwen.py).

The checkpoints under tests/testdata/tiny_qwen2_{tied,untied} and their reference logits were
made once by tests/testdata/make_tiny_qwen2.py with `transformers` in a throwaway environment
(the recipe is that script's docstring); the tests need neither torch nor transformers.
"""

import json
import pathlib
import shutil
import weakref

import jax
import numpy as np
import pytest

from gr_jax.data.text import hf_vocab as hf_tokenizer_vocab
from gr_jax.models import decoder, hf_qwen
from gr_jax.models.token_layout import TokenLayout
from gr_jax.train import partitioning

TESTDATA = pathlib.Path(__file__).parent / "testdata"
TIED = TESTDATA / "tiny_qwen2_tied"
UNTIED = TESTDATA / "tiny_qwen2_untied"
TOLERANCE = 1e-5


def _reference(folder):
  ref = np.load(folder / "reference.npz")
  return ref["input_ids"], ref["attention_mask"].astype(bool), ref["logits"]


@pytest.mark.parametrize("folder", [TIED, UNTIED], ids=["tied", "untied"])
def test_logits_equal_transformers(folder):
  config, params = hf_qwen.convert_checkpoint(folder)
  hf = json.loads((folder / "config.json").read_text())
  assert config.tie_embeddings == hf["tie_word_embeddings"]
  assert ("lm_head" in params) != config.tie_embeddings
  input_ids, real, want = _reference(folder)
  got = np.asarray(decoder.forward(params, config, input_ids))  # [B, T, V]
  assert got.shape == want.shape
  # Row 1 is left-padded: only its real positions are defined the same way in both.
  assert np.max(np.abs(got - want)[real]) < TOLERANCE


def test_tree_equals_init_params():
  config, params = hf_qwen.convert_checkpoint(TIED)
  fresh = decoder.init_params(config, jax.random.key(0))
  shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)
  assert shapes(params) == shapes(fresh)
  assert config.num_layers == 2 and config.num_kv_heads == 2 and config.rope_theta == 1e6


def test_sharded_checkpoint_reads_every_file():
  files = hf_qwen.checkpoint_files(TIED)
  assert (TIED / hf_qwen.INDEX_FILE).exists() and len(set(files.values())) >= 2
  assert set(hf_qwen.checkpoint_files(UNTIED).values()) == {str(UNTIED / hf_qwen.SINGLE_FILE)}


def test_placed_with_logical_shardings():
  mesh = partitioning.make_mesh((2, 2, 2))
  rules = partitioning.logical_rules()
  config, params = hf_qwen.convert_checkpoint(TIED, mesh=mesh, rules=rules)
  want = decoder.param_shardings(config, mesh, rules)
  for got_leaf, want_sharding in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
    assert got_leaf.sharding.is_equivalent_to(want_sharding, got_leaf.ndim)
  # The MLP is split over 'model' and 'fsdp', not replicated.
  gate = params["blocks_0"]["mlp"]["gate"]
  assert gate.addressable_shards[0].data.shape == (32, 64)
  input_ids, real, want_logits = _reference(TIED)
  with jax.set_mesh(mesh):
    got = np.asarray(jax.jit(decoder.forward, static_argnums=1)(params, config, input_ids))
  assert np.max(np.abs(got - want_logits)[real]) < TOLERANCE


def test_reads_one_tensor_at_a_time(monkeypatch):
  """Each HF tensor is released before the next is read (streaming, not the whole model)."""
  read = hf_qwen._read_tensor
  alive = []
  most_alive = [0]

  def counting_read(handle, name):
    # No gc.collect(): CPython frees an array as soon as nothing refers to it.
    most_alive[0] = max(most_alive[0], sum(ref() is not None for ref in alive))
    value = read(handle, name)
    alive.append(weakref.ref(value))
    return value

  monkeypatch.setattr(hf_qwen, "_read_tensor", counting_read)
  _, params = hf_qwen.convert_checkpoint(TIED)
  assert len(alive) == len(jax.tree.leaves(params))
  assert most_alive[0] == 0
  assert all(ref() is None for ref in alive)


def _layout(folder, **kwargs):
  vocab = hf_tokenizer_vocab.HfTokenizerVocab.load(folder)
  return TokenLayout(text_vocab_size=vocab.vocab_size, sid_level_sizes=(8, 4), **kwargs)


@pytest.mark.parametrize("folder", [TIED, UNTIED], ids=["tied", "untied"])
def test_generator_layout_keeps_text_logits_and_appends_rows(folder):
  layout = _layout(folder)
  config, params = hf_qwen.init_generator_from_hf(folder, layout, vocab_multiple=16)
  assert config.vocab_size == layout.vocab_size and config.padded_vocab_size % 16 == 0
  hf_vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
  assert layout.text_vocab_size < hf_vocab  # Qwen-like: embedding rows beyond the tokenizer
  text = slice(layout.text_offset, layout.text_offset + layout.text_vocab_size)

  input_ids, real, want = _reference(folder)
  tokens = np.where(real, layout.text_tokens(input_ids), 0)  # PAD_ID where HF masks
  got = np.asarray(decoder.forward(params, config, tokens))  # [B, T, padded V]
  assert np.max(np.abs(got[..., text] - want[..., : layout.text_vocab_size])[real]) < TOLERANCE

  embedding = np.asarray(params["embedding"])  # [padded V, E]
  rows = embedding if config.tie_embeddings else np.asarray(params["lm_head"]).T
  mean = rows[text].astype(np.float64).mean(axis=0)
  new_rows = np.ones(config.padded_vocab_size, bool)
  new_rows[text] = False
  # Specials, profile and SID rows (and the padding) start at the mean of the text rows.
  assert new_rows[layout.sid_offset(0)] and new_rows[0] and new_rows[layout.gender_offset]
  assert np.all(rows[new_rows] == rows[new_rows][:1])
  np.testing.assert_allclose(rows[new_rows][0], mean, rtol=1e-6, atol=1e-9)
  # ... so every SID token gets the same logit at first.
  sid_logits = got[..., layout.sid_offset(0) : layout.vocab_size][real]
  np.testing.assert_allclose(sid_logits, sid_logits[..., :1].repeat(12, -1), rtol=1e-5)
  if not config.tie_embeddings:
    want_mean = embedding[text].astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(embedding[0], want_mean, rtol=1e-6, atol=1e-9)


def test_layout_larger_than_embedding_is_refused():
  hf_vocab = json.loads((TIED / "config.json").read_text())["vocab_size"]
  layout = TokenLayout(text_vocab_size=hf_vocab + 1, sid_level_sizes=(8,))
  with pytest.raises(hf_qwen.HfCheckpointError, match="vocab_size"):
    hf_qwen.init_generator_from_hf(TIED, layout)


def _edited_copy(tmp_path, edit):
  folder = tmp_path / "ckpt"
  shutil.copytree(TIED, folder)
  config = json.loads((folder / "config.json").read_text())
  edit(config)
  (folder / "config.json").write_text(json.dumps(config))
  return folder


@pytest.mark.parametrize(
  "field,value",
  [
    ("use_sliding_window", True),
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}),
    ("rope_parameters", {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6}),
    ("model_type", "qwen3"),
    ("hidden_act", "gelu"),
    ("layer_types", ["full_attention", "sliding_attention"]),
    ("quantization_config", {"quant_method": "gptq"}),
  ],
)
def test_unsupported_config_is_named(tmp_path, field, value):
  folder = _edited_copy(tmp_path, lambda c: c.update({field: value}))
  with pytest.raises(hf_qwen.UnsupportedQwenConfigError, match=field) as error:
    hf_qwen.convert_checkpoint(folder)
  assert error.value.field == field and error.value.value == value


def test_older_config_format_is_read():
  """transformers < 5 writes rope_theta and rope_scaling at the top level (Qwen2.5's files)."""
  config = json.loads((TIED / "config.json").read_text())
  del config["rope_parameters"], config["layer_types"]
  config.update(rope_theta=1e6, rope_scaling=None, sliding_window=32768, max_window_layers=21)
  ours = hf_qwen.decoder_config_from_hf(config)
  assert ours.rope_theta == 1e6 and ours.max_len == 256 and ours.tie_embeddings


def test_shape_overrides_are_refused():
  config = json.loads((TIED / "config.json").read_text())
  with pytest.raises(ValueError, match="num_layers"):
    hf_qwen.decoder_config_from_hf(config, num_layers=4)
  assert hf_qwen.decoder_config_from_hf(config, dtype="bfloat16").dtype == "bfloat16"


def test_missing_tensor_and_wrong_shape_are_named(tmp_path):
  folder = _edited_copy(tmp_path, lambda c: c.update(num_hidden_layers=3))
  with pytest.raises(hf_qwen.HfCheckpointError, match=r"model\.layers\.2\."):
    hf_qwen.convert_checkpoint(folder)
  folder = _edited_copy(tmp_path / "b", lambda c: c.update(intermediate_size=96))
  with pytest.raises(hf_qwen.HfCheckpointError, match="mlp.+shape"):
    hf_qwen.convert_checkpoint(folder)
  with pytest.raises(hf_qwen.HfCheckpointError, match="config.json"):
    hf_qwen.convert_checkpoint(tmp_path / "nothing_here")
  folder = _edited_copy(tmp_path / "c", lambda c: c.pop("vocab_size"))
  with pytest.raises(hf_qwen.HfCheckpointError, match="missing field vocab_size"):
    hf_qwen.convert_checkpoint(folder)


def test_init_checkpoint_round_trip(tmp_path):
  from gr_jax.train import checkpoints

  config, params = hf_qwen.init_generator_from_hf(TIED, _layout(TIED))
  hf_qwen.save_init_checkpoint(params, str(tmp_path / "init"))
  restored, step = checkpoints.restore_params(str(tmp_path / "init"))
  assert step == 0
  jax.tree.map(np.testing.assert_array_equal, restored["params"], jax.device_get(params))
