"""Stage B job: progressive SFT of the generator (I2SID -> Q2SID -> UQ2SID, or seqrec).

Examples come from the seqio tasks over WORKDIR/data and the SIDs (gr_jax/data/sft_inputs.py):
a stage named after a task trains on it, stage `mixture` on a seqio Mixture by `mixture_rates`.
Each stage trains through the generic sharded trainer in WORKDIR/sft/<tokenizer>/<stage>/
and starts from the previous stage's last checkpoint (the trainer's decision 2). The
generator (token layout, model config) is written beside the checkpoints (generator.json)
so that evaluation and serving rebuild the same model; stage.json records settings and
inputs (gr_jax/fingerprint.py).
"""

from __future__ import annotations

import dataclasses
import os

import gin
from absl import logging

from gr_jax import io_utils
from gr_jax import workdir as workdir_lib
from gr_jax.data import sft_inputs
from gr_jax.models import hf_qwen, sft_task
from gr_jax.models.generator import Generator
from gr_jax.models.token_layout import TokenLayout
from gr_jax.train import optim, partitioning, trainer


@gin.configurable
def train_sft(
  workdir: str,
  tokenizer: str = gin.REQUIRED,
  stages: tuple[str, ...] = ("i2sid", "q2sid", "uq2sid"),
  mixture_rates: dict | None = None,
  model: str = "small",
  model_overrides: dict | None = None,
  prompt_len: int = 32,
  batch_size: int = 128,
  stage_steps: dict | None = None,
  stage_learning_rates: dict | None = None,
  seed: int = 0,
  init_from_hf: str | None = None,
):
  """Trains the generator stage by stage on tokenizer `tokenizer`'s SIDs.

  Args:
    workdir: the run's work directory (reads data/, sid/<tokenizer>/).
    tokenizer: which SID artefacts to learn.
    stages: stages in training order: task names (seqio_tasks.TASK_NAMES) or 'mixture'.
    mixture_rates: task -> sampling rate of stage 'mixture' ({'i2sid': 1, 'q2sid': 2}).
    model: decoder preset (tiny, small, base, qwen05b), or 'hf' (init_from_hf's shape).
    model_overrides: DecoderConfig fields changed from the preset (hf: OVERRIDABLE_FIELDS).
    prompt_len: tokens before the SID.
    batch_size: global batch of every stage.
    stage_steps: steps per stage (default 1000 each).
    stage_learning_rates: peak learning rate per stage (default 1e-3 each).
    seed: seed of the example order (shuffles, mixture sampling).
    init_from_hf: a Hugging Face Qwen2 / Qwen2.5 folder: first weights, text vocabulary
      and model shape (gr_jax/models/hf_qwen.py).

  Returns {stage: final train metrics}; finished stages with the same stage.json are reused.
  """
  sft_inputs.check_stages(stages, mixture_rates)
  catalog, logs = workdir_lib.load_data(workdir)
  sid = workdir_lib.load_sid(workdir, tokenizer, catalog.num_items)
  if init_from_hf:
    workdir_lib.install_hf_tokenizer(workdir, init_from_hf)
  vocab = workdir_lib.text_vocabulary(workdir)
  layout = TokenLayout(
    text_vocab_size=vocab.vocab_size, sid_level_sizes=tuple(sid.tables.level_sizes)
  )
  model_config = hf_qwen.generator_model_config(
    model, layout.vocab_size, dict(model_overrides or {}), init_from_hf
  )
  generator = Generator(layout, model_config, prompt_len)
  inputs = sft_inputs.SftInputs(f"sft_{tokenizer}", layout, batch_size, seed, mixture_rates)
  inputs.register((catalog, logs), workdir_lib.sid_dir(workdir, tokenizer), vocab, prompt_len)
  base_config = trainer.TrainerConfig()
  mesh, rules = partitioning.make_mesh(), partitioning.logical_rules()
  results, previous = {}, None
  if init_from_hf:
    init_dir = os.path.join(workdir_lib.sft_dir(workdir, tokenizer, "hf_init"), "checkpoints")
    previous = hf_qwen.hf_init_checkpoint(
      init_dir, init_from_hf, layout, model_config, mesh=mesh, rules=rules
    )
  for stage in stages:
    stage_dir = workdir_lib.sft_dir(workdir, tokenizer, stage)
    previous_stage = previous
    previous = os.path.join(stage_dir, "checkpoints")
    steps = int((stage_steps or {}).get(stage, 1000))
    lr = float((stage_learning_rates or {}).get(stage, 1e-3))
    settings = dict(model=generator.to_json(), hf=init_from_hf, lr=lr, **inputs.settings(stage))
    settings.update(dataclasses.replace(base_config, num_steps=steps).settings())
    record = workdir_lib.sft_stage(workdir, tokenizer, stage, settings, previous_stage)
    metrics_path = os.path.join(stage_dir, "metrics.json")
    if record.reuse(legacy_finished=os.path.exists(metrics_path)):
      logging.info("SFT %s/%s: finished earlier; skipped", tokenizer, stage)
      results[stage] = io_utils.read_json(metrics_path)
      continue
    logging.info("SFT %s/%s: %d steps, lr %g", tokenizer, stage, steps, lr)
    schedule = optim.make_schedule(total_steps=steps, learning_rate=lr)
    runner = trainer.Trainer(
      sft_task.SftTask(model_config, layout.num_sid_levels),
      stage_dir,
      config=dataclasses.replace(base_config, num_steps=steps, init_checkpoint=previous_stage),
      mesh=mesh,
      rules=rules,
      schedule=schedule,
      optimizer=optim.make_optimizer(schedule),
    )
    workdir_lib.save_generator(stage_dir, generator)
    with inputs.batches(stage) as batches:
      result = runner.fit(batches)
    runner.close()
    if result.preempted:
      return {"preempted": True}
    results[stage] = result.last_metrics
    io_utils.write_json(metrics_path, result.last_metrics)
    record.finish()
  return results
