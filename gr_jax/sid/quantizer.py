"""Residual quantization with EMA codebooks and dead-code restart.

A codebook level is a dict of arrays kept in the non-param 'codebook' collection:

    {'embeddings': [K, Z], 'ema_count': [K], 'ema_sum': [K, Z]}

`ema_count` is in "items per batch" units (the EMA of how many batch rows picked
each code), so a usage threshold can be stated relative to the batch size.
Everything here is a pure function so the update rules can be tested against
their formulas and run under `jax.jit` with a sharded batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax
import jax
import jax.numpy as jnp


def level_name(level: int) -> str:
  """Key of level `level` (0-based) in the 'codebook' collection."""
  return f"level_{level}"


def new_codebook_state(embeddings: jax.Array, counts: jax.Array) -> dict[str, jax.Array]:
  """Codebook state whose EMA statistics reproduce `embeddings` exactly.

  Args:
    embeddings: [K, Z] code vectors.
    counts: [K] usage of each code in batch units (seeds `ema_count`).

  Returns:
    The level's state dict.
  """
  counts = jnp.asarray(counts, jnp.float32)
  embeddings = jnp.asarray(embeddings, jnp.float32)
  return {
    "embeddings": embeddings,
    "ema_count": counts,
    "ema_sum": embeddings * counts[:, None],
  }


def squared_distances(points: jax.Array, codebook: jax.Array) -> jax.Array:
  """[B, Z] points, [K, Z] codes -> [B, K] squared Euclidean distances."""
  point_norms = jnp.sum(points * points, axis=-1, keepdims=True)  # [B, 1]
  code_norms = jnp.sum(codebook * codebook, axis=-1)  # [K]
  return point_norms - 2.0 * points @ codebook.T + code_norms[None, :]


def _argmin_by_top_k(distances: jax.Array) -> jax.Array:
  """[B, K] -> [B] int32 argmin through `lax.top_k`, with `jnp.argmin`'s exact semantics.

  XLA:CPU lowers argmin to a slow variadic reduce; its top-k (a per-row partial sort) made residual
  quantization of 4,096 rows over (2048, 1024, 1024) codes 1.7x faster (benchmarks/README.md,
  benchmark 6). That top-k orders floats by their bits (-0.0 < +0.0, NaN by sign) and puts the
  lower index first on ties, so: 0 - d turns both zeros into +0.0 (argmin sees them equal), and
  NaN becomes +NaN, above +inf (argmin picks the first NaN).
  """
  negated = jnp.where(jnp.isnan(distances), jnp.nan, 0.0 - distances)  # [B, K]
  return jax.lax.top_k(negated, 1)[1][:, 0].astype(jnp.int32)


def nearest_codes(points: jax.Array, codebook: jax.Array) -> jax.Array:
  """[B, Z] points, [K, Z] codes -> [B] int32 index of the nearest code (lowest on ties)."""
  distances = squared_distances(points, codebook)  # [B, K]
  # top_k only on CPU, where it was measured; elsewhere argmin (GPU top-k kernels do not promise
  # the lower index on ties).
  return jax.lax.platform_dependent(
    distances,
    cpu=_argmin_by_top_k,
    default=lambda d: jnp.argmin(d, axis=-1).astype(jnp.int32),
  )


@flax.struct.dataclass
class Quantized:
  """Result of residual quantization.

  Attributes:
    codes: [B, L] int32 chosen code per level.
    quantized: [B, Z] sum of the chosen code vectors over levels.
    residuals: [L, B, Z] residual entering each level (residuals[0] = latents).
    code_vectors: [L, B, Z] chosen code vector of each level.
  """

  codes: jax.Array
  quantized: jax.Array
  residuals: jax.Array
  code_vectors: jax.Array


def residual_quantize(
  latents: jax.Array,
  codebooks: Sequence[jax.Array],
  forced_first_codes: jax.Array | None = None,
) -> Quantized:
  """Quantizes `latents` level by level, each level coding the previous residual.

  Args:
    latents: [B, Z] continuous latents.
    codebooks: L arrays [K_l, Z].
    forced_first_codes: optional [B] int32; where >= 0 the level-1 code is this value
      (CQ-SID's category constraint), where -1 it is the nearest code. Values must
      lie below K_0 (checked on the host, see `rqvae.check_tokenizer_inputs`).

  Returns:
    A `Quantized`.
  """
  residual = latents
  codes, residuals, code_vectors = [], [], []
  for level, codebook in enumerate(codebooks):
    level_codes = nearest_codes(residual, codebook)  # [B]
    if level == 0 and forced_first_codes is not None:
      level_codes = jnp.where(forced_first_codes >= 0, forced_first_codes, level_codes)
      level_codes = level_codes.astype(jnp.int32)
    chosen = codebook[level_codes]  # [B, Z]
    codes.append(level_codes)
    residuals.append(residual)
    code_vectors.append(chosen)
    residual = residual - chosen
  code_vectors = jnp.stack(code_vectors)  # [L, B, Z]
  return Quantized(
    codes=jnp.stack(codes, axis=-1),
    quantized=jnp.sum(code_vectors, axis=0),
    residuals=jnp.stack(residuals),
    code_vectors=code_vectors,
  )


def code_histogram(codes: jax.Array, codebook_size: int) -> jax.Array:
  """[B] codes -> [K] float32 number of rows that picked each code."""
  return jnp.sum(jax.nn.one_hot(codes, codebook_size, dtype=jnp.float32), axis=0)


def ema_update(
  state: dict[str, jax.Array],
  residuals: jax.Array,
  codes: jax.Array,
  decay: float,
  epsilon: float,
) -> dict[str, jax.Array]:
  """One EMA step of a codebook level (VQ-VAE v2 rule with Laplace smoothing).

    count' = decay * count + (1 - decay) * n_k
    sum'   = decay * sum   + (1 - decay) * sum_{i: code_i = k} r_i
    e_k    = sum'_k / ((count'_k + eps) / (sum_j count'_j + K eps) * sum_j count'_j)

  Args:
    state: the level's state dict.
    residuals: [B, Z] residuals this level quantized (no gradient flows).
    codes: [B] int32 codes chosen for them.
    decay: EMA decay.
    epsilon: Laplace smoothing constant (keeps unused codes finite).

  Returns:
    The new state dict.
  """
  residuals = jax.lax.stop_gradient(residuals)
  codebook_size = state["embeddings"].shape[0]
  one_hot = jax.nn.one_hot(codes, codebook_size, dtype=jnp.float32)  # [B, K]
  batch_counts = jnp.sum(one_hot, axis=0)  # [K]
  batch_sums = one_hot.T @ residuals  # [K, Z]
  ema_count = decay * state["ema_count"] + (1.0 - decay) * batch_counts
  ema_sum = decay * state["ema_sum"] + (1.0 - decay) * batch_sums
  total = jnp.sum(ema_count)
  smoothed = (ema_count + epsilon) / (total + codebook_size * epsilon) * total  # [K]
  return {
    "embeddings": ema_sum / smoothed[:, None],
    "ema_count": ema_count,
    "ema_sum": ema_sum,
  }


def restart_dead_codes(
  state: dict[str, jax.Array],
  residuals: jax.Array,
  rng: jax.Array,
  threshold: float,
  reset_count: float,
) -> tuple[dict[str, jax.Array], jax.Array]:
  """Re-seeds codes whose EMA usage fell below `threshold` from batch residuals.

  A dead code gets the residual of a random batch row and its EMA statistics are
  reset to `reset_count` uses of that vector, which gives it a grace period before
  it can be declared dead again.

  Args:
    state: the level's state dict.
    residuals: [B, Z] residuals of this level in the current batch.
    rng: PRNG key choosing the rows.
    threshold: a code is dead when its `ema_count` is below this.
    reset_count: `ema_count` given to a restarted code.

  Returns:
    (new state, number of restarted codes as a float32 scalar).
  """
  residuals = jax.lax.stop_gradient(residuals)
  codebook_size = state["embeddings"].shape[0]
  rows = jax.random.randint(rng, (codebook_size,), 0, residuals.shape[0])  # [K]
  candidates = residuals[rows]  # [K, Z]
  dead = state["ema_count"] < threshold  # [K]
  embeddings = jnp.where(dead[:, None], candidates, state["embeddings"])
  ema_count = jnp.where(dead, reset_count, state["ema_count"])
  ema_sum = jnp.where(dead[:, None], candidates * reset_count, state["ema_sum"])
  new_state = {"embeddings": embeddings, "ema_count": ema_count, "ema_sum": ema_sum}
  return new_state, jnp.sum(dead.astype(jnp.float32))


def usage_and_perplexity(codes: jax.Array, codebook_size: int) -> tuple[jax.Array, jax.Array]:
  """[B] codes -> (share of the K codes used, perplexity exp(H(p))) of the batch."""
  counts = code_histogram(codes, codebook_size)  # [K]
  probs = counts / jnp.maximum(jnp.sum(counts), 1.0)
  entropy = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(jnp.where(probs > 0, probs, 1.0)), 0))
  usage = jnp.mean((counts > 0).astype(jnp.float32))
  return usage, jnp.exp(entropy)
