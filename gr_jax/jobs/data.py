"""Data job: materialise the run's dataset (built-in world or real data) in WORKDIR/data."""

from __future__ import annotations

import os
import time

import gin
import numpy as np
from absl import logging

from gr_jax.data import schema, world
from gr_jax.jobs import paths


@gin.configurable
def prepare_data(workdir: str, source: str = "world", preset: str = "small", overrides=None):
  """Writes catalog.npz and logs.npz (and, for the world, its latents) to WORKDIR/data.

  Args:
    workdir: the run's work directory.
    source: 'world' (the built-in simulator; item features = latent vectors).
    preset: world preset (tiny, small, medium, paper).
    overrides: dict of WorldConfig fields changed from the preset (e.g. title_noise).

  Returns:
    The data directory.
  """
  out = paths.data_dir(workdir)
  if os.path.exists(os.path.join(out, "world.json")):
    logging.info("data: reusing the world in %s", out)
    return out
  if source != "world":
    raise ValueError(f"prepare_data.source: unknown source '{source}' (world)")
  start = time.perf_counter()
  config = world.world_preset(preset, **dict(overrides or {}))
  generated = world.generate_world(config)
  world.save_world(generated, out)
  logging.info(
    "data: %s world, %d items, %d requests in %.1fs",
    preset,
    generated.catalog.num_items,
    generated.logs.num_requests,
    time.perf_counter() - start,
  )
  return out


def load_data(workdir: str) -> tuple[schema.Catalog, schema.SearchLogs]:
  """The run's catalog and logs, as written by `prepare_data`."""
  directory = paths.data_dir(workdir)
  catalog_path = os.path.join(directory, "catalog.npz")
  if not os.path.exists(catalog_path):
    raise FileNotFoundError(
      f"{catalog_path}: no dataset in this work directory; run the data job first "
      "(gin_configs/runs/data.gin)"
    )
  catalog = schema.load_catalog(catalog_path)
  logs = schema.load_logs(os.path.join(directory, "logs.npz"))
  if catalog.features is not None:
    catalog.features = np.asarray(catalog.features, np.float32)
  return catalog, logs
