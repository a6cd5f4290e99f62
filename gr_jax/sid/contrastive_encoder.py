"""Two-tower contrastive encoder: the "two-step" CQ-SID variant's item embeddings.

Two-step: train a query tower and an item tower with query-item InfoNCE plus a
category-aware supervised contrastive term, then feed the item tower's
embeddings (and the query tower's, for the RQ-VAE's own InfoNCE) to the RQ-VAE
as its features. The default "joint" variant skips this and applies InfoNCE to
the RQ-VAE encoder's latents directly (`rqvae.TokenizerTask`).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np

from gr_jax.sid import losses
from gr_jax.sid.rqvae import MLP


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TwoTowerConfig:
  """Knobs of the two-tower encoder.

  Attributes:
    feature_dim: D, input text-feature size of both towers.
    embed_dim: output size (the RQ-VAE's feature_dim in the two-step variant).
    hidden: hidden widths of each tower.
    temperature: query-item InfoNCE temperature.
    category_weight: weight of the same-category supervised contrastive term.
    category_temperature: its temperature.
    normalize_output: L2-normalise the embeddings handed to the RQ-VAE.
  """

  feature_dim: int = 384
  embed_dim: int = 128
  hidden: tuple[int, ...] = (512,)
  temperature: float = 0.1
  category_weight: float = 0.1
  category_temperature: float = 0.1
  normalize_output: bool = True

  def __post_init__(self):
    object.__setattr__(self, "hidden", tuple(int(v) for v in self.hidden))
    if self.feature_dim < 1 or self.embed_dim < 1:
      raise ValueError("TwoTowerConfig.feature_dim and embed_dim must be >= 1")
    if self.temperature <= 0 or self.category_temperature <= 0:
      raise ValueError("TwoTowerConfig temperatures must be > 0")


class TwoTower(nn.Module):
  """A query tower and an item tower (separate weights) over text features."""

  config: TwoTowerConfig

  def setup(self):
    config = self.config
    self.query_tower = MLP(config.hidden, config.embed_dim, "embed", "latent")
    self.item_tower = MLP(config.hidden, config.embed_dim, "embed", "latent")

  def embed_items(self, features: jax.Array) -> jax.Array:
    """[B, D] -> [B, E]."""
    return self.item_tower(features)

  def embed_queries(self, features: jax.Array) -> jax.Array:
    """[B, D] -> [B, E]."""
    return self.query_tower(features)

  def __call__(self, item_features: jax.Array, query_features: jax.Array):
    return self.embed_items(item_features), self.embed_queries(query_features)


@gin.configurable
class TwoTowerTask:
  """TrainTask of the two-tower encoder.

  Batch keys as `rqvae.TokenizerTask`: 'features', 'category_id', 'query_features',
  'has_query'.
  """

  def __init__(self, config: TwoTowerConfig | None = None):
    self.config = config if config is not None else TwoTowerConfig()
    self.model = TwoTower(self.config)

  def init(self, rng: jax.Array, batch: dict[str, np.ndarray]) -> dict:
    """{'params': logically boxed tower weights}.

    Raises:
      ValueError: the batch features do not have `feature_dim` columns.
    """
    for key in ("features", "query_features"):
      shape = np.shape(batch[key])
      if len(shape) != 2 or shape[1] != self.config.feature_dim:
        raise ValueError(
          f"init batch: '{key}' has shape {shape}, expected [rows, {self.config.feature_dim}]"
        )
    features = jnp.asarray(batch["features"], jnp.float32)
    return {"params": self.model.init(rng, features, features)["params"]}

  def loss(
    self, variables: dict, batch: dict[str, jax.Array], rng: jax.Array
  ) -> tuple[jax.Array, tuple[dict[str, jax.Array], dict]]:
    """InfoNCE(items, queries) + category_weight * SupCon(items, categories).

    Args:
      variables: {'params'} (unboxed).
      batch: device batch.
      rng: unused (the towers are deterministic); part of the protocol.

    Returns:
      (loss, (metrics, {})).
    """
    del rng
    config = self.config
    items, queries = self.model.apply(
      {"params": variables["params"]},
      batch["features"].astype(jnp.float32),
      batch["query_features"].astype(jnp.float32),
    )
    has_query = batch["has_query"].astype(bool)
    nce = losses.bidirectional_info_nce(items, queries, has_query, config.temperature)
    category = losses.category_supervised_contrastive(
      items, batch["category_id"].astype(jnp.int32), config.category_temperature
    )
    total = nce + config.category_weight * category
    scores = queries @ items.T  # [B, B], ranking only needs the dot product up to scale
    scores = scores / jnp.linalg.norm(items, axis=-1)[None, :].clip(1e-12)
    scores = jnp.where(has_query[None, :], scores, -jnp.inf)
    hit = jnp.argmax(scores, axis=1) == jnp.arange(items.shape[0])
    top1 = jnp.sum(jnp.where(has_query, hit, False)) / jnp.maximum(jnp.sum(has_query), 1)
    metrics = {
      "loss": total,
      "nce": nce,
      "category_contrastive": category,
      "retrieval_top1": top1,
      "finite": jnp.isfinite(total).astype(jnp.float32),
    }
    return total, (metrics, {})


@functools.partial(jax.jit, static_argnames=("config", "tower"))
def _embed(params, config: TwoTowerConfig, features, tower: str):
  method = TwoTower.embed_items if tower == "item" else TwoTower.embed_queries
  embeddings = TwoTower(config).apply({"params": params}, features, method=method)
  if config.normalize_output:
    embeddings = embeddings / jnp.linalg.norm(embeddings, axis=-1, keepdims=True).clip(1e-12)
  return embeddings


def embed(
  variables: dict,
  config: TwoTowerConfig,
  features: np.ndarray,
  tower: str = "item",
  batch_size: int = 4096,
) -> np.ndarray:
  """Embeddings of many rows with one tower, in fixed-size jitted batches.

  Args:
    variables: trained two-tower variables.
    config: its config.
    features: [N, D] float32.
    tower: 'item' or 'query'.
    batch_size: rows per device call.

  Returns:
    [N, E] float32 (the RQ-VAE's input features in the two-step variant).

  Raises:
    ValueError: unknown tower, wrong feature shape, or NaN/Inf rows.
  """
  if tower not in ("item", "query"):
    raise ValueError(f"embed: tower must be 'item' or 'query', got '{tower}'")
  features = np.asarray(features, np.float32)
  if features.ndim != 2 or features.shape[1] != config.feature_dim:
    raise ValueError(
      f"embed: features have shape {features.shape}, expected [N, {config.feature_dim}]"
    )
  bad = np.flatnonzero(~np.all(np.isfinite(features), axis=1))
  if bad.size:
    raise ValueError(f"embed: features row {bad[0]} holds NaN or Inf")
  params = nn.meta.unbox(variables)["params"]
  num_rows = features.shape[0]
  batch_size = max(1, min(batch_size, num_rows))
  outputs = []
  for start in range(0, num_rows, batch_size):
    rows = features[start : start + batch_size]
    padded = np.pad(rows, ((0, batch_size - len(rows)), (0, 0)))
    outputs.append(np.asarray(_embed(params, config, padded, tower))[: len(rows)])
  if not outputs:
    return np.zeros((0, config.embed_dim), np.float32)
  return np.concatenate(outputs)
