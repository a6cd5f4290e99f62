"""Stage B job: progressive SFT of the generator (I2SID -> Q2SID -> UQ2SID, or seqrec).

Each stage trains through the generic sharded trainer in
WORKDIR/sft/<tokenizer>/<stage>/ and starts from the previous stage's last
checkpoint (the trainer's decision 2). The generator's token layout and model
config are written beside the checkpoints (generator.json) so that evaluation
and serving rebuild exactly the same model.
"""

from __future__ import annotations

import dataclasses
import json
import os

import gin
from absl import logging

from gr_jax import io_utils
from gr_jax.data import hf_tokenizer_vocab, seqio_tasks, text_vocab
from gr_jax.data.token_layout import TokenLayout
from gr_jax.jobs import data as data_job
from gr_jax.jobs import paths
from gr_jax.models import decoder, hf_qwen, sft_task
from gr_jax.sid import tables
from gr_jax.train import batching, checkpoints, optim, partitioning, trainer


@gin.configurable
def text_vocabulary(workdir: str, vocab_size: int = 2000):
  """The run's text vocabulary (a TextVocab or an HfTokenizerVocab).

  The pretrained model's tokenizer when SFT started from a Hugging Face checkpoint (it is then
  in vocab/tokenizer.json, so later stages pick it up without a knob); else the SentencePiece
  vocabulary, trained on titles + train queries once.
  """
  hf_path = paths.hf_tokenizer_path(workdir)
  if os.path.exists(hf_path):
    return hf_tokenizer_vocab.HfTokenizerVocab.load(hf_path)
  path = paths.vocab_path(workdir)
  if not os.path.exists(path):
    catalog, logs = data_job.load_data(workdir)
    train_queries = logs.query[logs.split == 0]
    texts = [str(t) for t in catalog.title] + [str(q) for q in train_queries]
    text_vocab.train_text_vocab(texts, path, vocab_size=vocab_size)
  return text_vocab.TextVocab.load(path)


@dataclasses.dataclass(frozen=True)
class Generator:
  """What defines a trained generator besides its weights."""

  layout: TokenLayout
  model_config: decoder.DecoderConfig
  prompt_len: int

  def to_json(self) -> str:
    return json.dumps(
      {
        "layout": dataclasses.asdict(self.layout),
        "model_config": dataclasses.asdict(self.model_config),
        "prompt_len": self.prompt_len,
      },
      indent=2,
    )

  @classmethod
  def from_json(cls, text: str) -> Generator:
    raw = json.loads(text)
    return cls(
      layout=TokenLayout(**raw["layout"]),
      model_config=decoder.DecoderConfig(**raw["model_config"]),
      prompt_len=int(raw["prompt_len"]),
    )


def load_generator(stage_dir: str):
  """(Generator, params as host arrays) of a finished stage directory."""
  spec_path = os.path.join(stage_dir, "generator.json")
  if not os.path.exists(spec_path):
    raise FileNotFoundError(f"{spec_path}: no trained generator here (run the SFT job first)")
  with open(spec_path) as f:
    generator = Generator.from_json(f.read())
  tree, _ = checkpoints.restore_params(os.path.join(stage_dir, "checkpoints"))
  return generator, tree["params"]


@gin.configurable
def train_sft(
  workdir: str,
  tokenizer: str = gin.REQUIRED,
  stages: tuple[str, ...] = ("i2sid", "q2sid", "uq2sid"),
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
    stages: task names in training order (seqio_tasks.TASK_NAMES).
    model: decoder preset (tiny, small, base, qwen05b); with init_from_hf the shape comes
      from its config.json ('hf' says so, and needs init_from_hf).
    model_overrides: DecoderConfig fields changed from the preset (e.g. num_layers); with
      init_from_hf only hf_qwen.OVERRIDABLE_FIELDS (e.g. dtype, remat).
    prompt_len: tokens before the SID.
    batch_size: global batch of every stage.
    stage_steps: steps per stage (default 1000 each).
    stage_learning_rates: peak learning rate per stage (default 1e-3 each).
    seed: batch order seed.
    init_from_hf: a Hugging Face Qwen2 / Qwen2.5 checkpoint folder (config.json, safetensors,
      tokenizer.json). The first stage starts from its weights, the text vocabulary is its
      tokenizer (copied to vocab/tokenizer.json, where every later job finds it) and the model
      shape is its config.json.

  Returns:
    {stage: final train metrics}.
  """
  if model == "hf" and not init_from_hf:
    raise ValueError("train_sft.model = 'hf' takes the model from a checkpoint: bind init_from_hf")
  catalog, logs = data_job.load_data(workdir)
  sid = tables.load_sid_artefacts(paths.sid_dir(workdir, tokenizer))
  if init_from_hf:
    _install_hf_tokenizer(workdir, init_from_hf)
  vocab = text_vocabulary(workdir)
  layout = TokenLayout(
    text_vocab_size=vocab.vocab_size, sid_level_sizes=tuple(sid.tables.level_sizes)
  )
  if init_from_hf:
    model_config = hf_qwen.decoder_config_from_hf(
      hf_qwen.read_hf_config(init_from_hf), layout.vocab_size, **dict(model_overrides or {})
    )
  else:
    model_config = decoder.decoder_preset(
      model, vocab_size=layout.vocab_size, **dict(model_overrides or {})
    )
  generator = Generator(layout, model_config, prompt_len)
  seqio_vocab = vocab.as_seqio_vocabulary()
  results = {}
  previous = None
  for stage in stages:
    stage_dir = paths.sft_dir(workdir, tokenizer, stage)
    previous_stage = previous
    previous = os.path.join(stage_dir, "checkpoints")
    if os.path.exists(os.path.join(stage_dir, "metrics.json")):
      logging.info("SFT %s/%s: finished earlier; skipped", tokenizer, stage)
      results[stage] = io_utils.read_json(os.path.join(stage_dir, "metrics.json"))
      continue
    examples = seqio_tasks.build_examples(
      stage, catalog, logs, "train", sid.tables.item_sid, seqio_vocab, layout, prompt_len
    )
    steps = int((stage_steps or {}).get(stage, 1000))
    lr = float((stage_learning_rates or {}).get(stage, 1e-3))
    if previous_stage is None and init_from_hf:
      previous_stage = _hf_init_checkpoint(workdir, tokenizer, init_from_hf, layout, model_config)
    logging.info(
      "SFT %s/%s: %d examples, %d steps, lr %g",
      tokenizer,
      stage,
      len(examples["tokens"]),
      steps,
      lr,
    )
    config = dataclasses.replace(
      trainer.TrainerConfig(),
      num_steps=steps,
      init_checkpoint=previous_stage,
    )
    schedule = optim.make_schedule(total_steps=steps, learning_rate=lr)
    runner = trainer.Trainer(
      sft_task.SftTask(model_config, layout.num_sid_levels),
      stage_dir,
      config=config,
      schedule=schedule,
      optimizer=optim.make_optimizer(schedule),
    )
    os.makedirs(stage_dir, exist_ok=True)
    with open(os.path.join(stage_dir, "generator.json"), "w") as f:
      f.write(generator.to_json())
    arrays = {"tokens": examples["tokens"], "loss_weights": examples["loss_weights"]}
    result = runner.fit(batching.epoch_batches(arrays, batch_size, seed))
    runner.close()
    if result.preempted:
      return {"preempted": True}
    results[stage] = result.last_metrics
    io_utils.write_json(os.path.join(stage_dir, "metrics.json"), result.last_metrics)
  return results


def _install_hf_tokenizer(workdir: str, folder: str) -> None:
  """Makes the checkpoint's tokenizer the run's text vocabulary (refuses a mixed work dir)."""
  if os.path.exists(paths.vocab_path(workdir)) and not os.path.exists(
    paths.hf_tokenizer_path(workdir)
  ):
    raise ValueError(
      f"train_sft.init_from_hf: {workdir} already has a SentencePiece text vocabulary "
      f"({paths.vocab_path(workdir)}) that other generators use; start from a work directory "
      "without vocab/ (data/ and sid/ can be copied)"
    )
  hf_tokenizer_vocab.install_tokenizer(folder, paths.hf_tokenizer_path(workdir))


def _hf_init_checkpoint(
  workdir: str,
  tokenizer: str,
  folder: str,
  layout: TokenLayout,
  model_config: decoder.DecoderConfig,
) -> str:
  """The converted checkpoint the first stage starts from (converted once per tokenizer)."""
  directory = os.path.join(paths.sft_dir(workdir, tokenizer, "hf_init"), "checkpoints")
  probe = checkpoints.Checkpointer(directory)
  converted = probe.latest_step() is not None
  probe.close()
  if not converted:
    logging.info("SFT %s: converting %s into %s", tokenizer, folder, directory)
    overrides = {f: getattr(model_config, f) for f in hf_qwen.OVERRIDABLE_FIELDS}
    mesh, rules = partitioning.make_mesh(), partitioning.logical_rules()
    _, params = hf_qwen.init_generator_from_hf(folder, layout, mesh=mesh, rules=rules, **overrides)
    hf_qwen.save_init_checkpoint(params, directory)
  return directory
