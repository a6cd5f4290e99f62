"""Data job: materialise the run's dataset (built-in world, real data or a TFDS builder)."""

from __future__ import annotations

import os
import shutil
import time

import gin
from absl import logging

from gr_jax import errors, fingerprint
from gr_jax import workdir as workdir_lib
from gr_jax.data.amazon import prepare
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
  amazon_dataset: str | None = None,
  amazon_category_root: str | None = None,
  amazon_query: str = "category",
  tfds_name: str | None = None,
  tfds_data_dir: str | None = None,
  tfds_module: str | None = None,
):
  """Writes catalog.npz and logs.npz (and, for the world, its latents) to WORKDIR/data.

  Args:
    workdir: the run's work directory.
    source: 'world' (the built-in simulator; item features = latent vectors), 'amazon'
      (an Amazon dataset in the UniSRec layout; features = MiniLM text embeddings) or
      'tfds' (a contract builder, docs/own_data.md; its feature vectors, else MiniLM).
    preset: world preset (tiny, small, medium, paper).
    overrides: dict of WorldConfig fields changed from the preset (e.g. title_noise).
    amazon_dir: folder of the UniSRec-layout files (source 'amazon' only; default: the
      GR_JAX_AMAZON_DIR environment variable, as for the TFDS builder).
    feature_cache_dir: where MiniLM embeddings are memoised (sources 'amazon', 'tfds';
      default WORKDIR/data/text_cache). Share one folder across runs to encode once.
    on_error: sources 'amazon', 'tfds': 'raise' stops at the first bad row; 'skip' drops
      bad rows and writes data/skip_report.json (every dropped row, by reason).
    amazon_dataset: the file prefix ('Office'); None = the only dataset in amazon_dir.
    amazon_category_root: the category root phrase; None infers it from the item texts.
    amazon_query: pseudo-queries from the target's 'category' path or 'title' (reader.title_query).
    tfds_name: source 'tfds': `<builder>[/<variant>][:<version>]` (gr_jax/data/tfds/source.py).
    tfds_data_dir: source 'tfds': TFDS data dir (default $TFDS_DATA_DIR, ~/tensorflow_datasets).
    tfds_module: source 'tfds': module(s) to import first, which register the builder.

  Returns:
    The data directory.

  Raises:
    UserError: unknown source or query mode, a missing folder or builder name, or a
      TFDS builder that breaks the contract (builder, split, row, field).
    StageMismatchError: the dataset here was made with other settings (and no redo).
  """
  out = workdir_lib.data_dir(workdir)
  if source not in SOURCES:
    raise errors.UserError(f"prepare_data.source: unknown source '{source}' {SOURCES}")
  config = {"source": source, "preset": preset, "overrides": dict(overrides or {})}
  inputs = {}
  if source == "amazon":
    amazon_dir, amazon_dataset, settings = prepare.resolve_request(
      amazon_dir, amazon_dataset, amazon_category_root, amazon_query
    )
    config.update(preset=None, on_error=on_error, **settings)
  if source == "tfds":
    if not tfds_name:
      raise errors.UserError("prepare_data.tfds_name: required for source 'tfds'")
    from gr_jax.data.tfds import source as tfds_source  # TensorFlow only when reading TFDS

    builders = tfds_source.open_source(tfds_name, tfds_data_dir, tfds_module)
    config.update(preset=None, tfds_name=tfds_name, on_error=on_error)
    inputs = {"tfds": builders.identity()}  # builder/config/version, data_dir, content
  stage = fingerprint.Stage("data", out, config, inputs)
  if stage.reuse(legacy_finished=workdir_lib.has_data(workdir), clear=lambda: _clear(out)):
    logging.info("data: reusing the dataset in %s", out)
    return out
  cache_dir = feature_cache_dir or os.path.join(out, "text_cache")
  if source == "amazon":
    prepare.prepare_amazon(
      out, amazon_dir, cache_dir, workdir_lib.AMAZON_MANIFEST, on_error,
      amazon_dataset, amazon_category_root, amazon_query,
    )  # fmt: skip
  if source == "tfds":
    tfds_source.write_dataset(builders, out, cache_dir, workdir_lib.TFDS_MANIFEST, on_error)
  if source != "world":
    stage.finish()
    return out
  start = time.perf_counter()
  generated = simulator.generate_world(simulator.world_preset(preset, **dict(overrides or {})))
  simulator.save_world(generated, out)
  logging.info(
    "data: %s world, %d items, %d requests in %.1fs", preset,
    generated.catalog.num_items, generated.logs.num_requests, time.perf_counter() - start,
  )  # fmt: skip
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
