"""The generator seen as an RL policy: training examples from the logs, sampling,
teacher-forced log-probs, and the trainer hook that rolls out one group per request.
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

from gr_jax.data import schema
from gr_jax.decoding import sampling
from gr_jax.eval import online as online_lib
from gr_jax.eval import protocol, rl_table
from gr_jax.models import decoder
from gr_jax.models import generator as generator_lib
from gr_jax.rl import eg_grpo, updates
from gr_jax.serving.retriever import generator_retriever
from gr_jax.train import partitioning


def feedback_sids(items: np.ndarray, item_sid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """[B, M] item ids (PAD_ITEM-padded) -> ([B, M, L] SIDs, [B, M] mask)."""
  mask = items != schema.PAD_ITEM
  return item_sid[np.maximum(items, 0)].astype(np.int32), mask


def rl_examples(
  catalog, logs, item_sid, vocab, generator: generator_lib.Generator, split: str = "train"
):
  """Prompts, logged feedback and log rows ('request_row') of every `split` request with
  at least one click."""
  rows = np.flatnonzero((logs.split == schema.SPLITS.index(split)) & (logs.clicked >= 0).any(-1))
  selected = logs.select(rows)
  prompts = protocol.request_prompts("uq2sid", catalog, selected, split, item_sid, vocab, generator)
  arrays = {"prompt": prompts, "request_row": rows.astype(np.int32)}
  for name in ("purchased", "clicked", "exposed"):
    arrays[name], arrays[f"{name}_mask"] = feedback_sids(getattr(selected, name), item_sid)
  return arrays


class PolicyFunctions:
  """The generator seen as an RL policy: sampling and teacher-forced log-probs."""

  def __init__(self, generator: generator_lib.Generator, config: eg_grpo.EgGrpoConfig, trie):
    self.generator = generator
    self.config = config
    self.trie = trie

  def logprob(self, params, batch, sids):
    """[B, G, L] SID codes -> [B, G, L] log p(token | prompt, earlier SID tokens)."""
    return generator_lib.sequence_log_probs(params, self.generator, batch["prompt"], sids)

  def sample(self, params, batch, rng):
    """G SIDs per prompt from the current policy -> ([B, G, L] codes, [B, G] valid)."""
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


def make_prepare_batch(
  config,
  policy: PolicyFunctions,
  reference,
  mesh,
  rules,
  seed: int,
  schedule: updates.UpdateSchedule | None = None,
  reward_fn: eg_grpo.RewardFn | None = None,
):
  """The trainer's `prepare_batch` hook: one jitted rollout per cycle, one minibatch per step.

  A cycle is `schedule.updates_per_rollout` steps (gr_jax/rl/updates.py); with the
  default schedule every step is a cycle, so the old policy is the current one.
  Rollouts are keyed by the cycle and minibatch permutations by (cycle, epoch), so
  a resumed run draws the same samples as the uninterrupted one. `reward_fn`: the
  rollout's reward (None: the logged-feedback one).
  """
  schedule = schedule or updates.UpdateSchedule()
  rollout_fn = eg_grpo.make_rollout(config, policy.sample, policy.logprob, reward_fn)
  replicated = partitioning.replicated(mesh)
  # Every rollout field is batch-major: keep them on the trainer's batch sharding.
  batch_sharding = partitioning.batch_sharding(mesh, rules)

  @functools.partial(jax.jit, out_shardings=batch_sharding)
  def rollout(params, batch, key, cycle):
    return rollout_fn(params, reference, batch, jax.random.fold_in(key, cycle))

  @functools.partial(jax.jit, out_shardings=batch_sharding)
  def select(rollout_batch, key, cycle, epoch, index):
    key = jax.random.fold_in(jax.random.fold_in(key, cycle), epoch)
    return updates.select_minibatch(
      rollout_batch, key, minibatches=schedule.minibatches, index=index
    )

  with jax.transfer_guard("allow"):
    rollout_key = jax.device_put(jax.random.key(seed + 7), replicated)
    order_key = jax.device_put(jax.random.key(seed + 11), replicated)

  def on_device(value: int):
    return jax.device_put(np.int32(value), replicated)

  def draw(params, batch, cycle):
    return rollout(params, batch, rollout_key, on_device(cycle))

  def pick(rollout_batch, cycle, epoch, minibatch):
    if schedule.minibatches == 1:
      return rollout_batch
    return select(rollout_batch, order_key, *map(on_device, (cycle, epoch, minibatch)))

  return updates.RolloutCycles(schedule, draw, pick)


class PolicyEvaluation:
  """The policy's clk@k / exp@k on a split's requests, during RL and at its end.

  Args:
    generator: the policy's generator (layout, model config, prompt length).
    sid_tables: the SID -> items table.
    catalog, logs, vocab: the run's data and text vocabulary (seqio).
    mesh, rules: where the policy's params live.
    world: the simulated world behind the data (its users score the policy online), or
      None for real data.
  """

  def __init__(self, generator, sid_tables, catalog, logs, vocab, *, mesh, rules, world=None):
    self.generator = generator
    self.sid_tables = sid_tables
    self.catalog, self.logs, self.vocab = catalog, logs, vocab
    self.mesh, self.rules = mesh, rules
    self.online = online_lib.for_world(world, catalog.num_items)

  def __call__(self, params, *, split: str, requests: int, beams, keep: str | None = None):
    """{beam: summary} (protocol.summarize) of `params` on `requests` requests of `split`.

    `keep`: where to write the per-request values (an .npz), for paired tables.
    """
    retriever = generator_retriever(
      self.generator,
      params,
      self.sid_tables,
      self.catalog.efficiency_score,
      mesh=self.mesh,
      rules=self.rules,
    )
    return protocol.evaluate_policy(
      retriever,
      self.generator,
      self.catalog,
      self.logs,
      self.sid_tables.item_sid,
      self.vocab,
      requests,
      beams,
      online=self.online,
      split=split,
      keep=keep,
    )

  def final(self, params, sft_params, out_dir: str, *, valid_requests, test_requests, beams):
    """The end of a run: the policy and its SFT start on valid and test, paired on valid.

    Returns {'valid', 'valid_sft', 'eval', 'eval_sft'} (summaries; 'eval' is test) and
    'valid_vs_sft': the paired differences policy - SFT on valid, the split a sweep
    selects on. The per-request values of all four are kept in `out_dir`.
    """
    runs = (
      ("valid", "valid", valid_requests, params, rl_table.VALID_POLICY_VALUES),
      ("valid_sft", "valid", valid_requests, sft_params, rl_table.VALID_SFT_VALUES),
      ("eval", "test", test_requests, params, rl_table.POLICY_VALUES),
      ("eval_sft", "test", test_requests, sft_params, rl_table.SFT_VALUES),
    )
    out = {}
    for key, split, requests, values, file in runs:
      keep = os.path.join(out_dir, file)
      out[key] = self(values, split=split, requests=requests, beams=beams, keep=keep)
    with (
      np.load(os.path.join(out_dir, rl_table.VALID_POLICY_VALUES)) as policy,
      np.load(os.path.join(out_dir, rl_table.VALID_SFT_VALUES)) as sft,
    ):
      out["valid_vs_sft"] = rl_table.paired_gains(dict(policy), dict(sft))
    return out

  def curve_point(self, requests: int):
    """The trainer's eval hook: (state, step) -> valid clk@1 / clk@10 / exp@10 (+ online)."""

    def evaluate(state, step):
      del step
      summary = self(state.params, split="valid", requests=requests, beams=(1, 10))
      point = {
        "clk@1": summary[1]["clk"],
        "clk@10": summary[10]["clk"],
        "exp@10": summary[10]["exp"],
      }
      if "onclk" in summary[10]:
        point["onclk@1"], point["onclk@10"] = summary[1]["onclk"], summary[10]["onclk"]
      return point

    return evaluate
