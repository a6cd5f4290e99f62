"""Decoder-only transformer generator in the Qwen2 manner, with a KV cache.

Token embedding, rotary position embedding (RoPE), pre-norm blocks of RMSNorm +
grouped-query attention (GQA) + RMSNorm + SwiGLU MLP, a final RMSNorm and logits
over the whole vocabulary (optionally tied to the embedding).

Sequences are LEFT-padded with PAD_ID: the rope position of a token is the
number of real tokens before it, and a query attends to earlier keys that are
not padding. Under these rules a prompt decoded with `prefill` + `extend` gives
the same logits as `Decoder.__call__` on the whole sequence.

Shapes (the package legend, gr_jax/__init__.py): B batch, T / S query / key length,
D embed_dim, H / Hk query / kv heads, Hg = H / Hk query heads per kv head, Dh head_dim,
M mlp_dim, V = DecoderConfig.padded_vocab_size (vocab_size unless vocab_multiple > 1).

Parameters are float32 and carry logical axis names (`nn.with_logical_partitioning`);
activations are constrained with `nn.with_logical_constraint`. Both are no-ops
without a mesh and shard under `jax.set_mesh(mesh)` + `nn.logical_axis_rules(rules)`.
Attention is written here (not flax's) so that its 4-axis activations shard
under `jax.set_mesh` (google/flax#3676).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gr_jax.models.token_layout import PAD_ID

Array = jax.Array
Params = Any
Cache = dict[str, Any]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Finite, so that a query with every key masked (a pad position with no real
# token before it) gets uniform weights instead of NaN.
_MASK_VALUE = -1e9

EMBED_AXES = ("batch", "length", "embed")
HEADS_AXES = ("batch", "length", "heads", "head_dim")
KV_AXES = ("batch", "length", "kv", "head_dim")
MLP_AXES = ("batch", "length", "mlp")
VOCAB_AXES = ("batch", "length", "vocab")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Hyper-parameters of the decoder (hashable: can be a static jit argument).

  Defaults are the `tiny` preset. Not a gin configurable: jobs build it from a preset
  name and overrides (train_sft.model, train_sft.model_overrides), which pass the
  preset's fields explicitly.

  Attributes:
    vocab_size: size of the flat token vocabulary (TokenLayout.vocab_size).
    num_layers: number of transformer blocks.
    embed_dim: model width.
    num_heads: query heads.
    num_kv_heads: key/value heads; must divide num_heads (GQA; == num_heads is MHA).
    head_dim: width of one head (even, for RoPE).
    mlp_dim: hidden width of the SwiGLU MLP.
    max_len: longest sequence (prompt + generated) the model accepts.
    rope_theta: RoPE base frequency (10,000 classic; 1,000,000 in Qwen2.5).
    dtype: compute dtype, 'float32' or 'bfloat16'; parameters stay float32.
    tie_embeddings: output projection is the transposed token embedding.
    qkv_bias: add a bias to the query/key/value projections (as Qwen2 does).
    norm_eps: RMSNorm epsilon.
    init_std: standard deviation of the normal initialiser of every matrix.
    remat: rematerialise each block in the backward pass (saves activation memory).
    dropout: rate on the embeddings and on each attention / MLP output before its
      residual add; active only in an `apply` given a 'dropout' rng (training), never in
      decoding.
    vocab_multiple: round the embedding / output rows up to a multiple of this, so
      that the vocab axis divides the mesh axis it is sharded over (jit rejects
      uneven shardings). Logits then have padded_vocab_size columns; the padding
      columns are -1e9, so they are never predicted and do not change softmaxes.
  """

  vocab_size: int
  num_layers: int = 2
  embed_dim: int = 64
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 16
  mlp_dim: int = 128
  max_len: int = 128
  rope_theta: float = 10_000.0
  dtype: str = "float32"
  tie_embeddings: bool = True
  qkv_bias: bool = True
  norm_eps: float = 1e-6
  init_std: float = 0.02
  remat: bool = False
  vocab_multiple: int = 1
  dropout: float = 0.0

  def __post_init__(self):
    positive = ("vocab_size", "num_layers", "embed_dim", "num_heads", "num_kv_heads")
    positive += ("head_dim", "mlp_dim", "max_len", "vocab_multiple")
    for field in positive:
      if int(getattr(self, field)) <= 0:
        raise ValueError(f"DecoderConfig.{field} must be > 0, got {getattr(self, field)}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
        f"DecoderConfig.num_kv_heads ({self.num_kv_heads}) must divide num_heads ({self.num_heads})"
      )
    if self.head_dim % 2:
      raise ValueError(f"DecoderConfig.head_dim must be even for RoPE, got {self.head_dim}")
    if self.dtype not in _DTYPES:
      raise ValueError(f"DecoderConfig.dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
    if self.rope_theta <= 0:
      raise ValueError(f"DecoderConfig.rope_theta must be > 0, got {self.rope_theta}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"DecoderConfig.dropout must be in [0, 1), got {self.dropout}")

  @property
  def compute_dtype(self) -> jnp.dtype:
    return _DTYPES[self.dtype]

  @property
  def padded_vocab_size(self) -> int:
    """Rows of the embedding and columns of the logits."""
    return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple


# Width / depth of each preset (gin_configs/model/<name>.gin picks one for train_sft).
# tiny: unit tests; small: the quickstart on a 2-core CPU; base: ~100M parameters with a
# 32k vocabulary (~75M without the embedding); qwen05b: the Qwen2.5-0.5B shape (494,032,768
# parameters with its 151,936-token vocabulary).
# fmt: off
_PRESET_FIELDS = (
  "num_layers", "embed_dim", "num_heads", "num_kv_heads", "head_dim", "mlp_dim", "max_len",
)
_PRESET_ROWS = {
  "tiny":    (2,  64,  4,  2, 16, 128,  128),
  "small":   (4,  256, 4,  2, 64, 768,  256),
  "base":    (12, 768, 12, 4, 64, 2048, 512),
  "qwen05b": (24, 896, 14, 2, 64, 4864, 2048),
}
# fmt: on
PRESETS: dict[str, dict[str, Any]] = {
  name: dict(zip(_PRESET_FIELDS, row)) for name, row in _PRESET_ROWS.items()
}
PRESETS["qwen05b"]["rope_theta"] = 1_000_000.0


def decoder_preset(name: str, vocab_size: int, **overrides: Any) -> DecoderConfig:
  """Returns the named preset configuration.

  Args:
    name: one of PRESETS ('tiny', 'small', 'base', 'qwen05b').
    vocab_size: vocabulary size (from the token layout).
    **overrides: DecoderConfig fields to change (e.g. dtype='bfloat16').

  Returns:
    The DecoderConfig.

  Raises:
    ValueError: unknown preset name or invalid field values.
  """
  if name not in PRESETS:
    raise ValueError(f"decoder_preset: unknown preset {name!r}; known: {sorted(PRESETS)}")
  return DecoderConfig(vocab_size=vocab_size, **{**PRESETS[name], **overrides})


def count_params(config: DecoderConfig) -> int:
  """Number of parameters (equal to the size of the initialised tree)."""
  c = config
  attention = (
    2 * c.embed_dim * c.num_heads * c.head_dim + 2 * c.embed_dim * c.num_kv_heads * c.head_dim
  )
  if c.qkv_bias:
    attention += (c.num_heads + 2 * c.num_kv_heads) * c.head_dim
  block = attention + 3 * c.embed_dim * c.mlp_dim + 2 * c.embed_dim
  vocab = c.padded_vocab_size
  head = 0 if c.tie_embeddings else c.embed_dim * vocab
  return vocab * c.embed_dim + c.num_layers * block + c.embed_dim + head


def flops_per_token(config: DecoderConfig, seq_len: int, training: bool = True) -> float:
  """Matmul FLOPs per token for MFU reporting (PaLM appendix B accounting).

  6 N (forward + backward of every weight matmul) plus 12 L H D T for the two
  attention matmuls over a sequence of length T (causal masking not discounted).
  N counts the output projection but not the embedding lookup.

  Args:
    config: the model.
    seq_len: sequence length T.
    training: forward + backward (x3 forward cost) when True, forward only otherwise.

  Returns:
    FLOPs per token.
  """
  c = config
  embedding = c.padded_vocab_size * c.embed_dim
  matmul_params = count_params(c) - (0 if c.tie_embeddings else embedding)
  attention = 4 * c.num_layers * c.num_heads * c.head_dim * seq_len
  forward = 2 * matmul_params + attention
  return float(3 * forward if training else forward)


# ---------------------------------------------------------------------------
# Masks and positions for left-padded sequences
# ---------------------------------------------------------------------------


def token_positions(tokens: Array) -> Array:
  """[B, T] tokens -> [B, T] int32 rope positions: real tokens before each one."""
  real = (tokens != PAD_ID).astype(jnp.int32)
  return jnp.maximum(jnp.cumsum(real, axis=-1) - 1, 0)


def causal_padding_mask(tokens: Array) -> Array:
  """[B, T] tokens -> [B, T, T] bool: key is at or before the query and not padding."""
  length = tokens.shape[-1]
  causal = jnp.tril(jnp.ones((length, length), bool))  # [T(query), T(key)]
  return causal[None] & (tokens != PAD_ID)[:, None, :]


def rope_angles(positions: Array, head_dim: int, theta: float) -> tuple[Array, Array]:
  """[B, T] positions -> cos, sin, each [B, T, head_dim // 2] float32."""
  inv_freq = 1.0 / theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
  """Rotates [B, T, H, Dh] by the angles (half-split pairing, as Qwen2 / HF)."""
  x32 = x.astype(jnp.float32)
  first, second = jnp.split(x32, 2, axis=-1)  # [B, T, heads, Dh/2] each
  cos, sin = cos[:, :, None, :], sin[:, :, None, :]
  rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
  return rotated.astype(x.dtype)


def grouped_query_attention(query: Array, key: Array, value: Array, mask: Array) -> Array:
  """Softmax attention where each key/value head serves num_heads // num_kv_heads queries.

  Args:
    query: [B, T, H, Dh].
    key: [B, S, Hk, Dh], Hk divides H.
    value: [B, S, Hk, Dh].
    mask: [B, T, S] bool, True where the query may attend the key.

  Returns:
    [B, T, H, Dh] in the query's dtype.
  """
  batch, length, num_heads, head_dim = query.shape
  num_kv_heads = key.shape[2]
  group = num_heads // num_kv_heads
  # Query head h uses kv head h // group (same order as a repeat of kv heads).
  query = query.reshape(batch, length, num_kv_heads, group, head_dim)
  scores = jnp.einsum("btkgd,bskd->bkgts", query, key, preferred_element_type=jnp.float32)
  scores = scores / math.sqrt(head_dim)  # [B, Hk, Hg, T, S]
  scores = jnp.where(mask[:, None, None], scores, _MASK_VALUE)
  weights = jax.nn.softmax(scores, axis=-1).astype(value.dtype)
  out = jnp.einsum("bkgts,bskd->btkgd", weights, value)  # [B, T, Hk, Hg, Dh]
  return out.reshape(batch, length, num_heads, head_dim)


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------


def _weight(module: nn.Module, name: str, shape: tuple[int, ...], axes: tuple[str, ...]) -> Array:
  """A float32 parameter with logical axis names, cast to the compute dtype."""
  config = module.config
  init = nn.initializers.normal(config.init_std)
  value = module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)
  return value.astype(config.compute_dtype)


def _bias(module: nn.Module, name: str, shape: tuple[int, ...], axes: tuple[str, ...]) -> Array:
  init = nn.with_logical_partitioning(nn.initializers.zeros, axes)
  return module.param(name, init, shape, jnp.float32).astype(module.config.compute_dtype)


class RMSNorm(nn.Module):
  """Root-mean-square norm with a learned scale, computed in float32."""

  config: DecoderConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    init = nn.with_logical_partitioning(nn.initializers.ones, ("embed",))
    scale = self.param("scale", init, (self.config.embed_dim,), jnp.float32)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.config.norm_eps)
    return (normed * scale).astype(self.config.compute_dtype)


class Attention(nn.Module):
  """Grouped-query self-attention with RoPE, optionally reading/writing a KV cache."""

  config: DecoderConfig

  @nn.compact
  def __call__(
    self,
    x: Array,
    positions: Array,
    mask: Array,
    cache: dict[str, Array] | None = None,
    write_slot: Array | None = None,
  ) -> tuple[Array, dict[str, Array]]:
    """Attends x to itself (no cache) or to the cache after writing x into it.

    Args:
      x: [B, T, D] normalised input.
      positions: [B, T] rope positions.
      mask: [B, T, S] bool; S = T without cache, S = cache length with one.
      cache: None, or {'k', 'v'} [B, S, Hk, Dh] of earlier tokens (T must be 1).
      write_slot: [B, S] bool one-hot of the cache slot that receives x.

    Returns:
      out [B, T, D] and {'k', 'v'}: this call's keys/values [B, T, Hk, Dh] without
      a cache, the updated cache [B, S, Hk, Dh] with one.
    """
    c = self.config
    embed, heads, kv_heads, head_dim = c.embed_dim, c.num_heads, c.num_kv_heads, c.head_dim
    w_query = _weight(self, "query", (embed, heads, head_dim), ("embed", "heads", "head_dim"))
    w_key = _weight(self, "key", (embed, kv_heads, head_dim), ("embed", "kv", "head_dim"))
    w_value = _weight(self, "value", (embed, kv_heads, head_dim), ("embed", "kv", "head_dim"))
    w_out = _weight(self, "out", (heads, head_dim, embed), ("heads", "head_dim", "embed"))

    query = jnp.einsum("bte,ehd->bthd", x, w_query)  # [B, T, H, Dh]
    key = jnp.einsum("bte,ekd->btkd", x, w_key)  # [B, T, Hk, Dh]
    value = jnp.einsum("bte,ekd->btkd", x, w_value)  # [B, T, Hk, Dh]
    if c.qkv_bias:
      query += _bias(self, "query_bias", (heads, head_dim), ("heads", "head_dim"))
      key += _bias(self, "key_bias", (kv_heads, head_dim), ("kv", "head_dim"))
      value += _bias(self, "value_bias", (kv_heads, head_dim), ("kv", "head_dim"))
    cos, sin = rope_angles(positions, head_dim, c.rope_theta)
    query = nn.with_logical_constraint(apply_rope(query, cos, sin), HEADS_AXES)
    key = nn.with_logical_constraint(apply_rope(key, cos, sin), KV_AXES)
    value = nn.with_logical_constraint(value, KV_AXES)

    if cache is not None:
      slot = write_slot[:, :, None, None]  # [B, S, 1, 1]
      key = jnp.where(slot, key.astype(cache["k"].dtype), cache["k"])  # [B, S, Hk, Dh]
      value = jnp.where(slot, value.astype(cache["v"].dtype), cache["v"])
      key = nn.with_logical_constraint(key, KV_AXES)
      value = nn.with_logical_constraint(value, KV_AXES)

    out = grouped_query_attention(query, key.astype(query.dtype), value.astype(query.dtype), mask)
    out = nn.with_logical_constraint(out, HEADS_AXES)
    out = jnp.einsum("bthd,hde->bte", out, w_out)  # [B, T, D]
    return out, {"k": key, "v": value}


class SwiGLU(nn.Module):
  """down(silu(x @ gate) * (x @ up))."""

  config: DecoderConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = self.config
    w_gate = _weight(self, "gate", (c.embed_dim, c.mlp_dim), ("embed", "mlp"))
    w_up = _weight(self, "up", (c.embed_dim, c.mlp_dim), ("embed", "mlp"))
    w_down = _weight(self, "down", (c.mlp_dim, c.embed_dim), ("mlp", "embed"))
    hidden = jax.nn.silu(x @ w_gate) * (x @ w_up)  # [B, T, M]
    hidden = nn.with_logical_constraint(hidden, MLP_AXES)
    return hidden @ w_down


def _dropout(module: nn.Module, x: Array) -> Array:
  """Dropout at config.dropout when the apply has a 'dropout' rng (training), else x."""
  rate = module.config.dropout
  if rate == 0.0 or not module.has_rng("dropout"):
    return x
  keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class DecoderBlock(nn.Module):
  """Pre-norm block: x + attention(norm(x)), then + mlp(norm(x))."""

  config: DecoderConfig

  @nn.compact
  def __call__(self, x: Array, *attention_inputs) -> tuple[Array, dict[str, Array]]:
    """x [B, T, Dh] and Attention.__call__'s other inputs -> (x [B, T, Dh], keys/values)."""
    normed = RMSNorm(self.config, name="attention_norm")(x)
    attended, key_values = Attention(self.config, name="attention")(normed, *attention_inputs)
    x = nn.with_logical_constraint(x + _dropout(self, attended), EMBED_AXES)
    mlp_out = SwiGLU(self.config, name="mlp")(RMSNorm(self.config, name="mlp_norm")(x))
    return nn.with_logical_constraint(x + _dropout(self, mlp_out), EMBED_AXES), key_values


class Decoder(nn.Module):
  """The generator. `__call__` for training, `prefill` / `extend` for decoding."""

  config: DecoderConfig

  def setup(self):
    c = self.config
    init = nn.initializers.normal(c.init_std)
    self.embedding = self.param(
      "embedding",
      nn.with_logical_partitioning(init, ("vocab", "embed")),
      (c.padded_vocab_size, c.embed_dim),
      jnp.float32,
    )
    if not c.tie_embeddings:
      self.lm_head = self.param(
        "lm_head",
        nn.with_logical_partitioning(init, ("embed", "vocab")),
        (c.embed_dim, c.padded_vocab_size),
        jnp.float32,
      )
    block = nn.remat(DecoderBlock) if c.remat else DecoderBlock
    self.blocks = [block(c) for _ in range(c.num_layers)]
    self.final_norm = RMSNorm(c)

  def _embed(self, tokens: Array) -> Array:
    x = jnp.take(self.embedding, tokens, axis=0).astype(self.config.compute_dtype)
    return nn.with_logical_constraint(x, EMBED_AXES)  # [B, T, D]

  def _logits(self, x: Array) -> Array:
    """[B, T, D] -> [B, T, padded V] float32."""
    x = self.final_norm(x)
    dtype = self.config.compute_dtype
    if self.config.tie_embeddings:
      logits = jnp.einsum(
        "bte,ve->btv", x, self.embedding.astype(dtype), preferred_element_type=jnp.float32
      )
    else:
      logits = jnp.einsum(
        "bte,ev->btv", x, self.lm_head.astype(dtype), preferred_element_type=jnp.float32
      )
    if self.config.padded_vocab_size > self.config.vocab_size:
      real_column = jnp.arange(self.config.padded_vocab_size) < self.config.vocab_size
      logits = jnp.where(real_column, logits, _MASK_VALUE)
    return nn.with_logical_constraint(logits, VOCAB_AXES)

  def _check_length(self, length: int, what: str):
    if length > self.config.max_len:
      raise ValueError(
        f"{what} length {length} exceeds DecoderConfig.max_len={self.config.max_len}"
      )

  def _run_prompt(self, tokens: Array) -> tuple[Array, list[dict[str, Array]]]:
    """Full causal pass over left-padded tokens -> (hidden [B, T, D], per-layer k/v)."""
    self._check_length(tokens.shape[1], "sequence")
    positions = token_positions(tokens)
    mask = causal_padding_mask(tokens)
    x = _dropout(self, self._embed(tokens))
    key_values = []
    for block in self.blocks:
      x, layer_kv = block(x, positions, mask)
      key_values.append(layer_kv)
    return x, key_values

  def __call__(self, tokens: Array) -> Array:
    """[B, T] left-padded tokens -> [B, T, V] float32 next-token logits."""
    x, _ = self._run_prompt(tokens)
    return self._logits(x)

  def target_logits(self, tokens: Array, num_targets: int) -> Array:
    """[B, T] left-padded tokens -> [B, num_targets, V] logits of the last positions only.

    The vocabulary projection is the largest matmul per position; teacher-forced
    losses that score only the SID tokens skip it on the prompt positions.
    """
    hidden, _ = self._run_prompt(tokens)  # [B, T, Dh]
    return self._logits(hidden[:, -num_targets:])

  def prefill(self, tokens: Array, max_len: int) -> tuple[Array, Cache]:
    """Runs the left-padded prompt [B, Tp]; returns last logits [B, V] and the cache."""
    batch, prompt_len = tokens.shape
    self._check_length(max_len, "cache")
    if prompt_len > max_len:
      raise ValueError(f"prompt length {prompt_len} exceeds the cache max_len={max_len}")
    x, key_values = self._run_prompt(tokens)
    logits = self._logits(x[:, -1:])[:, 0]  # [B, V]; left padding puts the last token at -1
    cache = init_cache(self.config, batch, max_len)
    layers = tuple(
      {
        name: jax.lax.dynamic_update_slice_in_dim(
          empty[name], kv[name].astype(empty[name].dtype), 0, 1
        )
        for name in ("k", "v")
      }
      for empty, kv in zip(cache["layers"], key_values)
    )
    real = tokens != PAD_ID  # [B, Tp]
    cache = {
      "layers": layers,
      "key_valid": jax.lax.dynamic_update_slice_in_dim(cache["key_valid"], real, 0, 1),
      "next_pos": jnp.sum(real, axis=1, dtype=jnp.int32),
      "index": jnp.full((batch,), prompt_len, jnp.int32),
    }
    return logits, _constrain_cache(cache, self.config)

  def extend(self, tokens: Array, cache: Cache) -> tuple[Array, Cache]:
    """Appends one token per row [B]; returns its logits [B, V] and the updated cache."""
    max_len = cache["key_valid"].shape[1]
    real = tokens != PAD_ID  # [B]
    write_slot = jnp.arange(max_len)[None, :] == cache["index"][:, None]  # [B, S]
    key_valid = jnp.where(write_slot, real[:, None], cache["key_valid"])  # [B, S]
    next_pos = cache["next_pos"] + real.astype(jnp.int32)
    positions = jnp.maximum(next_pos - 1, 0)[:, None]  # [B, 1]
    mask = key_valid[:, None, :]  # [B, 1, S]; slots after index are not valid yet
    x = self._embed(tokens[:, None])  # [B, 1, D]
    layers = []
    for block, layer_cache in zip(self.blocks, cache["layers"]):
      x, layer_cache = block(x, positions, mask, layer_cache, write_slot)
      layers.append(layer_cache)
    logits = self._logits(x)[:, 0]  # [B, V]
    cache = {
      "layers": tuple(layers),
      "key_valid": key_valid,
      "next_pos": next_pos,
      "index": cache["index"] + 1,
    }
    return logits, _constrain_cache(cache, self.config)


# ---------------------------------------------------------------------------
# Functional API (pure, jit-able; `config` and `max_len` are static)
# ---------------------------------------------------------------------------


def init_params(config: DecoderConfig, rng: Array) -> Params:
  """Initial float32 parameters (plain arrays; see param_logical_axes for names)."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  return nn.unbox(Decoder(config).init(rng, tokens)["params"])


def param_logical_axes(config: DecoderConfig) -> Params:
  """PartitionSpec of logical axis names for every parameter (no allocation)."""
  tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  rng = jax.ShapeDtypeStruct((2,), jnp.uint32)
  boxed = jax.eval_shape(lambda r, t: Decoder(config).init(r, t)["params"], rng, tokens)
  return nn.get_partition_spec(boxed)


def param_shardings(config: DecoderConfig, mesh: jax.sharding.Mesh, rules) -> Params:
  """NamedSharding of every parameter under `rules` ((logical, mesh axes) pairs)."""
  return nn.logical_to_mesh_sharding(param_logical_axes(config), mesh, rules)


def forward(params: Params, config: DecoderConfig, tokens: Array) -> Array:
  """[B, T] left-padded tokens -> [B, T, V] float32 logits."""
  return Decoder(config).apply({"params": params}, tokens)


def init_cache(config: DecoderConfig, batch: int, max_len: int) -> Cache:
  """An empty cache for `batch` rows of up to `max_len` tokens.

  Every leaf has the batch on axis 0, so beams are reordered or tiled with one
  gather on axis 0 of each leaf.

  Args:
    config: the model.
    batch: number of rows.
    max_len: cache slots (prompt length + decode steps), <= config.max_len.

  Returns:
    {'layers': tuple over layers of {'k', 'v'}: [B, max_len, num_kv_heads, head_dim]
     in the compute dtype, 'key_valid': [B, max_len] bool (slot holds a real token),
     'next_pos': [B] int32 (real tokens so far = rope position of the next one),
     'index': [B] int32 (next slot to write)}.
  """
  shape = (batch, max_len, config.num_kv_heads, config.head_dim)
  layer = lambda: {
    "k": jnp.zeros(shape, config.compute_dtype),
    "v": jnp.zeros(shape, config.compute_dtype),
  }
  return {
    "layers": tuple(layer() for _ in range(config.num_layers)),
    "key_valid": jnp.zeros((batch, max_len), bool),
    "next_pos": jnp.zeros((batch,), jnp.int32),
    "index": jnp.zeros((batch,), jnp.int32),
  }


def cache_logical_axes(config: DecoderConfig) -> Cache:
  """Logical axis names of every cache leaf (same tree as init_cache)."""
  return {
    "layers": tuple({"k": KV_AXES, "v": KV_AXES} for _ in range(config.num_layers)),
    "key_valid": ("batch", "length"),
    "next_pos": ("batch",),
    "index": ("batch",),
  }


def _constrain_cache(cache: Cache, config: DecoderConfig) -> Cache:
  return nn.with_logical_constraint(cache, cache_logical_axes(config))


def prefill(
  params: Params, config: DecoderConfig, prompt_tokens: Array, max_len: int
) -> tuple[Array, Cache]:
  """Runs a left-padded prompt and fills a fresh cache.

  Args:
    params: decoder parameters.
    config: the model.
    prompt_tokens: [B, Tp] int32, left-padded with PAD_ID.
    max_len: static cache length (>= Tp; Tp + number of extend calls must fit).

  Returns:
    logits [B, V] float32 for the token after the prompt, and the cache.

  Raises:
    ValueError: Tp > max_len or max_len > config.max_len.
  """
  return Decoder(config).apply({"params": params}, prompt_tokens, max_len, method=Decoder.prefill)


def extend(
  params: Params, config: DecoderConfig, tokens: Array, cache: Cache
) -> tuple[Array, Cache]:
  """One decode step: appends tokens [B] to the cache.

  The cache must have a free slot (index < max_len); a full cache is not
  detected inside jit and would drop the token.

  Args:
    params: decoder parameters.
    config: the model.
    tokens: [B] int32, the token chosen for each row.
    cache: from prefill / extend / init_cache.

  Returns:
    logits [B, V] float32 for the next token, and the updated cache.
  """
  return Decoder(config).apply({"params": params}, tokens, cache, method=Decoder.extend)
