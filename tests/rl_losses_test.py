import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gr_jax.rl import losses

B, N, L = 3, 5, 4


def _example(seed=0):
  rng = np.random.default_rng(seed)
  logp_old = np.log(rng.uniform(0.05, 0.9, (B, N, L))).astype(np.float32)
  # Log-ratios spread over both clip boundaries (eps 0.2 -> |log ratio| > ~0.2).
  logp_new = (logp_old + rng.uniform(-0.6, 0.6, (B, N, L))).astype(np.float32)
  logp_ref = (logp_old + rng.uniform(-1.0, 1.0, (B, N, L))).astype(np.float32)
  adv = rng.normal(size=(B, N)).astype(np.float32)
  member_mask = np.ones((B, N), bool)
  member_mask[0, 4] = False  # a masked expert slot
  member_mask[2, 1] = False  # a deduplicated sample
  is_expert = np.zeros((B, N), bool)
  is_expert[:, 3:] = True
  # Garbage on a masked member must not matter.
  logp_new[0, 4] = 50.0
  return logp_new, logp_old, logp_ref, adv, member_mask, is_expert


def _numpy_loss(logp_new, logp_old, logp_ref, adv, mask, expert, eps, kl_w, kl_c, kl_exp, luffy, g):
  """The loss written token by token, independently of the library."""
  pg_sum, pg_count, kl_sum, kl_count = 0.0, 0, 0.0, 0
  clipped, ratio_count = 0, 0
  for b, n, t in itertools.product(range(B), range(N), range(L)):
    if not mask[b, n]:
      continue
    a = float(adv[b, n])
    if luffy and expert[b, n]:
      p = math.exp(logp_new[b, n, t])
      pg_sum += p / (p + g) * a
    else:
      ratio = math.exp(logp_new[b, n, t] - logp_old[b, n, t])
      clipped_ratio = min(max(ratio, 1 - eps), 1 + eps)
      pg_sum += min(ratio * a, clipped_ratio * a)
      clipped += int((a > 0 and ratio > 1 + eps) or (a < 0 and ratio < 1 - eps))
      ratio_count += 1
    pg_count += 1
    if kl_exp or not expert[b, n]:
      r = min(max(logp_ref[b, n, t] - logp_new[b, n, t], -kl_c), kl_c)
      kl_sum += math.exp(r) - r - 1
      kl_count += 1
  kl = kl_sum / kl_count
  return -pg_sum / pg_count + kl_w * kl, kl, clipped / ratio_count


@pytest.mark.parametrize(
  "kl_on_experts, luffy", [(False, False), (True, False), (False, True), (True, True)]
)
def test_loss_equals_numpy_formula(kl_on_experts, luffy):
  example = _example()
  loss, metrics = losses.clipped_policy_loss(
    *map(jnp.asarray, example),
    clip_eps=0.2,
    kl_weight=0.7,
    kl_clip=10.0,
    kl_on_experts=kl_on_experts,
    luffy_shaping=luffy,
    luffy_gamma=0.1,
  )
  want_loss, want_kl, want_clip = _numpy_loss(*example, 0.2, 0.7, 10.0, kl_on_experts, luffy, 0.1)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["kl"], want_kl, rtol=1e-5)
  np.testing.assert_allclose(metrics["clip_fraction"], want_clip, rtol=1e-6)
  assert 0.0 < want_clip < 1.0  # the example exercises both branches
  # The garbage log-prob of the masked member gets a zero, finite gradient.
  grad = jax.grad(
    lambda logp: losses.clipped_policy_loss(
      logp, *map(jnp.asarray, example[1:]), kl_on_experts=kl_on_experts, luffy_shaping=luffy
    )[0]
  )(jnp.asarray(example[0]))
  assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad[0, 4]).max()) == 0.0


def test_ratio_one_at_first_update_and_luffy_gradient():
  _, logp_old, _, _, mask, expert = map(jnp.asarray, _example())
  adv = jnp.tile(jnp.array([[1.0, -1.0, 0.5, 2.0, -0.5]]), (B, 1))
  logp_new = logp_old  # the first update after a rollout

  def loss_fn(logp, luffy):
    return losses.clipped_policy_loss(
      logp, logp_old, logp_old, adv, mask, expert, kl_weight=0.0, luffy_shaping=luffy
    )

  loss, metrics = loss_fn(logp_new, False)
  assert metrics["ratio_mean"] == pytest.approx(1.0)
  assert metrics["clip_fraction"] == 0.0
  # At ratio 1: d(-mean(ratio * A)) / d logp = -A / num_valid_tokens.
  grad = jax.grad(lambda x: loss_fn(x, False)[0])(logp_new)
  count = float(mask.sum()) * L
  want = -np.broadcast_to((adv * mask)[:, :, None], grad.shape) / count
  np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-8)
  # LUFFY on expert tokens: gradient gamma p / (p + gamma)^2 * A (up to -1 / count).
  grad = jax.grad(lambda x: loss_fn(x, True)[0])(logp_new)
  p = np.exp(np.asarray(logp_new))
  shaped = 0.1 * p / (p + 0.1) ** 2
  expert_tokens = np.broadcast_to(np.asarray(expert & mask)[:, :, None], grad.shape)
  want = np.where(expert_tokens, want * shaped, want)
  np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-8)


def test_k3_kl_zero_at_reference_positive_otherwise_finite_when_huge():
  logp = jnp.log(jnp.array([0.2, 0.5, 0.3]))
  assert float(jnp.abs(losses.k3_kl(logp, logp, 10.0)).max()) == 0.0
  other = jnp.log(jnp.array([0.3, 0.3, 0.4]))
  assert bool(jnp.all(losses.k3_kl(logp, other, 10.0) > 0))
  huge = jnp.array([-1e4, 1e4, -80.0])  # logp_ref - logp_new of +-1e4 and +80
  kl = losses.k3_kl(huge, jnp.zeros(3), 10.0)
  assert bool(jnp.all(jnp.isfinite(kl)))
  np.testing.assert_allclose(kl[:2], [math.exp(10) - 11, math.exp(-10) + 9], rtol=1e-6)
  grad = jax.grad(lambda x: losses.k3_kl(x, jnp.zeros(3), 10.0).sum())(huge)
  assert bool(jnp.all(jnp.isfinite(grad)))
  # Through the whole loss, with the KL at the policy and away from it.
  logp_new, logp_old, _, adv, mask, expert = map(jnp.asarray, _example())
  _, at_ref = losses.clipped_policy_loss(logp_new, logp_old, logp_new, adv, mask, expert)
  assert float(at_ref["kl"]) == 0.0
  far_ref = logp_new.at[1].set(1e4)
  loss, far = losses.clipped_policy_loss(logp_new, logp_old, far_ref, adv, mask, expert)
  assert bool(jnp.isfinite(loss)) and float(far["kl"]) > 0


def test_group_metrics():
  rewards = jnp.array([[0.1, 0.0, 1.0, 0.5], [0.1, 0.1, 1.0, 9.0]])
  mask = jnp.array([[True, True, True, True], [True, False, True, False]])
  is_expert = jnp.array([[False, False, True, True]] * 2)
  sid_valid = jnp.array([[True, False, True, True], [True, True, True, False]])
  got = losses.group_metrics(rewards, mask, is_expert, sid_valid, jnp.array([False, True]))
  sampled = np.array([0.1, 0.0, 0.1])
  experts = np.array([1.0, 0.5, 1.0])
  np.testing.assert_allclose(got["reward_mean_sampled"], sampled.mean(), rtol=1e-6)
  np.testing.assert_allclose(got["reward_std_sampled"], sampled.std(), rtol=1e-5)
  np.testing.assert_allclose(got["reward_mean_expert"], experts.mean(), rtol=1e-6)
  np.testing.assert_allclose(got["reward_std_expert"], experts.std(), rtol=1e-5)
  assert float(got["zero_spread_share"]) == 0.5
  assert float(got["sample_valid_rate"]) == 0.75
  assert float(got["expert_fill"]) == 0.75


def test_shape_errors():
  x = jnp.zeros((2, 3, 4))
  with pytest.raises(ValueError, match="advantages"):
    losses.policy_loss_terms(
      x, x, x, jnp.zeros((2, 4)), jnp.ones((2, 3), bool), jnp.ones((2, 3), bool)
    )
