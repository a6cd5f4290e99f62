"""CQ-SID / RQ-VAE item tokenizer (METHOD.md section 2): config, model and train task.

x -> E -> z -> residual quantization (level 1 forced to the category when known)
-> z_q -> D -> x_hat, trained with

    L = recon + beta * commitment + gamma * BiNCE(E(x), E(q)) [+ w * category SupCon]

Codebooks are not parameters: they live in the 'codebook' collection and follow
EMA updates with dead-code restart (see `quantizer`). Scaling: recon and
commitment are both per-element means (mean over batch and dims). Summing
either over the batch instead would scale it with the batch size and swamp the
other terms, the known cause of codebook collapse.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np

from gr_jax.sid import kmeans, losses, quantizer

METHODS = ("rqvae", "rq_kmeans")
SUFFIXES = ("cluster_split", "unique", "none")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
  """Every knob of the item tokenizer.

  Attributes:
    feature_dim: D, item (and query) feature size.
    latent_dim: Z, encoder output size (code vector size).
    encoder_hidden: hidden widths of E.
    decoder_hidden: hidden widths of D.
    codebook_sizes: K_l per residual level (paper 2048, 1024, 1024).
    method: 'rqvae' (trained encoder) or 'rq_kmeans' (residual k-means on raw features).
    force_category: level-1 code = category id when known (the "C" of CQ-SID).
    commitment_weight: beta.
    nce_weight: gamma, weight of the bidirectional query-item InfoNCE (0 disables).
    nce_temperature: InfoNCE temperature.
    category_contrastive_weight: weight of the optional category SupCon term (0 = off).
    category_contrastive_temperature: its temperature.
    ema_decay: codebook EMA decay.
    ema_epsilon: Laplace smoothing of the EMA counts.
    dead_code_restart: re-seed codes whose EMA usage falls below the threshold.
    dead_code_fraction: a code is dead when its EMA count < this * (batch / K_l),
      i.e. a fraction of the usage it would have if all codes were used evenly.
    kmeans_init: initialise each level by k-means on the first batch's residuals.
    kmeans_iters: Lloyd iterations of that initialisation (and of RQ-KMeans).
    suffix: last SID token: 'cluster_split' (Algorithm 1 group), 'unique'
      (TIGER collision index), 'none' (always 0).
    split_max_items: T_max of the cluster split.
    split_max_groups: G_max of the cluster split (and the size of the group level).
    split_seed: seed of the random split.
  """

  feature_dim: int = 384
  latent_dim: int = 32
  encoder_hidden: tuple[int, ...] = (512, 256)
  decoder_hidden: tuple[int, ...] = (256, 512)
  codebook_sizes: tuple[int, ...] = (2048, 1024, 1024)
  method: str = "rqvae"
  force_category: bool = True
  commitment_weight: float = 1.0
  nce_weight: float = 0.001
  nce_temperature: float = 0.1
  category_contrastive_weight: float = 0.0
  category_contrastive_temperature: float = 0.1
  ema_decay: float = 0.99
  ema_epsilon: float = 1e-5
  dead_code_restart: bool = True
  dead_code_fraction: float = 0.1
  kmeans_init: bool = True
  kmeans_iters: int = 20
  suffix: str = "cluster_split"
  split_max_items: int = 50
  split_max_groups: int = 100
  split_seed: int = 0

  def __post_init__(self):
    for name in ("encoder_hidden", "decoder_hidden", "codebook_sizes"):
      object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
    if self.method not in METHODS:
      raise ValueError(f"TokenizerConfig.method: '{self.method}' is not one of {METHODS}")
    if self.suffix not in SUFFIXES:
      raise ValueError(f"TokenizerConfig.suffix: '{self.suffix}' is not one of {SUFFIXES}")
    if not self.codebook_sizes or min(self.codebook_sizes) < 1:
      raise ValueError(
        f"TokenizerConfig.codebook_sizes must be positive, got {self.codebook_sizes}"
      )
    if self.feature_dim < 1 or self.latent_dim < 1:
      raise ValueError("TokenizerConfig.feature_dim and latent_dim must be >= 1")
    if self.method == "rq_kmeans" and self.nce_weight > 0:
      raise ValueError("TokenizerConfig: method 'rq_kmeans' trains no encoder; set nce_weight = 0")
    if self.method == "rq_kmeans" and self.latent_dim != self.feature_dim:
      raise ValueError(
        "TokenizerConfig: method 'rq_kmeans' codes features; set latent_dim = feature_dim"
      )
    if not 0.0 <= self.ema_decay < 1.0:
      raise ValueError(f"TokenizerConfig.ema_decay must be in [0, 1), got {self.ema_decay}")
    if self.split_max_items < 1 or self.split_max_groups < 1:
      raise ValueError("TokenizerConfig.split_max_items and split_max_groups must be >= 1")

  @property
  def num_levels(self) -> int:
    return len(self.codebook_sizes)


def check_tokenizer_inputs(
  config: TokenizerConfig,
  features: np.ndarray,
  category_id: np.ndarray | None = None,
  query_features: np.ndarray | None = None,
  has_query: np.ndarray | None = None,
  source: str = "features",
) -> None:
  """Host-side validation before training or assignment.

  Args:
    config: tokenizer config.
    features: [N, D] item features.
    category_id: optional [N] int category ids (-1 = unknown).
    query_features: optional [N, D] query features.
    has_query: optional [N] bool; query rows where it is False are not checked.
    source: name of the data source, used in error messages.

  Raises:
    ValueError: wrong rank / feature dim, NaN or Inf (naming the first bad row), or a
      category id below -1 or, with `force_category`, outside the level-1 codebook.
  """
  _check_matrix(features, config.feature_dim, f"{source}: 'features'")
  rows = features.shape[0]
  if category_id is not None:
    category_id = np.asarray(category_id)
    if category_id.shape != (rows,):
      raise ValueError(f"{source}: 'category_id' has shape {category_id.shape}, expected ({rows},)")
    low = np.flatnonzero(category_id < -1)
    if low.size:
      raise ValueError(
        f"{source}: row {low[0]}: field 'category_id': {category_id[low[0]]} < -1 "
        "(use -1 for an unknown category)"
      )
    if config.force_category:
      high = np.flatnonzero(category_id >= config.codebook_sizes[0])
      if high.size:
        raise ValueError(
          f"{source}: row {high[0]}: field 'category_id': {category_id[high[0]]} does not fit "
          f"the level-1 codebook of size {config.codebook_sizes[0]} (CQ-SID forces level 1 to "
          "the category id; raise TokenizerConfig.codebook_sizes[0])"
        )
  if query_features is not None:
    mask = None if has_query is None else np.asarray(has_query, bool)
    _check_matrix(query_features, config.feature_dim, f"{source}: 'query_features'", mask)
    if query_features.shape[0] != rows:
      raise ValueError(
        f"{source}: 'query_features' has {query_features.shape[0]} rows, expected {rows}"
      )


def _check_matrix(array: np.ndarray, dim: int, what: str, row_mask: np.ndarray | None = None):
  array = np.asarray(array)
  if array.ndim != 2 or array.shape[1] != dim:
    raise ValueError(f"{what} has shape {array.shape}, expected [rows, {dim}] (feature_dim)")
  bad = ~np.all(np.isfinite(array), axis=1)
  if row_mask is not None:
    bad &= row_mask
  if np.any(bad):
    raise ValueError(f"{what}: row {np.flatnonzero(bad)[0]} holds NaN or Inf")


def _dense(width: int, axes: tuple[str, str], name: str) -> nn.Dense:
  return nn.Dense(
    width,
    kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[1],)),
    name=name,
  )


class MLP(nn.Module):
  """MLP with ReLU between layers; logical axes alternate so no spec repeats a mesh axis.

  Attributes:
    hidden: hidden widths.
    output_dim: output width.
    input_axis: logical name of the input dim.
    output_axis: logical name of the output dim.
  """

  hidden: Sequence[int]
  output_dim: int
  input_axis: str
  output_axis: str

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_axis = self.input_axis
    for index, width in enumerate(self.hidden):
      out_axis = "mlp" if in_axis != "mlp" else "embed"
      x = nn.relu(_dense(width, (in_axis, out_axis), f"hidden_{index}")(x))
      in_axis = out_axis
    out_axis = self.output_axis if in_axis != self.output_axis else "mlp"
    return _dense(self.output_dim, (in_axis, out_axis), "output")(x)


class RQVAE(nn.Module):
  """Encoder and decoder of the RQ-VAE (the codebooks are passed in, see module doc)."""

  config: TokenizerConfig

  def setup(self):
    self.encoder = MLP(self.config.encoder_hidden, self.config.latent_dim, "embed", "latent")
    self.decoder = MLP(self.config.decoder_hidden, self.config.feature_dim, "latent", "embed")

  def encode(self, features: jax.Array) -> jax.Array:
    """[B, D] -> [B, Z]."""
    return self.encoder(features)

  def decode(self, latents: jax.Array) -> jax.Array:
    """[B, Z] -> [B, D]."""
    return self.decoder(latents)

  def __call__(self, features: jax.Array) -> jax.Array:
    return self.decode(self.encode(features))


def codebooks_of(variables: dict, config: TokenizerConfig) -> list[jax.Array]:
  """The L code-vector arrays [K_l, Z] of a variables dict."""
  return [
    variables["codebook"][quantizer.level_name(level)]["embeddings"]
    for level in range(config.num_levels)
  ]


def encode(variables: dict, config: TokenizerConfig, features: jax.Array) -> jax.Array:
  """Latents of features: E(x) for RQ-VAE, the features themselves for RQ-KMeans."""
  if config.method == "rq_kmeans":
    return jnp.asarray(features, jnp.float32)
  return RQVAE(config).apply({"params": variables["params"]}, features, method=RQVAE.encode)


def forced_codes(config: TokenizerConfig, category_id: jax.Array | None) -> jax.Array | None:
  """Level-1 codes to force (category ids) or None when the config does not force."""
  if not config.force_category or category_id is None:
    return None
  return jnp.asarray(category_id, jnp.int32)


@gin.configurable
class TokenizerTask:
  """TrainTask (see the trainer protocol) of the RQ-VAE / CQ-SID tokenizer.

  Batch keys: 'features' [B, D] float32, 'category_id' [B] int32 (-1 unknown),
  'query_features' [B, D] float32, 'has_query' [B] bool.
  """

  def __init__(self, config: TokenizerConfig | None = None):
    self.config = config if config is not None else TokenizerConfig()
    if self.config.method != "rqvae":
      raise ValueError(
        "TokenizerTask trains the RQ-VAE; method 'rq_kmeans' is fitted by "
        "assign.fit_rq_kmeans without a training loop"
      )
    self.model = RQVAE(self.config)

  def init(self, rng: jax.Array, batch: dict[str, np.ndarray]) -> dict:
    """Encoder/decoder params (logically boxed) and k-means initialised codebooks.

    Args:
      rng: PRNG key.
      batch: a host batch; its residuals seed the codebooks.

    Returns:
      {'params': ..., 'codebook': {'level_l': {'embeddings', 'ema_count', 'ema_sum'}}}.

    Raises:
      ValueError: the batch fails `check_tokenizer_inputs`.
    """
    config = self.config
    check_tokenizer_inputs(
      config,
      np.asarray(batch["features"]),
      np.asarray(batch["category_id"]),
      np.asarray(batch["query_features"]),
      np.asarray(batch["has_query"]),
      source="init batch",
    )
    param_rng, codebook_rng = jax.random.split(rng)
    features = jnp.asarray(batch["features"], jnp.float32)
    params = self.model.init(param_rng, features)["params"]
    latents = self.model.apply({"params": params}, features, method=RQVAE.encode)
    if config.kmeans_init:
      codebooks, codes = kmeans.fit_residual_codebooks(
        latents,
        forced_codes(config, batch["category_id"]),
        config.codebook_sizes,
        codebook_rng,
        config.kmeans_iters,
      )
    else:
      codebooks = [
        jax.random.normal(key, (size, config.latent_dim)) * jnp.std(latents)
        for key, size in zip(
          jax.random.split(codebook_rng, config.num_levels), config.codebook_sizes
        )
      ]
      codes = quantizer.residual_quantize(
        latents, codebooks, forced_codes(config, batch["category_id"])
      ).codes
    codebook_state = kmeans.codebook_state_from_fit(codebooks, codes, batch_rows=codes.shape[0])
    return {"params": params, "codebook": codebook_state}

  def loss(
    self, variables: dict, batch: dict[str, jax.Array], rng: jax.Array
  ) -> tuple[jax.Array, tuple[dict[str, jax.Array], dict]]:
    """Loss, metrics and the EMA-updated 'codebook' collection.

    Args:
      variables: {'params', 'codebook'} (unboxed).
      batch: device batch (keys in the class doc).
      rng: PRNG key (dead-code restart).

    Returns:
      (loss, (metrics, {'codebook': new state})). metrics['finite'] is 0 when the loss
      is NaN/Inf.
    """
    config = self.config
    params = variables["params"]
    features = batch["features"].astype(jnp.float32)
    category_id = batch["category_id"].astype(jnp.int32)
    batch_rows = features.shape[0]

    latents = self.model.apply({"params": params}, features, method=RQVAE.encode)  # [B, Z]
    codebooks = [jax.lax.stop_gradient(c) for c in codebooks_of(variables, config)]
    quantized = quantizer.residual_quantize(latents, codebooks, forced_codes(config, category_id))
    straight_through = latents + jax.lax.stop_gradient(quantized.quantized - latents)
    reconstruction = self.model.apply({"params": params}, straight_through, method=RQVAE.decode)

    recon = jnp.mean(jnp.square(reconstruction - features))
    per_level_commit = jnp.mean(
      jnp.square(quantized.residuals - jax.lax.stop_gradient(quantized.code_vectors)), axis=(1, 2)
    )  # [L]
    commit = jnp.sum(per_level_commit)

    # Rows without a query may hold anything; zero them so no NaN reaches the gradients.
    has_query = batch["has_query"].astype(bool)
    query_features = jnp.where(has_query[:, None], batch["query_features"].astype(jnp.float32), 0.0)
    query_latents = self.model.apply({"params": params}, query_features, method=RQVAE.encode)
    nce = losses.bidirectional_info_nce(latents, query_latents, has_query, config.nce_temperature)
    total = recon + config.commitment_weight * commit + config.nce_weight * nce
    metrics = {"recon": recon, "commit": commit, "nce": nce}
    if config.category_contrastive_weight > 0:
      supcon = losses.category_supervised_contrastive(
        latents, category_id, config.category_contrastive_temperature
      )
      total = total + config.category_contrastive_weight * supcon
      metrics["category_contrastive"] = supcon

    new_state = {}
    level_rngs = jax.random.split(rng, config.num_levels)
    for level, size in enumerate(config.codebook_sizes):
      name = quantizer.level_name(level)
      codes = quantized.codes[:, level]
      state = quantizer.ema_update(
        variables["codebook"][name],
        quantized.residuals[level],
        codes,
        config.ema_decay,
        config.ema_epsilon,
      )
      # Forced level-1 codes are category centres: re-seeding them would move a category away.
      if config.dead_code_restart and not (level == 0 and config.force_category):
        even_usage = batch_rows / size
        state, restarted = quantizer.restart_dead_codes(
          state,
          quantized.residuals[level],
          level_rngs[level],
          threshold=config.dead_code_fraction * even_usage,
          reset_count=even_usage,
        )
        metrics[f"restarted_l{level}"] = restarted
      new_state[name] = state
      usage, perplexity = quantizer.usage_and_perplexity(codes, size)
      metrics[f"usage_l{level}"] = usage
      metrics[f"perplexity_l{level}"] = perplexity
      metrics[f"commit_l{level}"] = per_level_commit[level]
    metrics["loss"] = total
    metrics["finite"] = jnp.isfinite(total).astype(jnp.float32)
    return total, (metrics, {"codebook": new_state})
