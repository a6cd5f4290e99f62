"""Uncertainty of evaluation results: bootstrap intervals over requests, paired tests, seeds.

Every metric here is a mean over requests of a per-request value (the share of a
request's targets that were hit, a 0/1 hit, an NDCG term). Two kinds of spread are
kept apart:

- request sampling: a percentile bootstrap over requests (`bootstrap_mean`); two
  systems scored on the same requests share the resampled requests
  (`paired_relative_difference`), which removes the between-request variance from
  their difference;
- training variance: the mean and standard deviation over seeds of the whole
  pipeline (`seed_spread`).

A difference counts as a win or a loss only when its interval excludes 0
(`verdict`); otherwise it is a tie.
"""

from __future__ import annotations

import dataclasses

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
  """A point estimate with its (low, high) confidence bounds."""

  value: float
  low: float
  high: float

  @property
  def excludes_zero(self) -> bool:
    return self.low > 0.0 or self.high < 0.0

  def to_json(self) -> dict:
    return {"value": self.value, "low": self.low, "high": self.high}


def _check_values(name: str, values) -> np.ndarray:
  values = np.asarray(values, np.float64)
  if values.ndim != 1 or values.size == 0:
    raise ValueError(
      f"{name}: expected a non-empty 1-D array of per-request values, got shape {values.shape}"
    )
  if not np.all(np.isfinite(values)):
    raise ValueError(
      f"{name}: {int((~np.isfinite(values)).sum())} per-request values are not finite"
    )
  return values


def _check_pair(name: str, system, baseline) -> tuple[np.ndarray, np.ndarray]:
  system = _check_values(f"{name}(system)", system)
  baseline = _check_values(f"{name}(baseline)", baseline)
  if system.shape != baseline.shape:
    raise ValueError(
      f"{name}: systems were scored on {system.size} and {baseline.size} requests; a paired "
      "comparison needs the same requests"
    )
  return system, baseline


def resample_weights(num_requests: int, resamples: int, seed: int) -> np.ndarray:
  """[S, R] bootstrap counts: how often each of R requests is drawn in each of S resamples."""
  rng = np.random.default_rng(seed)
  return rng.multinomial(num_requests, np.full(num_requests, 1.0 / num_requests), size=resamples)


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
  tail = 100.0 * (1.0 - level) / 2.0
  low, high = np.percentile(draws, [tail, 100.0 - tail])
  return float(low), float(high)


def bootstrap_mean(
  values, *, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL
) -> Interval:
  """Mean of [R] per-request values with its percentile-bootstrap interval."""
  values = _check_values("bootstrap_mean", values)
  weights = resample_weights(values.size, resamples, seed)  # [S, R]
  draws = weights @ values / values.size  # [S]
  return Interval(float(values.mean()), *_percentiles(draws, level))


def paired_relative_difference(
  system, baseline, *, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL
) -> Interval:
  """(mean(system) - mean(baseline)) / mean(baseline) over the same requests, paired.

  Both systems are resampled with the same request draws, so the interval reflects
  only how differently they do on the same requests.

  Raises:
    ValueError: different request counts, or a baseline whose mean is 0 (no
      relative difference exists).
  """
  system, baseline = _check_pair("paired_relative_difference", system, baseline)
  if baseline.mean() == 0.0:
    raise ValueError("paired_relative_difference: the baseline's mean is 0")
  weights = resample_weights(system.size, resamples, seed)  # [S, R]
  system_draws = weights @ system  # [S]
  baseline_draws = weights @ baseline  # [S]
  # A resample whose baseline sum is 0 has no ratio; it is rare and left out.
  usable = baseline_draws > 0
  draws = system_draws[usable] / baseline_draws[usable] - 1.0
  value = system.mean() / baseline.mean() - 1.0
  return Interval(float(value), *_percentiles(draws, level))


def paired_difference(
  system, baseline, *, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL
) -> Interval:
  """mean(system) - mean(baseline) over the same requests, with its paired interval."""
  system, baseline = _check_pair("paired_difference", system, baseline)
  return bootstrap_mean(system - baseline, resamples=resamples, seed=seed, level=level)


def verdict(difference: Interval) -> str:
  """'win' / 'loss' when the interval of a difference excludes 0, else 'tie'."""
  if difference.low > 0.0:
    return "win"
  if difference.high < 0.0:
    return "loss"
  return "tie"


def count_verdicts(differences) -> dict[str, int]:
  """{'win': n, 'tie': n, 'loss': n} over intervals of differences."""
  counts = {"win": 0, "tie": 0, "loss": 0}
  for difference in differences:
    counts[verdict(difference)] += 1
  return counts


def seed_spread(values_per_seed) -> tuple[float, float]:
  """(mean, sample standard deviation) of one metric over seeds (std 0 for one seed)."""
  values = _check_values("seed_spread", values_per_seed)
  spread = float(values.std(ddof=1)) if values.size > 1 else 0.0
  return float(values.mean()), spread


def format_interval(interval: Interval, digits: int = 4) -> str:
  """'0.0844 [0.0790, 0.0901]'."""
  return f"{interval.value:.{digits}f} [{interval.low:.{digits}f}, {interval.high:.{digits}f}]"


def format_relative(interval: Interval) -> str:
  """A relative difference as '+12.3% [+8.1, +16.4]'."""
  return (
    f"{100.0 * interval.value:+.1f}% [{100.0 * interval.low:+.1f}, {100.0 * interval.high:+.1f}]"
  )
