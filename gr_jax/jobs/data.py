"""Data job: materialise the run's dataset (built-in world or real data) in WORKDIR/data."""

from __future__ import annotations

import os
import shutil
import time

import gin
from absl import logging

from gr_jax import errors, fingerprint
from gr_jax import workdir as workdir_lib
from gr_jax.data.amazon import prepare, reader
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
  on_error: str = "raise",
  amazon_dataset: str | None = None,
  amazon_category_root: str | None = None,
  amazon_query: str = "category",
):
  """Writes catalog.npz and logs.npz (and, for the world, its latents) to WORKDIR/data.

  Args:
    workdir: the run's work directory.
    source: 'world' (the built-in simulator; item features = latent vectors) or
      'amazon' (an Amazon dataset in the UniSRec layout; features = MiniLM text embeddings).
    preset: world preset (tiny, small, medium, paper).
    overrides: dict of WorldConfig fields changed from the preset (e.g. title_noise).
    amazon_dir: folder of the UniSRec-layout files (source 'amazon' only; default: the
      GR_JAX_AMAZON_DIR environment variable, as for the TFDS builder).
    feature_cache_dir: where MiniLM embeddings are memoised (source 'amazon';
      default WORKDIR/data/text_cache). Share one folder across runs to encode once.
    on_error: source 'amazon': 'raise' stops at the first bad row; 'skip' drops bad rows
      and writes data/skip_report.json (every dropped row, by reason) and id_maps.npz.
    amazon_dataset: the file prefix ('Office'); None = the only dataset in amazon_dir.
    amazon_category_root: the category root phrase; None infers it from the item texts.
    amazon_query: pseudo-queries from the target's 'category' path or 'title' (reader.title_query).

  Returns:
    The data directory.

  Raises:
    UserError: unknown source or query mode, or source 'amazon' without amazon_dir.
    StageMismatchError: the dataset here was made with other settings (and no redo).
  """
  out = workdir_lib.data_dir(workdir)
  if source not in SOURCES:
    raise errors.UserError(f"prepare_data.source: unknown source '{source}' {SOURCES}")
  if source == "amazon":
    amazon_dir = amazon_dir or os.environ.get("GR_JAX_AMAZON_DIR")
    if not amazon_dir:
      raise errors.UserError(
        "prepare_data.amazon_dir: required for source 'amazon' (the UniSRec-layout folder; "
        "or set GR_JAX_AMAZON_DIR)"
      )
    if amazon_query not in reader.QUERY_MODES:
      raise errors.UserError(
        f"prepare_data.amazon_query: unknown mode '{amazon_query}' {reader.QUERY_MODES}"
      )
  config = {"source": source, "preset": preset, "overrides": dict(overrides or {})}
  if source == "amazon":
    config.update(preset=None, amazon_dir=os.path.abspath(amazon_dir), on_error=on_error)
    amazon_dataset = reader.find_dataset(amazon_dir, amazon_dataset).name
    # Earlier records (Scientific, category queries) lack these keys: keep them matching.
    knobs = {
      "dataset": amazon_dataset != "Scientific" and amazon_dataset,
      "category_root": amazon_category_root,
      "query": amazon_query != "category" and amazon_query,
    }
    config.update({k: v for k, v in knobs.items() if v})
  stage = fingerprint.Stage("data", out, config, {})
  if stage.reuse(legacy_finished=workdir_lib.has_data(workdir), clear=lambda: _clear(out)):
    logging.info("data: reusing the dataset in %s", out)
    return out
  if source == "amazon":
    cache_dir = feature_cache_dir or os.path.join(out, "text_cache")
    prepare.prepare_amazon(
      out, amazon_dir, cache_dir, workdir_lib.AMAZON_MANIFEST, on_error,
      amazon_dataset, amazon_category_root, amazon_query,
    )  # fmt: skip
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
