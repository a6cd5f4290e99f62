import glob
import os

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gr_jax.jobs import rl as rl_job  # noqa: F401  (registers train_rl for the rl/*.gin files)
from gr_jax.rl import eg_grpo, rewards, simulated_reward, updates

LEVELS, VOCAB = 2, 6
GIN_DIR = os.path.join(os.path.dirname(__file__), "..", "gin_configs", "rl")


# A tiny softmax policy: one table of logits per level for each query id,
# p(s | query) = prod_l softmax(logits[query, l])[s_l].
def logprob_fn(params, batch, sids):
  table = jax.nn.log_softmax(params["logits"][batch["query"]], axis=-1)  # [B, L, V]
  table = jnp.broadcast_to(table[:, None], sids.shape[:2] + table.shape[1:])  # [B, N, L, V]
  return jnp.take_along_axis(table, sids[..., None], axis=-1)[..., 0]  # [B, N, L]


def fixed_sample_fn(params, batch, rng):
  """Replays the samples stored in the batch, so that rollouts are deterministic."""
  del params, rng
  return batch["samples"], batch["samples_valid"]


def categorical_sample_fn(params, batch, rng, group_size=8):
  logits = params["logits"][batch["query"]]  # [B, L, V]
  batch_size = logits.shape[0]
  sampled = jax.random.categorical(rng, logits[:, None], shape=(batch_size, group_size, LEVELS))
  # Level-0 code VOCAB - 1 does not exist in this toy item pool.
  return sampled.astype(jnp.int32), sampled[..., 0] != VOCAB - 1


def _pad(rows, num_rows):
  array = np.zeros((len(rows), num_rows, LEVELS), np.int32)
  mask = np.zeros((len(rows), num_rows), bool)
  for b, sids in enumerate(rows):
    for m, sid in enumerate(sids):
      array[b, m], mask[b, m] = sid, True
  return array, mask


def _batch(query, samples, purchased, clicked, exposed):
  batch = {"query": np.asarray(query, np.int32), "samples": np.asarray(samples, np.int32)}
  batch["samples_valid"] = np.ones(batch["samples"].shape[:2], bool)
  for name, rows in (("purchased", purchased), ("clicked", clicked), ("exposed", exposed)):
    batch[name], batch[name + "_mask"] = _pad(rows, 3)
  return batch


def _config(**overrides):
  return eg_grpo.EgGrpoConfig(**{"group_size": 4, **overrides})


def test_gradient_step_raises_logprob_of_sample_whose_reward_was_raised():
  config = _config(num_experts=2)
  samples = [[(0, 0), (1, 1), (2, 2), (3, 3)]]
  target = jnp.array([[(1, 1)]], jnp.int32)
  # Same samples; in run "raised" the sample (1, 1) was also clicked.
  baseline = _batch([0], samples, [[]], [[(4, 4)]], [[(5, 5)]])
  raised = _batch([0], samples, [[]], [[(4, 4), (1, 1)]], [[(5, 5)]])
  task = eg_grpo.EgGrpoTask(
    config, logprob_fn, lambda rng, batch: {"params": {"logits": jnp.zeros((1, LEVELS, VOCAB))}}
  )
  variables = task.init(jax.random.key(0), baseline)
  rollout = eg_grpo.make_rollout(config, fixed_sample_fn, logprob_fn)
  optimizer = optax.sgd(1.0)

  @jax.jit
  def updated_target_logp(batch):
    rollout_batch = rollout(variables["params"], variables["params"], batch, jax.random.key(1))
    grads = jax.grad(lambda p: task.loss({"params": p}, rollout_batch, jax.random.key(2))[0])(
      variables["params"]
    )
    updates, _ = optimizer.update(grads, optimizer.init(variables["params"]))
    params = optax.apply_updates(variables["params"], updates)
    return logprob_fn(params, batch, target).sum(), rollout_batch

  before = float(logprob_fn(variables["params"], baseline, target).sum())
  after_baseline, rollout_baseline = updated_target_logp(baseline)
  after_raised, rollout_raised = updated_target_logp(raised)
  after_baseline, after_raised = float(after_baseline), float(after_raised)
  np.testing.assert_allclose(rollout_baseline["rewards"][0, 1], 0.1)
  np.testing.assert_allclose(rollout_raised["rewards"][0, 1], 1.0)
  assert after_raised > before > after_baseline


def test_permuting_the_batch_permutes_everything_per_row():
  config = _config(num_experts=2, kl_weight=0.5)
  # Each row has at most K = 2 distinct logged SIDs, so the expert draw is deterministic.
  batch = _batch(
    query=[0, 1, 2, 3],
    samples=[
      [(1, 1), (2, 2), (1, 1), (5, 0)],
      [(3, 3), (3, 3), (3, 3), (3, 3)],
      [(0, 1), (1, 0), (2, 3), (4, 4)],
      [(2, 2), (0, 0), (3, 1), (1, 3)],
    ],
    purchased=[[(1, 1)], [], [], [(0, 0)]],
    clicked=[[(1, 1)], [], [], [(0, 0), (2, 2)]],
    exposed=[[(1, 1), (2, 2)], [(4, 1), (0, 2)], [], [(2, 2)]],
  )
  batch["samples_valid"][0, 3] = False
  keys = jax.random.split(jax.random.key(0), 3)
  old = {"logits": jax.random.normal(keys[0], (4, LEVELS, VOCAB))}
  ref = {"logits": jax.random.normal(keys[1], (4, LEVELS, VOCAB))}
  current = {"logits": old["logits"] + 0.3 * jax.random.normal(keys[2], (4, LEVELS, VOCAB))}
  rollout = jax.jit(eg_grpo.make_rollout(config, fixed_sample_fn, logprob_fn))
  task = eg_grpo.EgGrpoTask(config, logprob_fn, init_fn=None)
  perm = np.array([2, 0, 3, 1])
  permuted_batch = {key: value[perm] for key, value in batch.items()}

  original = rollout(old, ref, batch, jax.random.key(5))
  permuted = rollout(old, ref, permuted_batch, jax.random.key(6))
  for key in eg_grpo.ROLLOUT_KEYS:
    np.testing.assert_allclose(
      permuted[key], np.asarray(original[key])[perm], atol=1e-6, err_msg=key
    )
  # The groups are not all alike, so a row mix-up could not go unnoticed.
  assert len({tuple(np.round(row, 4)) for row in np.asarray(original["advantages"])}) == 4
  loss_terms = jax.jit(task.loss_terms)
  _, terms = loss_terms(current, original)
  _, permuted_terms = loss_terms(current, permuted)
  for name, value in terms._asdict().items():
    np.testing.assert_allclose(
      getattr(permuted_terms, name), np.asarray(value)[perm], atol=1e-6, err_msg=name
    )
  task_loss = jax.jit(task.loss)
  loss, (metrics, _) = task_loss({"params": current}, original, jax.random.key(0))
  permuted_loss, (permuted_metrics, _) = task_loss({"params": current}, permuted, jax.random.key(0))
  np.testing.assert_allclose(permuted_loss, loss, rtol=1e-6)
  for name, value in metrics.items():
    np.testing.assert_allclose(permuted_metrics[name], value, rtol=1e-5, atol=1e-7, err_msg=name)
  # Expected groups: row 1 has no clicks, its experts are the two exposed SIDs.
  np.testing.assert_array_equal(original["group_sids"][1, 4:], [(4, 1), (0, 2)])
  np.testing.assert_allclose(original["rewards"][1], [0.1] * 4 + [0.5, 0.5])
  # Row 2 has no logged feedback: both expert slots masked, all samples 0.1 -> zero spread.
  np.testing.assert_array_equal(original["group_mask"][2], [True] * 4 + [False] * 2)
  assert bool(original["zero_spread"][2]) and not bool(original["zero_spread"][0])
  # Row 0: purchased (1, 1) twice, exposed (2, 2), invalid (5, 0); experts (1, 1), (2, 2).
  np.testing.assert_allclose(original["rewards"][0], [1.0, 0.5, 1.0, 0.0, 1.0, 0.5])


def test_first_update_ratio_is_one_and_metrics_are_reported():
  config = _config(group_size=8, num_experts=2)
  queries = 8
  params = {"logits": 2.0 * jax.random.normal(jax.random.key(0), (queries, LEVELS, VOCAB))}
  clicked = [[(b % VOCAB, 0)] for b in range(queries)]
  exposed = [[(b % VOCAB, 1), (b % VOCAB, 0)] for b in range(queries)]
  batch = _batch(np.arange(queries), np.zeros((queries, 8, LEVELS)), [[]] * 8, clicked, exposed)
  del batch["samples"], batch["samples_valid"]
  rollout = jax.jit(eg_grpo.make_rollout(config, categorical_sample_fn, logprob_fn))
  task = eg_grpo.EgGrpoTask(config, logprob_fn, init_fn=None)
  rollout_batch = rollout(params, params, batch, jax.random.key(3))
  loss, (metrics, collections) = jax.jit(task.loss)({"params": params}, rollout_batch, None)
  assert collections == {}
  np.testing.assert_allclose(metrics["ratio_mean"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(metrics["kl"], 0.0, atol=1e-7)
  assert float(metrics["clip_fraction"]) == 0.0
  # GRPO advantages sum to 0 per group: at ratio 1 the loss reads 0 by construction.
  np.testing.assert_allclose(loss, 0.0, atol=1e-5)
  valid = np.asarray(rollout_batch["sid_valid"])[:, :8]
  np.testing.assert_allclose(metrics["sample_valid_rate"], valid.mean(), rtol=1e-6)
  assert 0.0 < valid.mean() < 1.0
  np.testing.assert_allclose(metrics["expert_fill"], 1.0)
  # One clicked (1.0) and one exposed-only (0.5) expert per group.
  np.testing.assert_allclose(metrics["reward_mean_expert"], 0.75)
  np.testing.assert_allclose(metrics["reward_std_expert"], 0.25)
  sampled = np.asarray(rollout_batch["rewards"])[:, :8]
  np.testing.assert_allclose(metrics["reward_mean_sampled"], sampled.mean(), rtol=1e-5)
  logp = np.asarray(rollout_batch["logp_old"])[:, :8]
  np.testing.assert_allclose(metrics["entropy_proxy"], -logp.mean(), rtol=1e-5)


def test_sharded_batch_gives_the_unsharded_result():
  config = _config(group_size=4, num_experts=2)
  queries = 8
  params = {"logits": jax.random.normal(jax.random.key(0), (queries, LEVELS, VOCAB))}
  current = {"logits": params["logits"] * 1.5}
  rows = [[(b % VOCAB, 1), (2, b % 3)] for b in range(queries)]
  batch = _batch(np.arange(queries), np.zeros((queries, 4, LEVELS)), [[]] * 8, rows[::-1], rows)
  del batch["samples"], batch["samples_valid"]
  sample_fn = lambda p, b, r: categorical_sample_fn(p, b, r, group_size=4)
  rollout = eg_grpo.make_rollout(config, sample_fn, logprob_fn)
  task = eg_grpo.EgGrpoTask(config, logprob_fn, init_fn=None)

  def step(params, current, batch, rng):
    rollout_batch = rollout(params, params, batch, rng)
    return jax.value_and_grad(lambda p: task.loss({"params": p}, rollout_batch, rng)[0])(current)

  want_loss, want_grad = jax.jit(step)(params, current, batch, jax.random.key(1))
  mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
  sharded = jax.device_put(batch, NamedSharding(mesh, PartitionSpec("data")))
  with jax.set_mesh(mesh):
    loss, grad = jax.jit(step)(params, current, sharded, jax.random.key(1))
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  np.testing.assert_allclose(grad["logits"], want_grad["logits"], rtol=1e-4, atol=1e-7)


def test_bad_inputs_raise_clear_errors():
  config = _config()
  rollout = eg_grpo.make_rollout(config, fixed_sample_fn, logprob_fn)
  batch = _batch([0], [[(0, 0)] * 3], [[]], [[]], [[]])  # 3 samples, config says 4
  params = {"logits": jnp.zeros((1, LEVELS, VOCAB))}
  with pytest.raises(ValueError, match="group_size=4"):
    rollout(params, params, batch, jax.random.key(0))
  del batch["clicked_mask"]
  with pytest.raises(ValueError, match="clicked_mask"):
    rollout(params, params, batch, jax.random.key(0))
  task = eg_grpo.EgGrpoTask(config, logprob_fn, init_fn=None)
  with pytest.raises(ValueError, match="make_rollout"):
    task.loss({"params": params}, batch, None)
  with pytest.raises(ValueError, match="advantage estimator 'ppo'"):
    eg_grpo.EgGrpoConfig(advantage_estimator="ppo")
  with pytest.raises(ValueError, match="EgGrpoConfig.clip_eps"):
    eg_grpo.EgGrpoConfig(clip_eps=0.0)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(GIN_DIR, "*.gin"))))
def test_gin_configs_parse(path):
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings([os.path.join(GIN_DIR, "eg_grpo.gin"), path], [])
    config = eg_grpo.EgGrpoConfig()
    weights = simulated_reward.SimulatedRewardWeights()
    bound = gin.get_bindings("train_rl")  # {name: value} of the bound parameters
    schedule = updates.UpdateSchedule()
  finally:
    gin.clear_config()
  name = os.path.basename(path)
  expected_experts = {"grpo_k0.gin": 0, "eg_grpo_k4.gin": 4}.get(name, 2)
  operating_point = name == "operating_point.gin"
  assert config.num_experts == expected_experts
  assert config.group_size == (16 if operating_point else 8)
  assert schedule.updates_per_rollout == (4 if operating_point else 1)
  assert config.reward_values == rewards.RewardValues()
  assert config.luffy_shaping == (name == "eg_grpo_luffy.gin")
  assert config.advantage_estimator == ("dr_grpo" if name == "eg_grpo_dr.gin" else "grpo")
  simulated = name == "eg_grpo_simulated.gin"
  assert (bound.get("reward", "logged") == "simulated") == simulated and weights.clicks == 1.0
