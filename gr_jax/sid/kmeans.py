"""K-means and residual k-means (codebook initialisation and the RQ-KMeans baseline)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gr_jax.sid import quantizer

# Rows per distance block: bounds the [rows, K] distance matrix when the point set is large.
_ASSIGN_CHUNK = 4096


def _nearest_chunked(points: jax.Array, centroids: jax.Array) -> jax.Array:
  """[N, Z] points -> [N] nearest centroid, in blocks of `_ASSIGN_CHUNK` rows."""
  num_points = points.shape[0]
  if num_points <= _ASSIGN_CHUNK:
    return quantizer.nearest_codes(points, centroids)
  num_chunks = -(-num_points // _ASSIGN_CHUNK)
  padded = jnp.pad(points, ((0, num_chunks * _ASSIGN_CHUNK - num_points), (0, 0)))
  blocks = padded.reshape(num_chunks, _ASSIGN_CHUNK, -1)  # [chunks, rows, Z]
  codes = jax.lax.map(lambda block: quantizer.nearest_codes(block, centroids), blocks)
  return codes.reshape(-1)[:num_points]


# k-means++ seeds from at most this many points per cluster (bounds its O(K * N) cost).
_SEED_POINTS_PER_CLUSTER = 16


def kmeans_plus_plus(points: jax.Array, rng: jax.Array, num_clusters: int) -> jax.Array:
  """k-means++ seeding: each next centre drawn with probability ~ squared distance.

  Args:
    points: [N, Z] with N >= num_clusters.
    rng: PRNG key.
    num_clusters: K.

  Returns:
    [K, Z] initial centroids.
  """
  num_points = points.shape[0]
  sample_rng, first_rng, loop_rng = jax.random.split(rng, 3)
  pool_size = min(num_points, _SEED_POINTS_PER_CLUSTER * num_clusters)
  if pool_size < num_points:
    points = points[jax.random.choice(sample_rng, num_points, (pool_size,), replace=False)]
  first = jax.random.randint(first_rng, (), 0, pool_size)
  centroids = jnp.zeros((num_clusters, points.shape[1]), points.dtype).at[0].set(points[first])
  min_distances = jnp.sum(jnp.square(points - points[first]), axis=-1)  # [P]

  def add_centre(index, carry):
    centroids, min_distances = carry
    logits = jnp.where(min_distances > 0, jnp.log(jnp.maximum(min_distances, 1e-30)), -jnp.inf)
    chosen = jax.random.categorical(jax.random.fold_in(loop_rng, index), logits)
    centre = points[chosen]
    distances = jnp.sum(jnp.square(points - centre), axis=-1)
    return centroids.at[index].set(centre), jnp.minimum(min_distances, distances)

  centroids, _ = jax.lax.fori_loop(1, num_clusters, add_centre, (centroids, min_distances))
  return centroids


@functools.partial(jax.jit, static_argnames=("num_clusters", "num_iters"))
def kmeans(
  points: jax.Array, rng: jax.Array, num_clusters: int, num_iters: int
) -> tuple[jax.Array, jax.Array]:
  """Lloyd's k-means from k-means++ seeds.

  With fewer points than clusters, the surplus centroids are copies of random
  points with a tiny jitter; they stay unused and dead-code restart re-seeds them.
  A cluster that empties keeps its previous centroid.

  Args:
    points: [N, Z] float32.
    rng: PRNG key.
    num_clusters: K.
    num_iters: Lloyd iterations.

  Returns:
    (centroids [K, Z], codes [N] int32 of the points under the final centroids).
  """
  num_points = points.shape[0]
  pick_rng, jitter_rng = jax.random.split(rng)
  if num_points >= num_clusters:
    centroids = kmeans_plus_plus(points, pick_rng, num_clusters)
  else:
    init_rows = jax.random.randint(pick_rng, (num_clusters,), 0, num_points)
    scale = 1e-3 * (jnp.std(points) + 1e-6)
    noise = jax.random.normal(jitter_rng, (num_clusters, points.shape[1]))
    centroids = points[init_rows] + scale * noise

  def lloyd_step(_, centroids):
    codes = _nearest_chunked(points, centroids)  # [N]
    sums = jax.ops.segment_sum(points, codes, num_segments=num_clusters)  # [K, Z]
    counts = jax.ops.segment_sum(jnp.ones_like(codes, jnp.float32), codes, num_clusters)  # [K]
    return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centroids)

  centroids = jax.lax.fori_loop(0, num_iters, lloyd_step, centroids)
  return centroids, _nearest_chunked(points, centroids)


def category_means(
  points: jax.Array, category_id: jax.Array, num_codes: int, fallback: jax.Array
) -> jax.Array:
  """Level-1 code vectors for CQ-SID: the mean latent of each category.

  Args:
    points: [N, Z] latents.
    category_id: [N] int32, -1 when unknown (ignored).
    num_codes: level-1 codebook size (categories index into it).
    fallback: [K, Z] vectors kept for codes with no item here.

  Returns:
    [K, Z] code vectors.
  """
  known = category_id >= 0
  segment = jnp.where(known, category_id, num_codes)  # unknown rows go to a dropped segment
  sums = jax.ops.segment_sum(points, segment, num_segments=num_codes + 1)[:num_codes]
  counts = jax.ops.segment_sum(known.astype(jnp.float32), segment, num_codes + 1)[:num_codes]
  return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], fallback)


def fit_residual_codebooks(
  points: jax.Array,
  category_id: jax.Array | None,
  codebook_sizes: Sequence[int],
  rng: jax.Array,
  num_iters: int,
) -> tuple[list[jax.Array], jax.Array]:
  """Residual k-means: k-means on the points, then on each level's residuals.

  Used to initialise the RQ-VAE codebooks on the first batch and, on the whole
  catalog, as the RQ-KMeans baseline (no encoder training).

  Args:
    points: [N, Z] latents (or raw features for RQ-KMeans).
    category_id: optional [N] int32; when given, level-1 codes of known categories are
      forced to the category id and their code vectors are the category means.
    codebook_sizes: K_l per level.
    rng: PRNG key.
    num_iters: Lloyd iterations per level.

  Returns:
    (L codebooks [K_l, Z], codes [N, L] int32).
  """
  points = jnp.asarray(points, jnp.float32)
  residual = points
  codebooks, codes = [], []
  for level, size in enumerate(codebook_sizes):
    rng, level_rng = jax.random.split(rng)
    centroids, level_codes = kmeans(
      residual, level_rng, num_clusters=int(size), num_iters=num_iters
    )
    if level == 0 and category_id is not None:
      category_id = jnp.asarray(category_id, jnp.int32)
      centroids = category_means(residual, category_id, int(size), centroids)
      level_codes = jnp.where(category_id >= 0, category_id, _nearest_chunked(residual, centroids))
    codebooks.append(centroids)
    codes.append(level_codes.astype(jnp.int32))
    residual = residual - centroids[level_codes]
  return codebooks, jnp.stack(codes, axis=-1)


def codebook_state_from_fit(
  codebooks: Sequence[jax.Array], codes: jax.Array, batch_rows: int
) -> dict[str, dict[str, jax.Array]]:
  """'codebook' collection whose EMA counts are the fit's usage in batch units.

  Args:
    codebooks: L arrays [K_l, Z].
    codes: [N, L] codes of the fitted points.
    batch_rows: training batch size; counts are rescaled from N rows to it.

  Returns:
    {'level_l': state dict}.
  """
  scale = batch_rows / codes.shape[0]
  state = {}
  for level, codebook in enumerate(codebooks):
    counts = quantizer.code_histogram(codes[:, level], codebook.shape[0]) * scale
    state[quantizer.level_name(level)] = quantizer.new_codebook_state(codebook, counts)
  return state


def rq_kmeans_codebooks(
  features: np.ndarray,
  category_id: np.ndarray | None,
  codebook_sizes: Sequence[int],
  seed: int,
  num_iters: int,
) -> dict[str, dict[str, jax.Array]]:
  """The RQ-KMeans baseline: residual k-means on raw item features.

  Args:
    features: [N, D] item features.
    category_id: optional [N] category ids (forces level 1 when given).
    codebook_sizes: K_l per level.
    seed: PRNG seed.
    num_iters: Lloyd iterations per level.

  Returns:
    The 'codebook' collection (codes live in feature space; no encoder).
  """
  codebooks, codes = fit_residual_codebooks(
    jnp.asarray(features, jnp.float32),
    None if category_id is None else jnp.asarray(category_id, jnp.int32),
    codebook_sizes,
    jax.random.PRNGKey(seed),
    num_iters,
  )
  return codebook_state_from_fit(codebooks, codes, batch_rows=codes.shape[0])
