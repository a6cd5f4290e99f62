import math

import jax.numpy as jnp
import numpy as np
import pytest

from gr_jax.rl import advantages

# Enlarged groups of G = 3 samples + K = 2 experts (the last two members).
REWARDS = jnp.array(
  [
    [0.1, 0.1, 0.0, 1.0, 0.5],  # samples valid / valid / invalid, experts clicked / exposed
    [0.1, 0.1, 0.1, 1.0, 7.0],  # only one expert exists: the 7.0 slot is masked
    [0.1, 0.1, 0.1, 0.1, 0.1],  # zero spread
    [10.1, 10.1, 10.0, 11.0, 10.5],  # group 0 shifted by 10: same advantages
  ],
  jnp.float32,
)
MASK = jnp.array([[True] * 5, [True] * 4 + [False], [True] * 5, [True] * 5])


def test_grpo_on_hand_examples_with_experts():
  got = advantages.get_advantage_estimator("grpo")(REWARDS, MASK, 1e-6)
  # Group 0: mean 1.7 / 5 = 0.34; deviations below; variance
  # (0.24^2 + 0.24^2 + 0.34^2 + 0.66^2 + 0.16^2) / 5 = 0.692 / 5 = 0.1384.
  std0 = math.sqrt(0.1384)
  expected0 = np.array([-0.24, -0.24, -0.34, 0.66, 0.16]) / (std0 + 1e-6)
  # Group 1 (4 members): mean 1.3 / 4 = 0.325; variance (3 * 0.225^2 + 0.675^2) / 4 = 0.151875.
  std1 = math.sqrt(0.151875)
  expected1 = np.array([-0.225, -0.225, -0.225, 0.675, 0.0]) / (std1 + 1e-6)
  np.testing.assert_allclose(got.advantages[0], expected0, rtol=1e-5)
  np.testing.assert_allclose(got.advantages[1], expected1, rtol=1e-5)
  np.testing.assert_allclose(got.advantages[2], np.zeros(5), atol=1e-6)
  # Statistics are per group: a batch-wide mean would give group 3 large positive values.
  np.testing.assert_allclose(got.advantages[3], expected0, rtol=1e-4)
  np.testing.assert_array_equal(got.zero_spread, [False, False, True, False])
  assert got.advantages[1, 4] == 0.0  # masked member


def test_dr_grpo_is_centred_reward_without_std():
  got = advantages.get_advantage_estimator("dr_grpo")(REWARDS, MASK, 1e-6)
  np.testing.assert_allclose(got.advantages[0], [-0.24, -0.24, -0.34, 0.66, 0.16], atol=1e-6)
  np.testing.assert_allclose(got.advantages[1], [-0.225, -0.225, -0.225, 0.675, 0.0], atol=1e-6)
  np.testing.assert_allclose(got.advantages[3], got.advantages[0], atol=1e-5)
  np.testing.assert_array_equal(got.zero_spread, [False, False, True, False])


def test_empty_group_is_zero_spread_and_finite():
  rewards = jnp.array([[1.0, 0.0]])
  got = advantages.grpo_advantages(rewards, jnp.zeros((1, 2), bool))
  np.testing.assert_array_equal(got.advantages, [[0.0, 0.0]])
  assert bool(got.zero_spread[0])


def test_registry(monkeypatch):
  monkeypatch.setattr(advantages, "_ESTIMATORS", dict(advantages._ESTIMATORS))
  with pytest.raises(ValueError, match="known: .*dr_grpo.*grpo"):
    advantages.get_advantage_estimator("ppo")
  with pytest.raises(ValueError, match="already registered"):
    advantages.register_advantage_estimator("grpo")(advantages.grpo_advantages)

  @advantages.register_advantage_estimator("raw")
  def raw(rewards, member_mask, eps):
    del eps
    return advantages.Advantages(rewards * member_mask, jnp.zeros(rewards.shape[:1], bool))

  assert advantages.get_advantage_estimator("raw") is raw
  with pytest.raises(ValueError, match="rewards"):
    advantages.grpo_advantages(jnp.zeros((2, 3)), jnp.ones((2, 4), bool))
