"""Sequence training of the generator: whole histories, early stopping on valid NDCG@10.

One causal pass over a user's history scores every item's SID (gr_jax/models/seq_task.py);
epochs stop early on valid full-ranking NDCG@10 from the seqrec evaluation, and test is
decoded once with the selected weights (gr_jax/models/seq_fit.py). The selected generator
goes to WORKDIR/sft/<tokenizer>/seq/ (checkpoints/ + generator.json; its training state in
train/), the results to WORKDIR/eval/seq_sft/<tokenizer>/{metrics.json, results.md,
per_user_test.npz}.
"""

from __future__ import annotations

import os
import time

import gin
from absl import logging

from gr_jax import errors, fingerprint, io_utils
from gr_jax import workdir as workdir_lib
from gr_jax.eval import seqrec, seqrec_compare
from gr_jax.models import decoder, seq_fit, seq_task
from gr_jax.models.generator import Generator
from gr_jax.models.token_layout import TokenLayout
from gr_jax.train import partitioning

# SASRec (IDs) on Amazon Scientific, full ranking (the data folder's README).
PUBLISHED_SASREC = {"recall@10": 0.1080, "ndcg@10": 0.0553, "recall@50": 0.2042, "ndcg@50": 0.0760}


@gin.configurable
def train_seq_sft(
  workdir: str,
  tokenizer: str = gin.REQUIRED,
  model: str = "tiny",
  model_overrides: dict | None = None,
  max_items: int = 50,
) -> dict:
  """Runs the module docstring's job; returns the metrics dict.

  Args:
    workdir: the run's work directory (reads data/, sid/<tokenizer>/).
    tokenizer: which SID artefacts to learn.
    model: decoder preset (tiny, small, base); its max_len is set to fit the sequences.
    model_overrides: DecoderConfig fields changed from the preset (width, depth, ...).
    max_items: history items per prediction (the prompt holds BOS + their SIDs).
  Training and selection knobs: SeqFitConfig (gin).

  Raises:
    errors.UserError: a select metric that is not recall@K / ndcg@K, an unknown
      within-cluster rule, or max_items < 1.
  """
  start = time.perf_counter()
  config = seq_fit.SeqFitConfig()
  if config.select_metric not in {f"{m}@{k}" for m in ("recall", "ndcg") for k in config.ks}:
    raise errors.UserError(
      f"SeqFitConfig.select_metric: '{config.select_metric}' is not recall@K / ndcg@K of ks"
    )
  for rule in (config.select_rule, *config.rules):
    if rule not in seqrec.WITHIN_CLUSTER_RULES:
      raise errors.UserError(f"SeqFitConfig: unknown within-cluster rule '{rule}'")
  if max_items < 1:
    raise errors.UserError(f"train_seq_sft.max_items: must be >= 1, got {max_items}")
  catalog, logs = workdir_lib.load_data(workdir)
  sid = workdir_lib.load_sid(workdir, tokenizer, catalog.num_items)
  # SIDs only: no text pieces in the vocabulary (the prompts hold none).
  layout = TokenLayout(text_vocab_size=0, sid_level_sizes=tuple(sid.tables.level_sizes))
  prompt_len = seq_task.prompt_len(max_items, layout)
  overrides = {**(model_overrides or {}), "max_len": prompt_len + layout.num_sid_levels}
  model_config = decoder.decoder_preset(model, layout.vocab_size, **overrides)
  generator = Generator(layout, model_config, prompt_len)
  mesh, rules = partitioning.make_mesh(), partitioning.logical_rules()
  stage_dir = workdir_lib.sft_dir(workdir, tokenizer, workdir_lib.SEQ_STAGE)
  results = seq_fit.fit_and_evaluate(
    stage_dir, generator, config, catalog, logs, sid.tables, mesh=mesh, rules=rules
  )
  if results["preempted"]:
    logging.warning("seq SFT: preempted; rerun the same command to resume")
    return results
  per_user = results.pop("per_user")
  # The selected generator is a finished stage later jobs (seqrec evaluation) can check.
  fingerprint.Stage(
    f"sequence SFT {tokenizer}",
    stage_dir,
    {"model": model, "model_overrides": model_overrides, "max_items": max_items},
    workdir_lib.generator_inputs(workdir, tokenizer),
  ).finish()
  _, most_popular = seqrec.most_popular(catalog, logs, config.ks)
  results.update(
    config={"model": model_config.__dict__, "max_items": max_items, **vars(config)},
    ks=list(config.ks),
    select_metric=config.select_metric,
    select_key=f"{config.select_rule}/beam{config.select_beam}",
    select_requests=config.select_requests,
    num_items=catalog.num_items,
    most_popular=most_popular,
    published_sasrec=PUBLISHED_SASREC,
    runtime_s=time.perf_counter() - start,
  )
  out_dir = os.path.join(workdir_lib.eval_dir(workdir), "seq_sft", tokenizer)
  text = seq_fit.report_markdown(results, PUBLISHED_SASREC)
  seqrec_compare.write(out_dir, per_user)
  io_utils.write_json(os.path.join(out_dir, "metrics.json"), results)
  io_utils.write_text(os.path.join(out_dir, "results.md"), text)
  print(text)
  return results
