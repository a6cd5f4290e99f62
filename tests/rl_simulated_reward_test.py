"""Tests for gr_jax/rl/simulated_reward.py on the tiny world."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gr_jax import errors
from gr_jax.data import schema
from gr_jax.data.world import simulator
from gr_jax.eval import online
from gr_jax.rl import eg_grpo, simulated_reward
from gr_jax.sid import tables


@pytest.fixture(scope="module")
def world():
  return simulator.generate_world(simulator.world_preset("tiny"))


@pytest.fixture(scope="module")
def item_sid(world):
  """Two levels: the item's leaf, then its rank within the leaf // 2 (SIDs of 1-2 items)."""
  leaf = world.catalog.category_id.astype(np.int64)
  rank = np.zeros_like(leaf)
  for value in np.unique(leaf):
    members = np.flatnonzero(leaf == value)
    rank[members] = np.arange(len(members)) // 2
  return np.stack([leaf, rank], axis=1).astype(np.int32)


@pytest.fixture(scope="module")
def reward(world, item_sid):
  sid_tables = tables.build_sid_tables(item_sid, (int(item_sid[:, 0].max()) + 1, 64))
  weights = simulated_reward.SimulatedRewardWeights(clicks=1.0, purchases=2.0)
  return simulated_reward.SimulatedReward(online.OnlineWorld(world), sid_tables, weights)


def _sids_of(item_sid, items):
  return item_sid[np.asarray(items)]  # [..., L]


def test_reward_is_the_online_expected_engagement_of_the_sids_items(world, item_sid, reward):
  rng = np.random.default_rng(0)
  rows = np.arange(30)
  sids = _sids_of(item_sid, rng.integers(0, world.catalog.num_items, (len(rows), 4)))
  sids[:, 3] = [0, 63]  # no item has this SID: it earns nothing
  got = reward(rows, sids)  # [B, 4]
  served = online.OnlineWorld(world)
  for i, row in enumerate(rows):
    for m in range(sids.shape[1]):
      items = np.flatnonzero((item_sid == sids[i, m]).all(-1)).astype(np.int32)
      if not items.size:
        assert got[i, m] == 0.0
        continue
      expected = served.serve(np.array([row]), items[None])
      want = expected["clicks"][0] + 2.0 * expected["purchases"][0]
      np.testing.assert_allclose(got[i, m], want, rtol=1e-5)
  assert got[:, :3].min() > 0.0


def test_the_sid_of_the_clicked_item_earns_more_than_a_random_sid(world, item_sid, reward):
  rows = np.flatnonzero(world.logs.clicked[:, 0] != schema.PAD_ITEM)[:400]
  random_items = np.random.default_rng(1).integers(0, world.catalog.num_items, len(rows))
  sids = np.stack(
    [_sids_of(item_sid, world.logs.clicked[rows, 0]), _sids_of(item_sid, random_items)], axis=1
  )  # [B, 2, L]
  got = reward(rows, sids)
  assert got[:, 0].mean() > 2.0 * got[:, 1].mean()
  assert (got[:, 0] > got[:, 1]).mean() > 0.7


def test_the_rollout_scores_its_group_with_the_simulated_reward(world, item_sid, reward):
  rows = np.flatnonzero(world.logs.clicked[:, 0] != schema.PAD_ITEM)[:6].astype(np.int32)
  sampled = _sids_of(item_sid, np.arange(len(rows) * 3).reshape(len(rows), 3))  # [B, G=3, L]
  clicked, clicked_mask = _sids_of(item_sid, world.logs.clicked[rows, :1]), np.ones((6, 1), bool)
  batch = {"request_row": rows, "prompt": np.zeros((6, 1), np.int32)}
  for name in eg_grpo.FEEDBACK_KEYS[::2]:
    batch[name], batch[f"{name}_mask"] = clicked, clicked_mask
  config = eg_grpo.EgGrpoConfig(group_size=3, num_experts=1)
  rollout = eg_grpo.make_rollout(
    config,
    sample_fn=lambda params, b, rng: (jnp.asarray(sampled), jnp.ones((6, 3), bool)),
    logprob_fn=lambda params, b, sids: jnp.zeros(sids.shape, jnp.float32),
    reward_fn=reward.in_rollout,
  )
  out = jax.jit(rollout)({}, {}, batch, jax.random.key(0))
  group = np.concatenate([sampled, clicked], axis=1)  # the expert is the clicked SID
  np.testing.assert_allclose(out["rewards"], reward(rows, group), rtol=1e-6)


def test_simulated_reward_needs_a_simulated_world(world, item_sid, reward):
  sid_tables = reward.sid_tables
  with pytest.raises(simulated_reward.SimulatedRewardError, match="train_rl.reward"):
    simulated_reward.make_reward_fn("simulated", None, sid_tables, world.catalog.num_items)
  with pytest.raises(simulated_reward.SimulatedRewardError, match="added after"):
    simulated_reward.make_reward_fn("simulated", world, sid_tables, world.catalog.num_items + 5)
  with pytest.raises(errors.GinConfigError, match="'logged', 'simulated'"):
    simulated_reward.make_reward_fn("clicks", world, sid_tables, world.catalog.num_items)
  assert simulated_reward.make_reward_fn("logged", None, sid_tables, 10) is None
  assert issubclass(simulated_reward.SimulatedRewardError, errors.UserError)
