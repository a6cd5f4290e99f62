"""Tests for gr_jax/eval/rl_table.py: paired gains of a policy over its SFT start, Table 4."""

import numpy as np

from gr_jax.eval import rl_table


def _values(rng, shift: float) -> dict[str, np.ndarray]:
  base = rng.random((6, 400))
  return {f"{metric}@{beam}": base[i] + shift for i, (metric, beam) in enumerate(rl_table.COLUMNS)}


def test_paired_gains_are_differences_of_means_over_the_same_requests():
  rng = np.random.default_rng(0)
  sft = _values(rng, 0.0)
  policy = {key: value + 0.05 * (key == "clk@10") for key, value in sft.items()}
  policy["exp@10"] = sft["exp@10"] - 0.01 + 0.002 * rng.standard_normal(400)
  policy["clk@1"] = np.where(np.arange(400) == 0, np.nan, policy["clk@1"])  # left out
  gains = rl_table.paired_gains(policy, sft)
  assert set(gains) == {f"{m}@{b}" for m, b in rl_table.COLUMNS}
  assert abs(gains["clk@10"]["value"] - 0.05) < 1e-9
  assert gains["clk@10"]["verdict"] == "win" and gains["onclk@1"]["verdict"] == "tie"
  want = np.mean(policy["exp@10"] - sft["exp@10"])
  assert abs(gains["exp@10"]["value"] - want) < 1e-12 and gains["exp@10"]["verdict"] == "loss"
  assert gains["exp@10"]["low"] < want < gains["exp@10"]["high"]
  assert gains["clk@1"]["value"] == 0.0


def test_table4_without_a_grpo_run():
  rng = np.random.default_rng(1)
  sft = _values(rng, 0.0)
  table = rl_table.table4({"eg_grpo_k2": [_values(rng, 0.1)]}, sft, title="t")
  assert "| eg_grpo_k2 |" in table and "onclk@1" in table
  assert "against GRPO" not in table
