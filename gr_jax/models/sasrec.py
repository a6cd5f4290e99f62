"""SASRec (Kang & McAuley, ICDM 2018): self-attentive sequential recommendation.

An item-id Transformer: item embedding (row 0 = padding, item i sits in row i + 1)
plus a learned positional embedding, L causal self-attention blocks (pre-LN, as in
the reference PyTorch port), and a final LayerNorm. The score of item i after
position t is <hidden_t, E[i + 1]>: the output layer is the input embedding.

Sequences are left-padded with PAD_ITEM (-1). Positions are counted from the
newest item (newest = 0), the original implementation's convention for left-padded
windows of length max_len, so the same history gets the same positions in a window
of any length <= max_len; padded keys are masked and padded outputs zeroed, so left
padding does not change the real positions' outputs.

Two losses, both at every non-padded position of the sequence:
- 'bce': the paper's binary cross-entropy, one uniformly sampled negative item per
  position;
- 'ce': softmax cross-entropy over all items.

Parameters carry logical axis names for the trainer's sharding rules.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

LOSSES = ("bce", "ce")
_MASKED = -1e9  # attention logit of a masked key (finite: an all-masked row stays finite)


@dataclasses.dataclass(frozen=True)
class SasrecConfig:
  """Shape and regularisation of one SASRec.

  Attributes:
    num_items: N, catalog size (item ids 0..N-1).
    max_len: longest history window (number of positional embeddings).
    hidden: D, width of embeddings and blocks.
    num_blocks: L, self-attention blocks.
    num_heads: attention heads (must divide hidden).
    dropout: dropout rate on embeddings, attention weights and block outputs.
  """

  num_items: int
  max_len: int = 50
  hidden: int = 64
  num_blocks: int = 2
  num_heads: int = 1
  dropout: float = 0.2

  def __post_init__(self):
    if self.hidden % self.num_heads:
      raise ValueError(f"SasrecConfig: num_heads {self.num_heads} must divide hidden {self.hidden}")


def _param(module: nn.Module, name: str, shape, axes, init=None) -> jax.Array:
  init = init or nn.initializers.glorot_uniform()
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


def _zeros(module: nn.Module, name: str, shape, axes) -> jax.Array:
  return _param(module, name, shape, axes, nn.initializers.zeros)


class LayerNorm(nn.Module):
  """LayerNorm over the feature axis with logically named scale and bias."""

  hidden: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = _param(self, "scale", (self.hidden,), ("embed",), nn.initializers.ones)
    bias = _zeros(self, "bias", (self.hidden,), ("embed",))
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + 1e-8) * scale + bias


class CausalSelfAttention(nn.Module):
  """Multi-head causal self-attention that ignores padded keys."""

  config: SasrecConfig

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
    """x [B, T, D], mask [B, T] True at real items -> [B, T, D]."""
    cfg = self.config
    batch, length, width = x.shape
    heads, head_dim = cfg.num_heads, width // cfg.num_heads

    def project(name):
      kernel = _param(self, f"{name}_kernel", (width, width), ("embed", "heads"))
      bias = _zeros(self, f"{name}_bias", (width,), ("heads",))
      return (x @ kernel + bias).reshape(batch, length, heads, head_dim)  # [B, T, H, Dh]

    q, k, v = project("query"), project("key"), project("value")
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head_dim)  # [B, H, T, T]
    causal = jnp.tril(jnp.ones((length, length), bool))  # [T, T]
    allowed = causal[None, None] & mask[:, None, None, :]  # [B, 1, T, T]
    weights = jax.nn.softmax(jnp.where(allowed, logits, _MASKED), axis=-1)
    weights = nn.Dropout(cfg.dropout)(weights, deterministic=deterministic)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, length, width)  # [B, T, D]
    kernel = _param(self, "out_kernel", (width, width), ("heads", "embed"))
    return out @ kernel + _zeros(self, "out_bias", (width,), ("embed",))


class FeedForward(nn.Module):
  """Position-wise two-layer ReLU network (the paper's point-wise FFN, width D)."""

  config: SasrecConfig

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    width = self.config.hidden
    h = x @ _param(self, "wi", (width, width), ("embed", "mlp"))
    h = jax.nn.relu(h + _zeros(self, "bi", (width,), ("mlp",)))
    h = nn.Dropout(self.config.dropout)(h, deterministic=deterministic)
    return h @ _param(self, "wo", (width, width), ("mlp", "embed")) + _zeros(
      self, "bo", (width,), ("embed",)
    )


class Block(nn.Module):
  """Pre-LN block: x + attention(LN(x)), then x + FFN(LN(x)); padded outputs zeroed."""

  config: SasrecConfig

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
    drop = nn.Dropout(self.config.dropout)
    hidden = self.config.hidden
    x = x + drop(
      CausalSelfAttention(self.config)(LayerNorm(hidden)(x), mask, deterministic),
      deterministic=deterministic,
    )
    x = x + drop(FeedForward(self.config)(LayerNorm(hidden)(x), deterministic), deterministic)
    return x * mask[..., None]


class SASRec(nn.Module):
  """History item ids -> one hidden state per position (see module docstring)."""

  config: SasrecConfig

  def setup(self):
    cfg = self.config
    self.item_embedding = _param(
      self, "item_embedding", (cfg.num_items + 1, cfg.hidden), ("vocab", "embed")
    )
    self.position_embedding = _param(
      self, "position_embedding", (cfg.max_len, cfg.hidden), ("length", "embed")
    )
    self.blocks = [Block(cfg) for _ in range(cfg.num_blocks)]
    self.final_norm = LayerNorm(cfg.hidden)
    self.dropout = nn.Dropout(cfg.dropout)

  def __call__(self, items: jax.Array, deterministic: bool = True) -> jax.Array:
    """items [B, T] int (PAD_ITEM = -1 left padding), T <= max_len -> hidden [B, T, D]."""
    length = items.shape[1]
    if length > self.config.max_len:
      raise ValueError(f"SASRec: window {length} is longer than max_len {self.config.max_len}")
    mask = items >= 0  # [B, T]
    x = self.item_embedding[jnp.maximum(items + 1, 0)] * jnp.sqrt(self.config.hidden)
    positions = jnp.arange(length - 1, -1, -1)  # [T] newest = 0
    x = self.dropout(x + self.position_embedding[positions], deterministic=deterministic)
    x = x * mask[..., None]  # [B, T, D]
    for block in self.blocks:
      x = block(x, mask, deterministic)
    return self.final_norm(x) * mask[..., None]

  def item_table(self) -> jax.Array:
    """[N, D] output embedding of the real items (padding row left out)."""
    return self.item_embedding[1:]

  def last_scores(self, items: jax.Array) -> jax.Array:
    """items [B, T] -> [B, N] scores of every item after the newest position (eval mode)."""
    hidden = self(items, deterministic=True)[:, -1]  # [B, D]
    return hidden @ self.item_table().T


def sample_negatives(rng: jax.Array, targets: jax.Array, num_items: int) -> jax.Array:
  """[B, T] negatives drawn uniformly from all items (equal to the target with prob 1/N)."""
  return jax.random.randint(rng, targets.shape, 0, num_items)


def sequence_loss(
  hidden: jax.Array,
  item_table: jax.Array,
  targets: jax.Array,
  negatives: jax.Array | None,
  kind: str,
  max_positions: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Mean loss over the non-padded positions.

  Args:
    hidden: [B, T, D] outputs per position.
    item_table: [N, D] output embedding.
    targets: [B, T] next item per position, PAD_ITEM (-1) where there is none.
    negatives: [B, T] one sampled negative per position ('bce' only).
    kind: 'bce' or 'ce' (module docstring).
    max_positions: 'ce' only: score at most this many real positions per batch
      (gathered first). Short sequences leave most of a max_len window padded, and
      the [positions, N] logits dominate the step, so a budget well above the
      batch's real positions saves most of it; real positions past the budget are
      left out of the loss and counted.

  Returns:
    (scalar loss, number of real positions left out).
  """
  weights = (targets >= 0).astype(jnp.float32)  # [B, T]
  safe = jnp.maximum(targets, 0)
  dropped = jnp.zeros((), jnp.float32)
  if kind == "ce" and max_positions is not None and max_positions < weights.size:
    flat = weights.reshape(-1)  # [B*T]
    (index,) = jnp.nonzero(flat, size=max_positions, fill_value=0)  # [P] real positions first
    kept = jnp.arange(max_positions) < jnp.sum(flat)  # [P]
    dropped = jnp.maximum(jnp.sum(flat) - max_positions, 0.0)
    hidden = hidden.reshape(-1, hidden.shape[-1])[index]  # [P, D]
    safe = safe.reshape(-1)[index]  # [P]
    weights = kept.astype(jnp.float32)
  if kind == "ce":
    logits = hidden @ item_table.T  # [B, T, N] or [P, N]
    per_position = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
  elif kind == "bce":
    positive = jnp.sum(hidden * item_table[safe], -1)  # [B, T]
    negative = jnp.sum(hidden * item_table[negatives], -1)  # [B, T]
    per_position = jax.nn.softplus(-positive) + jax.nn.softplus(negative)
  else:
    raise ValueError(f"sasrec loss: unknown '{kind}' ({', '.join(LOSSES)})")
  return jnp.sum(per_position * weights) / jnp.maximum(jnp.sum(weights), 1.0), dropped


class SasrecTask:
  """TrainTask of SASRec: batch inputs [B, T] and targets [B, T] item ids (-1 = padding).

  max_positions: see `sequence_loss` (None = every position of the window).
  """

  def __init__(self, config: SasrecConfig, loss: str = "ce", max_positions: int | None = None):
    if loss not in LOSSES:
      raise ValueError(f"SasrecTask.loss: unknown '{loss}' ({', '.join(LOSSES)})")
    self.config = config
    self.loss_kind = loss
    self.max_positions = max_positions
    self.model = SASRec(config)

  def init(self, rng, batch):
    return self.model.init(rng, jnp.asarray(batch["inputs"][:1]))

  def loss(self, variables, batch, rng):
    dropout_rng, negative_rng = jax.random.split(rng)
    targets = batch["targets"]
    hidden = self.model.apply(
      variables, batch["inputs"], deterministic=False, rngs={"dropout": dropout_rng}
    )  # [B, T, D]
    table = self.model.apply(variables, method=SASRec.item_table)  # [N, D]
    negatives = None
    if self.loss_kind == "bce":
      negatives = sample_negatives(negative_rng, targets, self.config.num_items)
    loss, dropped = sequence_loss(
      hidden, table, targets, negatives, self.loss_kind, self.max_positions
    )
    positions = jnp.sum(targets >= 0).astype(jnp.float32)
    return loss, ({"positions": positions, "positions_left_out": dropped}, {})
