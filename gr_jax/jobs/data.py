"""Data job: materialise the run's dataset (built-in world or real data) in WORKDIR/data."""

from __future__ import annotations

import os
import time

import gin
from absl import logging

from gr_jax import workdir as workdir_lib
from gr_jax.data.amazon import prepare
from gr_jax.data.world import simulator

SOURCES = ("world", "amazon")


@gin.configurable
def prepare_data(
  workdir: str,
  source: str = "world",
  preset: str = "small",
  overrides=None,
  amazon_dir: str | None = None,
  feature_cache_dir: str | None = None,
):
  """Writes catalog.npz and logs.npz (and, for the world, its latents) to WORKDIR/data.

  Args:
    workdir: the run's work directory.
    source: 'world' (the built-in simulator; item features = latent vectors) or
      'amazon' (Amazon Scientific files; features = MiniLM text embeddings).
    preset: world preset (tiny, small, medium, paper).
    overrides: dict of WorldConfig fields changed from the preset (e.g. title_noise).
    amazon_dir: folder of the Scientific.* files (source 'amazon' only).
    feature_cache_dir: where MiniLM embeddings are memoised (source 'amazon';
      default WORKDIR/data/text_cache). Share one folder across runs to encode once.

  Returns:
    The data directory.

  Raises:
    ValueError: unknown source, or source 'amazon' without amazon_dir.
  """
  out = workdir_lib.data_dir(workdir)
  if source not in SOURCES:
    raise ValueError(f"prepare_data.source: unknown source '{source}' {SOURCES}")
  if workdir_lib.has_data(workdir):
    logging.info("data: reusing the dataset in %s", out)
    return out
  if source == "amazon":
    if not amazon_dir:
      raise ValueError(
        "prepare_data.amazon_dir: required for source 'amazon' (the Scientific.* folder)"
      )
    cache_dir = feature_cache_dir or os.path.join(out, "text_cache")
    return prepare.prepare_amazon(out, amazon_dir, cache_dir, workdir_lib.AMAZON_MANIFEST)
  start = time.perf_counter()
  config = simulator.world_preset(preset, **dict(overrides or {}))
  generated = simulator.generate_world(config)
  simulator.save_world(generated, out)
  logging.info(
    "data: %s world, %d items, %d requests in %.1fs",
    preset,
    generated.catalog.num_items,
    generated.logs.num_requests,
    time.perf_counter() - start,
  )
  return out
