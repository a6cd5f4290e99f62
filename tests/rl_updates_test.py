"""Tests for gr_jax/rl/updates.py: several updates per rollout, through the real EG-GRPO task."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gr_jax.rl import eg_grpo, updates

LEVELS, VOCAB, QUERIES, GROUP = 2, 6, 8, 6


def logprob_fn(params, batch, sids):
  """A tabular policy: p(s | query) = prod_l softmax(logits[query, l])[s_l]."""
  table = jax.nn.log_softmax(params["logits"][batch["query"]], axis=-1)  # [B, L, V]
  table = jnp.broadcast_to(table[:, None], sids.shape[:2] + table.shape[1:])  # [B, G, L, V]
  return jnp.take_along_axis(table, sids[..., None], axis=-1)[..., 0]  # [B, G, L]


def sample_fn(params, batch, rng):
  logits = params["logits"][batch["query"]]  # [B, L, V]
  shape = (logits.shape[0], GROUP, LEVELS)
  sampled = jax.random.categorical(rng, logits[:, None], shape=shape).astype(jnp.int32)
  return sampled, jnp.ones(shape[:2], bool)


def _batch():
  batch = {"query": np.arange(QUERIES, dtype=np.int32)}
  for name in ("purchased", "clicked", "exposed"):
    sids = np.zeros((QUERIES, 2, LEVELS), np.int32)
    sids[:, 0] = np.stack([np.arange(QUERIES) % VOCAB, np.zeros(QUERIES, int)], -1)
    sids[:, 1] = np.stack([np.arange(QUERIES) % VOCAB, np.ones(QUERIES, int)], -1)
    mask = np.zeros((QUERIES, 2), bool)
    mask[:, 0] = name != "purchased"
    mask[:, 1] = name == "exposed"
    batch[name], batch[name + "_mask"] = sids, mask
  return batch


def test_schedule_positions_and_batch_checks():
  schedule = updates.UpdateSchedule(epochs=2, minibatches=3)
  assert schedule.updates_per_rollout == 6
  assert [schedule.position(s) for s in (0, 1, 3, 5, 6, 13)] == [
    (0, 0, 0),
    (0, 0, 1),
    (0, 1, 0),
    (0, 1, 2),
    (1, 0, 0),
    (2, 0, 1),
  ]
  schedule.check_batch(48, data_ways=8)  # 16 per minibatch, two per device
  with pytest.raises(ValueError, match="minibatches=3 must cut the rollout batch of 32"):
    schedule.check_batch(32, data_ways=8)
  with pytest.raises(ValueError, match="UpdateSchedule.epochs must be >= 1"):
    updates.UpdateSchedule(epochs=0)
  batches = updates.cycle_batches(lambda cycle: {"cycle": cycle}, schedule)
  assert [batches(s)["cycle"] for s in (0, 5, 6, 12)] == [0, 0, 1, 2]


def test_each_epoch_visits_every_row_once_in_a_new_order():
  rollout = {"row": jnp.arange(12), "pair": jnp.arange(24).reshape(12, 2)}
  orders = []
  for epoch in range(2):
    key = jax.random.fold_in(jax.random.key(0), epoch)
    parts = [
      updates.select_minibatch(rollout, key, minibatches=3, index=jnp.int32(m)) for m in range(3)
    ]
    assert all(p["row"].shape == (4,) for p in parts)
    np.testing.assert_array_equal(parts[0]["pair"][:, 0], 2 * parts[0]["row"])  # rows kept whole
    order = np.concatenate([p["row"] for p in parts])
    np.testing.assert_array_equal(np.sort(order), np.arange(12))
    orders.append(order)
  assert not np.array_equal(orders[0], orders[1])
  assert updates.select_minibatch(rollout, key, minibatches=1, index=0) is rollout


def _numpy_clipped_loss(logp_new, logp_old, advantages, mask, eps):
  """Token-level clipped surrogate, written out (no KL, no LUFFY)."""
  ratio = np.exp(logp_new - logp_old)  # [B, G, L]
  adv = advantages[:, :, None]
  surrogate = np.minimum(ratio * adv, np.clip(ratio, 1 - eps, 1 + eps) * adv)
  weights = np.broadcast_to(mask[:, :, None], ratio.shape)
  clipped = ((adv > 0) & (ratio > 1 + eps)) | ((adv < 0) & (ratio < 1 - eps))
  return -surrogate[weights].mean(), clipped[weights].mean()


def test_later_updates_on_one_rollout_move_the_ratio_and_clip():
  config = eg_grpo.EgGrpoConfig(group_size=GROUP, num_experts=2, kl_weight=0.0)
  task = eg_grpo.EgGrpoTask(config, logprob_fn, init_fn=None)
  make_rollout = eg_grpo.make_rollout(config, sample_fn, logprob_fn)
  schedule = updates.UpdateSchedule(epochs=3, minibatches=1)
  drawn = []

  def rollout(params, batch, cycle):
    drawn.append(cycle)
    return jax.jit(make_rollout)(params, params, batch, jax.random.key(cycle))

  cycles = updates.RolloutCycles(schedule, rollout, lambda batch, cycle, epoch, minibatch: batch)
  params = {"logits": jax.random.normal(jax.random.key(1), (QUERIES, LEVELS, VOCAB))}
  optimizer = optax.sgd(100.0)  # large steps: the second update's ratio leaves the clip range
  opt_state = optimizer.init(params)
  grad_fn = jax.jit(
    jax.value_and_grad(lambda p, b: task.loss({"params": p}, b, None), has_aux=True)
  )
  state = type("State", (), {})()
  seen = []
  for step in range(4):
    state.params = params
    batch = cycles(state, _batch(), step)
    (loss, (metrics, _)), grads = grad_fn(params, batch)
    seen.append((batch, params, float(loss), metrics))
    step_updates, opt_state = optimizer.update(grads, opt_state)
    params = optax.apply_updates(params, step_updates)
  assert drawn == [0, 1]  # one rollout for steps 0-2, the next at step 3
  first, second = seen[0][3], seen[1][3]
  np.testing.assert_allclose(first["ratio_mean"], 1.0, rtol=1e-6)
  assert float(first["clip_fraction"]) == 0.0
  assert abs(float(second["ratio_mean"]) - 1.0) > 1e-3
  assert float(second["clip_fraction"]) > 0.0
  batch, step_params = seen[1][0], seen[1][1]
  logp_new = np.asarray(logprob_fn(step_params, batch, batch["group_sids"]))
  want_loss, want_clip = _numpy_clipped_loss(
    logp_new,
    np.asarray(batch["logp_old"]),
    np.asarray(batch["advantages"]),
    np.asarray(batch["group_mask"]),
    config.clip_eps,
  )
  np.testing.assert_allclose(seen[1][2], want_loss, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(second["clip_fraction"], want_clip, rtol=1e-6)
  # Step 3 starts a new cycle: a fresh rollout from the current params, ratio 1 again.
  np.testing.assert_allclose(seen[3][3]["ratio_mean"], 1.0, rtol=1e-6)
