"""Stage C job: EG-GRPO (or vanilla GRPO with K = 0) on top of the UQ2SID generator.

Each step samples G SIDs per request from the current policy, adds K expert SIDs
from the request's logged clicks / exposures, rewards the group (`reward`: 'logged'
feedback, or 'simulated': the world's expected clicks, gr_jax/rl/simulated_reward.py)
and takes clipped-ratio updates with a k3 KL to the frozen SFT model (gr_jax/rl),
`UpdateSchedule.epochs` x `UpdateSchedule.minibatches` per rollout batch. It runs
through the generic trainer (sharded, checkpointed, resumable; the rollout is the
`prepare_batch` hook, keyed by the step). At the end it writes clk@k / exp@k of the
policy and of its SFT start on valid and test to metrics.json.
"""

from __future__ import annotations

import dataclasses
import os

import gin
import jax
import jax.numpy as jnp
from absl import logging

from gr_jax import io_utils
from gr_jax import workdir as workdir_lib
from gr_jax.decoding import trie as trie_lib
from gr_jax.models import decoder
from gr_jax.rl import eg_grpo, policy, simulated_reward, updates
from gr_jax.train import batching, optim, partitioning, trainer


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
  valid_requests: int = 500,
  reward: str = "logged",
):
  """Runs EG-GRPO from the SFT generator; writes WORKDIR/rl/<tokenizer>/<name>/metrics.json."""
  catalog, logs = workdir_lib.load_data(workdir)
  sid = workdir_lib.load_sid(workdir, tokenizer, catalog.num_items)
  init_dir = workdir_lib.sft_dir(workdir, tokenizer, init_stage)
  workdir_lib.require_generator(workdir, tokenizer, init_stage)
  config, update_schedule = eg_grpo.EgGrpoConfig(), updates.UpdateSchedule()
  world = workdir_lib.load_world(workdir)
  reward_fn = simulated_reward.make_reward_fn(reward, world, sid.tables, catalog.num_items)
  out_dir = workdir_lib.rl_dir(workdir, tokenizer, name)
  settings = dict(batch=batch_size, lr=learning_rate, seed=seed, eval=eval_requests)
  settings.update(valid=valid_requests, reward=simulated_reward.setting(reward))
  settings.update(beams=eval_beam_sizes, grpo=str(config), updates=str(update_schedule))
  settings.update(trainer.TrainerConfig().settings())
  record = workdir_lib.rl_stage(workdir, tokenizer, name, init_stage, settings)
  if record.reuse(legacy_finished=False):
    return io_utils.read_json(os.path.join(out_dir, "metrics.json"))
  generator, reference_params = workdir_lib.load_generator(init_dir)
  vocab = workdir_lib.text_vocabulary(workdir).as_seqio_vocabulary()
  arrays = policy.rl_examples(catalog, logs, sid.tables.item_sid, vocab, generator)
  num_requests = len(arrays["prompt"])
  experts = config.num_experts
  logging.info("RL %s/%s: %d train requests, K=%d", tokenizer, name, num_requests, experts)

  mesh, rules = partitioning.make_mesh(), partitioning.logical_rules()
  with jax.transfer_guard("allow"):
    trie = trie_lib.build_trie_index(sid.tables.sids, generator.layout.sid_level_sizes)
    trie = jax.device_put(trie, partitioning.replicated(mesh))
    reference = jax.device_put(
      reference_params, decoder.param_shardings(generator.model_config, mesh, rules)
    )
  policy_fns = policy.PolicyFunctions(generator, config, trie)
  model = decoder.Decoder(generator.model_config)
  task = eg_grpo.EgGrpoTask(
    config,
    policy_fns.logprob,
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
  update_schedule.check_batch(batch_size, mesh.shape["data"] * mesh.shape["fsdp"])
  prepare = policy.make_prepare_batch(
    config, policy_fns, reference, mesh, rules, seed, update_schedule, reward_fn
  )
  evaluation = policy.PolicyEvaluation(
    generator, sid.tables, catalog, logs, vocab, mesh=mesh, rules=rules, world=world
  )
  result = runner.fit(
    updates.cycle_batches(batching.epoch_batches(arrays, batch_size, seed), update_schedule),
    prepare_batch=prepare,
    eval_fn=evaluation.curve_point(valid_requests) if trainer_config.eval_every else None,
  )
  runner.close()
  if result.preempted:
    return {"preempted": True}
  metrics = {"train": result.last_metrics, "num_experts": config.num_experts, "seed": seed}
  params = jax.device_get(result.state.params)
  metrics |= evaluation.final(
    params, reference_params, out_dir,
    valid_requests=valid_requests, test_requests=eval_requests, beams=eval_beam_sizes,
  )  # fmt: skip
  io_utils.write_json(os.path.join(out_dir, "metrics.json"), metrics)
  record.finish()
  return metrics
