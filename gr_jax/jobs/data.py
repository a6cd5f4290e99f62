"""Data job: materialise the run's dataset (built-in world, Amazon or a TFDS builder) in
WORKDIR/data."""

from __future__ import annotations

import os
import shutil
import time

import gin
from absl import logging

from gr_jax import errors, fingerprint
from gr_jax import workdir as workdir_lib
from gr_jax.data.amazon import prepare
from gr_jax.data.tfds import source as tfds_source
from gr_jax.data.world import simulator

SOURCES = ("world", "amazon", "tfds")


@gin.configurable
def prepare_data(
  workdir: str,
  source: str = "world",
  preset: str = "small",
  overrides=None,
  amazon_dir: str | None = None,
  feature_cache_dir: str | None = None,
  on_error: str = "raise",
  tfds_name: str | None = None,
  tfds_data_dir: str | None = None,
  tfds_module: str | None = None,
):
  """Writes catalog.npz and logs.npz (and, for the world, its latents) to WORKDIR/data.

  Args:
    workdir: the run's work directory.
    source: 'world' (the built-in simulator; item features = latent vectors),
      'amazon' (Amazon Scientific files; features = MiniLM text embeddings) or 'tfds' (a
      contract builder, docs/own_data.md; its feature vectors, else MiniLM embeddings).
    preset: world preset (tiny, small, medium, paper).
    overrides: dict of WorldConfig fields changed from the preset (e.g. title_noise).
    amazon_dir: folder of the Scientific.* files (source 'amazon' only; default: the
      GR_JAX_AMAZON_DIR environment variable, as for the TFDS builder).
    feature_cache_dir: where MiniLM embeddings are memoised (sources 'amazon', 'tfds';
      default WORKDIR/data/text_cache). Share one folder across runs to encode once.
    on_error: sources 'amazon', 'tfds': 'raise' stops at the first bad row; 'skip' drops
      bad request rows and writes data/skip_report.json (every dropped row, by reason).
    tfds_name: source 'tfds': `<builder>[/<variant>][:<version>]` (gr_jax/data/tfds/source.py).
    tfds_data_dir: source 'tfds': TFDS data dir (default $TFDS_DATA_DIR, ~/tensorflow_datasets).
    tfds_module: source 'tfds': module(s) to import first, which register the builder.

  Returns:
    The data directory.

  Raises:
    UserError: unknown source, source 'amazon' without amazon_dir, source 'tfds' without
      tfds_name, or a TFDS builder that breaks the contract (builder, split, row, field).
    StageMismatchError: the dataset here was made with other settings (and no redo).
  """
  out = workdir_lib.data_dir(workdir)
  if source not in SOURCES:
    raise errors.UserError(f"prepare_data.source: unknown source '{source}' {SOURCES}")
  if source == "amazon":
    amazon_dir = amazon_dir or os.environ.get("GR_JAX_AMAZON_DIR")
    if not amazon_dir:
      raise errors.UserError(
        "prepare_data.amazon_dir: required for source 'amazon' (the Scientific.* folder; "
        "or set GR_JAX_AMAZON_DIR)"
      )
  config = {"source": source, "preset": preset, "overrides": dict(overrides or {})}
  if source == "amazon":
    config.update(preset=None, amazon_dir=os.path.abspath(amazon_dir), on_error=on_error)
  inputs = {}
  if source == "tfds":
    if not tfds_name:
      raise errors.UserError("prepare_data.tfds_name: required for source 'tfds'")
    builders = tfds_source.open_source(tfds_name, tfds_data_dir, tfds_module)
    config.update(preset=None, tfds_name=tfds_name, on_error=on_error)
    inputs = {"tfds": builders.identity()}  # builder/config/version, data_dir, content
  stage = fingerprint.Stage("data", out, config, inputs)
  if stage.reuse(legacy_finished=workdir_lib.has_data(workdir), clear=lambda: _clear(out)):
    logging.info("data: reusing the dataset in %s", out)
    return out
  cache_dir = feature_cache_dir or os.path.join(out, "text_cache")
  if source == "amazon":
    prepare.prepare_amazon(out, amazon_dir, cache_dir, workdir_lib.AMAZON_MANIFEST, on_error)
  if source == "tfds":
    tfds_source.write_dataset(builders, out, cache_dir, workdir_lib.TFDS_MANIFEST, on_error)
  if source != "world":
    stage.finish()
    return out
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
  stage.finish()
  return out


def _clear(out: str) -> None:
  """Deletes the dataset for a redo; the text-embedding cache stays (it is keyed by text)."""
  for entry in os.listdir(out):
    if entry != "text_cache":
      path = os.path.join(out, entry)
      if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
      elif os.path.exists(path):  # another process of the job may have removed it
        os.remove(path)
