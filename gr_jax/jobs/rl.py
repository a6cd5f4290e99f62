"""Stage C job: EG-GRPO (or vanilla GRPO with K = 0) on top of the UQ2SID generator.

Each step samples G SIDs per request from the current policy, adds K expert SIDs
from the request's logged clicks / exposures, rewards the group from the logged
feedback, and takes one clipped-ratio update with a k3 KL to the frozen SFT model
(gr_jax/rl). It runs through the generic trainer: sharded, checkpointed and
resumable; the rollout is the trainer's `prepare_batch` hook, keyed by the step,
so a resumed run repeats the uninterrupted run's rollouts. At the end it writes
clk@k / exp@k of the policy on the evaluation sample to metrics.json.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import gin
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from gr_jax import io_utils, retrieval
from gr_jax.data import schema
from gr_jax.decoding import sampling
from gr_jax.decoding import trie as trie_lib
from gr_jax.eval import protocol, stats
from gr_jax.jobs import data as data_job
from gr_jax.jobs import paths, sft
from gr_jax.models import decoder, sft_task
from gr_jax.rl import eg_grpo
from gr_jax.sid import tables
from gr_jax.train import batching, optim, partitioning, trainer


def feedback_sids(items: np.ndarray, item_sid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """[R, M] item ids (PAD_ITEM-padded) -> ([R, M, L] SIDs, [R, M] mask)."""
  mask = items != schema.PAD_ITEM
  return item_sid[np.maximum(items, 0)].astype(np.int32), mask


def rl_examples(catalog, logs, item_sid, vocab, generator: sft.Generator, split: str = "train"):
  """Prompts and logged feedback of every `split` request with at least one click."""
  rows = np.flatnonzero((logs.split == schema.SPLITS.index(split)) & (logs.clicked >= 0).any(-1))
  selected = logs.select(rows)
  prompts = protocol.request_prompts("uq2sid", catalog, selected, split, item_sid, vocab, generator)
  arrays = {"prompt": prompts}
  for name in ("purchased", "clicked", "exposed"):
    arrays[name], arrays[f"{name}_mask"] = feedback_sids(getattr(selected, name), item_sid)
  return arrays


class PolicyFunctions:
  """The generator seen as an RL policy: sampling and teacher-forced log-probs."""

  def __init__(self, generator: sft.Generator, config: eg_grpo.EgGrpoConfig, trie):
    self.generator = generator
    self.config = config
    self.trie = trie

  def logprob(self, params, batch, sids):
    """[B, N, L] SID codes -> [B, N, L] log p(token | prompt, earlier SID tokens)."""
    layout, cfg = self.generator.layout, self.generator.model_config
    prompts = batch["prompt"]  # [B, P]
    batch_size, num, levels = sids.shape
    tokens = layout.sid_to_tokens(sids.astype(jnp.int32))  # [B, N, L]
    repeated = jnp.repeat(prompts[:, None, :], num, axis=1)  # [B, N, P]
    sequences = jnp.concatenate([repeated, tokens], -1).reshape(batch_size * num, -1)
    module = decoder.Decoder(cfg)
    hidden_logits = module.apply(
      {"params": params}, sequences[:, :-1], levels, method=sft_task.target_logits
    )  # [B*N, L, V]
    log_probs = jax.nn.log_softmax(hidden_logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, tokens.reshape(-1, levels)[..., None], axis=-1)
    return picked[..., 0].reshape(batch_size, num, levels)

  def sample(self, params, batch, rng):
    layout, cfg = self.generator.layout, self.generator.model_config
    prompts = batch["prompt"]
    max_len = prompts.shape[1] + layout.num_sid_levels
    first_logits, cache = decoder.prefill(params, cfg, prompts, max_len)
    step_fn = lambda tokens, c: decoder.extend(params, cfg, tokens, c)
    samples = sampling.sample_sids(
      step_fn,
      first_logits,
      cache,
      rng,
      layout=layout,
      num_samples=self.config.group_size,
      temperature=self.config.temperature,
      mode="trie" if self.config.constrained_sampling else "level_range",
      trie=self.trie,
    )
    return samples.codes, samples.valid


@gin.configurable
def train_rl(
  workdir: str,
  tokenizer: str = "cq_sid",
  name: str = "eg_grpo",
  init_stage: str = "uq2sid",
  batch_size: int = 64,
  learning_rate: float = 1e-5,
  seed: int = 0,
  eval_requests: int = 1000,
  eval_beam_sizes: tuple[int, ...] = (1, 10),
):
  """Runs EG-GRPO from the SFT generator; writes WORKDIR/rl/<tokenizer>/<name>/metrics.json."""
  catalog, logs = data_job.load_data(workdir)
  sid = tables.load_sid_artefacts(paths.sid_dir(workdir, tokenizer))
  init_dir = paths.sft_dir(workdir, tokenizer, init_stage)
  generator, reference_params = sft.load_generator(init_dir)
  vocab = sft.text_vocabulary(workdir).as_seqio_vocabulary()
  config = eg_grpo.EgGrpoConfig()
  out_dir = paths.rl_dir(workdir, tokenizer, name)
  arrays = rl_examples(catalog, logs, sid.tables.item_sid, vocab, generator)
  logging.info(
    "RL %s/%s: %d train requests, K=%d", tokenizer, name, len(arrays["prompt"]), config.num_experts
  )

  mesh = partitioning.make_mesh()
  rules = partitioning.logical_rules()
  with jax.transfer_guard("allow"):
    trie = trie_lib.build_trie_index(sid.tables.sids, generator.layout.sid_level_sizes)
    trie = jax.device_put(trie, partitioning.replicated(mesh))
    reference = jax.device_put(
      reference_params, decoder.param_shardings(generator.model_config, mesh, rules)
    )
  policy = PolicyFunctions(generator, config, trie)
  model = decoder.Decoder(generator.model_config)
  task = eg_grpo.EgGrpoTask(
    config,
    policy.logprob,
    init_fn=lambda rng, batch: model.init(rng, jnp.asarray(batch["prompt"][:1])),
  )
  trainer_config = dataclasses.replace(
    trainer.TrainerConfig(), init_checkpoint=os.path.join(init_dir, "checkpoints"), seed=seed
  )
  schedule = optim.make_schedule(
    total_steps=trainer_config.num_steps, learning_rate=learning_rate, schedule="constant"
  )
  runner = trainer.Trainer(
    task,
    out_dir,
    config=trainer_config,
    mesh=mesh,
    rules=rules,
    schedule=schedule,
    optimizer=optim.make_optimizer(schedule),
  )
  rollout_fn = eg_grpo.make_rollout(config, policy.sample, policy.logprob)
  replicated = partitioning.replicated(mesh)

  # Every rollout field is batch-major: keep them on the trainer's batch sharding.
  @functools.partial(jax.jit, out_shardings=partitioning.batch_sharding(mesh, rules))
  def rollout(params, batch, key, step):
    return rollout_fn(params, reference, batch, jax.random.fold_in(key, step))

  with jax.transfer_guard("allow"):
    rollout_key = jax.device_put(jax.random.key(seed + 7), replicated)

  def prepare_batch(state, batch, step):
    # One update per rollout: the old policy is the current one. Keyed by the step,
    # so a resumed run draws the same samples.
    return rollout(state.params, batch, rollout_key, jax.device_put(np.int32(step), replicated))

  result = runner.fit(batching.epoch_batches(arrays, batch_size, seed), prepare_batch=prepare_batch)
  runner.close()
  if result.preempted:
    return {"preempted": True}
  params = jax.device_get(result.state.params)
  metrics = {"train": result.last_metrics, "num_experts": config.num_experts, "seed": seed}
  metrics["eval"] = evaluate_policy(
    workdir, catalog, logs, sid, generator, params, eval_requests, eval_beam_sizes
  )
  io_utils.write_json(os.path.join(out_dir, "metrics.json"), metrics)
  return metrics


def evaluate_policy(workdir, catalog, logs, sid, generator, params, requests, beams):
  """clk@k / exp@k of a policy on the evaluation sample (the evaluate job's test sample)."""
  rows = protocol.sample_requests(logs, "test", requests, seed=0)
  sample = logs.select(rows)
  vocab = sft.text_vocabulary(workdir).as_seqio_vocabulary()
  prompts = protocol.request_prompts(
    "uq2sid", catalog, sample, "test", sid.tables.item_sid, vocab, generator
  )
  retriever = retrieval.Retriever(
    params, generator.model_config, generator.layout, sid.tables, catalog.efficiency_score
  )
  values = protocol.score_generator(
    retriever, prompts, sample, sid.tables.item_sid, beams, truncation_items=1000
  )
  return protocol.summarize(values, 1000, resamples=stats.RESAMPLES)
