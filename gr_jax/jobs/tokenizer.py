"""Stage A job: train an item tokenizer (CQ-SID, RQ-VAE, ablations, RQ-KMeans) and write
the SID artefacts to WORKDIR/sid/<name>/.

The RQ-VAE family trains through the generic sharded trainer (data-parallel over
items, codebooks replicated, checkpointed, resumable); RQ-KMeans has no training
loop. Either way the catalog is then assigned, split (Algorithm 1) and written
atomically with its diagnostics (gr_jax/sid/training.py).

Input encoder (`train_tokenizer.encoder`): 'joint' or 'two_step', see
`gr_jax.sid.training.ENCODERS`.
"""

from __future__ import annotations

import dataclasses
import os
import time

import gin
from absl import logging

from gr_jax import io_utils
from gr_jax import workdir as workdir_lib
from gr_jax.sid import rqvae, tables, training
from gr_jax.train import partitioning, trainer


@gin.configurable
def train_tokenizer(
  workdir: str,
  name: str = gin.REQUIRED,
  batch_size: int = 512,
  assign_batch_size: int = 8192,
  seed: int = 0,
  encoder: str = "joint",
  two_tower_steps: int = 1000,
):
  """Trains tokenizer `name` (configured by TokenizerConfig) and writes WORKDIR/sid/<name>.

  Args:
    workdir: the run's work directory (reads WORKDIR/data).
    name: artefact name, e.g. 'cq_sid', 'rqvae'.
    batch_size: items per training step (global, sharded over the data axes).
    assign_batch_size: items per device call when assigning the catalog.
    seed: batch order seed.
    encoder: 'joint' or 'two_step' (module docstring).
    two_tower_steps: training steps of the two-step variant's encoder.

  Returns:
    The diagnostics dict.

  Raises:
    UserError: unknown `encoder`.
    ValueError: data without features.
  """
  training.check_encoder(encoder)
  out_dir = workdir_lib.sid_dir(workdir, name)
  train_dir = workdir_lib.sid_train_dir(workdir, name)
  trainer_config = trainer.TrainerConfig()
  settings = dict(batch_size=batch_size, seed=seed, encoder=encoder, steps=two_tower_steps)
  settings.update(trainer_config.settings(), tokenizer=dataclasses.asdict(rqvae.TokenizerConfig()))
  stage, reuse = workdir_lib.tokenizer_stage(workdir, name, settings)
  if reuse:
    logging.info("tokenizer %s: artefacts in %s reused (run.redo = True retrains)", name, out_dir)
    return io_utils.read_json(os.path.join(out_dir, "diagnostics.json"))
  catalog, logs = workdir_lib.load_data(workdir)
  training.check_features(catalog, logs, workdir_lib.data_dir(workdir))
  mesh, rules = partitioning.make_mesh(), partitioning.logical_rules()
  start = time.perf_counter()
  input_encoder = None
  if encoder == "two_step":
    two_tower_config = dataclasses.replace(trainer_config, num_steps=two_tower_steps)
    step_one = training.train_two_tower(
      train_dir + "_two_tower", catalog, logs, batch_size, seed, two_tower_config, mesh, rules
    )
    if step_one is None:
      return {"preempted": True}
    input_encoder, item_embeddings, query_embeddings = step_one
    catalog = dataclasses.replace(catalog, features=item_embeddings)
    logs = dataclasses.replace(logs, query_features=query_embeddings)
  config = training.config_for_features(rqvae.TokenizerConfig(), catalog.features.shape[1])
  category_id = catalog.category_id if config.force_category else None
  rqvae.check_tokenizer_inputs(
    config, catalog.features, category_id, source=f"{workdir_lib.data_dir(workdir)}/catalog.npz"
  )
  fitted = training.fit_codebooks(
    config,
    catalog,
    logs,
    category_id,
    train_dir=train_dir,
    trainer_config=trainer_config,
    mesh=mesh,
    rules=rules,
    batch_size=batch_size,
    seed=seed,
  )
  if fitted is None:
    return {"preempted": True}
  variables, train_metrics = fitted
  train_seconds = time.perf_counter() - start
  sid_tables, diag, assign_seconds = training.assign_catalog(
    variables, config, catalog, logs, category_id, assign_batch_size
  )
  diag.update(
    name=name,
    encoder=encoder,
    train_seconds=train_seconds,
    assign_seconds=assign_seconds,
    assign_items_per_s=catalog.num_items / max(assign_seconds, 1e-9),
    final_train_metrics=train_metrics,
  )
  tables.write_sid_artefacts(out_dir, sid_tables, diag, variables, config, input_encoder)
  stage.finish(out_dir)
  logging.info("tokenizer %s: %s", name, {k: v for k, v in diag.items() if not isinstance(v, dict)})
  return diag
