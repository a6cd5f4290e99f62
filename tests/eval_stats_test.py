"""Tests for gr_jax/eval/stats.py against cases whose answer is known."""

import numpy as np
import pytest

from gr_jax.eval import stats


def test_bootstrap_of_a_bernoulli_mean_matches_the_normal_interval():
  # 3,000 requests, 30% hit: the 95% interval is 0.3 +- 1.96 * sqrt(0.21 / 3000) = +-0.0164.
  values = np.zeros(3000)
  values[:900] = 1.0
  interval = stats.bootstrap_mean(values, resamples=4000, seed=1)
  half = 1.96 * np.sqrt(0.3 * 0.7 / 3000)
  assert interval.value == pytest.approx(0.3)
  assert interval.low == pytest.approx(0.3 - half, abs=0.002)
  assert interval.high == pytest.approx(0.3 + half, abs=0.002)


def test_bootstrap_of_constant_values_has_no_width():
  interval = stats.bootstrap_mean(np.full(50, 0.25))
  assert (interval.value, interval.low, interval.high) == pytest.approx((0.25, 0.25, 0.25))


def test_bootstrap_is_seeded():
  values = np.random.default_rng(0).random(200)
  assert stats.bootstrap_mean(values, seed=3) == stats.bootstrap_mean(values, seed=3)
  assert stats.bootstrap_mean(values, seed=3) != stats.bootstrap_mean(values, seed=4)


def test_identical_systems_tie_with_a_zero_interval():
  values = np.random.default_rng(0).random(500)
  relative = stats.paired_relative_difference(values, values)
  assert (relative.value, relative.low, relative.high) == (0.0, 0.0, 0.0)
  assert not relative.excludes_zero
  assert stats.verdict(relative) == "tie"


def test_a_clear_paired_win_excludes_zero_where_unpaired_noise_would_not():
  rng = np.random.default_rng(0)
  baseline = rng.random(400)  # large between-request spread
  system = baseline * 1.05  # +5% on every request
  relative = stats.paired_relative_difference(system, baseline)
  assert relative.value == pytest.approx(0.05)
  assert relative.low == pytest.approx(0.05) and relative.high == pytest.approx(0.05)
  assert stats.verdict(relative) == "win"
  assert stats.verdict(stats.paired_relative_difference(baseline, system)) == "loss"
  # Each system's own interval is far wider than the difference: they overlap.
  assert stats.bootstrap_mean(system).low < stats.bootstrap_mean(baseline).high


def test_noisy_paired_difference_brackets_the_true_shift():
  rng = np.random.default_rng(1)
  baseline = (rng.random(4000) < 0.2).astype(float)
  system = np.where(rng.random(4000) < 0.1, 1.0, baseline)  # ~ +0.08 absolute
  difference = stats.paired_difference(system, baseline)
  assert difference.low < system.mean() - baseline.mean() < difference.high
  assert difference.low > 0.0
  assert stats.count_verdicts([difference, stats.Interval(0.0, -1.0, 1.0)]) == {
    "win": 1,
    "tie": 1,
    "loss": 0,
  }


def test_bad_inputs_are_named():
  with pytest.raises(ValueError, match="same requests"):
    stats.paired_relative_difference(np.ones(3), np.ones(4))
  with pytest.raises(ValueError, match="baseline's mean is 0"):
    stats.paired_relative_difference(np.ones(3), np.zeros(3))
  with pytest.raises(ValueError, match="non-empty 1-D"):
    stats.bootstrap_mean(np.array([]))
  with pytest.raises(ValueError, match="not finite"):
    stats.bootstrap_mean(np.array([0.1, np.nan]))


def test_seed_spread_and_formatting():
  mean, std = stats.seed_spread([0.1, 0.2, 0.3])
  assert mean == pytest.approx(0.2) and std == pytest.approx(0.1)
  assert stats.seed_spread([0.4]) == (0.4, 0.0)
  assert stats.format_interval(stats.Interval(0.08441, 0.079, 0.0901)) == (
    "0.0844 [0.0790, 0.0901]"
  )
  assert stats.format_relative(stats.Interval(0.123, 0.081, 0.164)) == "+12.3% [+8.1, +16.4]"
