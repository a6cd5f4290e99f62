"""Tests for gr_jax/eval/rl_table.py: paired gains of a policy over its SFT start, Table 4."""

import os

import numpy as np
import pytest

from gr_jax import errors
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
  table = rl_table.table4({"eg_grpo_k2": {0: _values(rng, 0.1)}}, {0: sft}, title="t")
  assert "| eg_grpo_k2 |" in table and "onclk@1" in table
  assert "against GRPO" not in table


def _write_run(root, name: str, policy: dict, sft: dict) -> str:
  run_dir = os.path.join(root, name)
  os.makedirs(run_dir)
  np.savez(os.path.join(run_dir, rl_table.POLICY_VALUES), **policy)
  np.savez(os.path.join(run_dir, rl_table.SFT_VALUES), **sft)
  return run_dir


def _row(table: str, section: str, method: str) -> list[str]:
  """The cells of `method`'s row in the table titled `section`."""
  part = table[table.index(section) :]
  line = next(line for line in part.splitlines() if line.startswith(f"| {method} |"))
  return [cell.strip() for cell in line.strip("|").split("|")]


def test_pipeline_seeds_pair_each_policy_with_its_own_sft_start(tmp_path):
  """Seed s's policy is compared with seed s's SFT start: a policy that adds 0.02 to its
  own start wins in every seed even though the starts differ by far more than 0.02."""
  rng = np.random.default_rng(2)
  run_dirs, starts = [], {}
  for seed, level in enumerate((0.5, 0.2, 0.8)):
    start = {key: value * 0 + level + 0.05 * rng.standard_normal(400)
             for key, value in _values(rng, 0.0).items()}  # fmt: skip
    starts[seed] = start
    policy = {key: value + 0.02 for key, value in start.items()}
    run_dirs.append(_write_run(tmp_path / f"seed{seed}", f"eg_grpo_k2_s{seed}", policy, start))
  variants, sft = rl_table.load_runs(run_dirs)
  assert sorted(variants["eg_grpo_k2"]) == [0, 1, 2] and sorted(sft) == [0, 1, 2]
  table = rl_table.table4(variants, sft, title="t")
  sft_row = _row(table, "t", "SFT")
  assert sft_row[-1] == "3"  # three distinct starts, one per seed
  gains = _row(table, "against SFT", "eg_grpo_k2")[1:]
  assert all(cell.endswith("win") for cell in gains), gains
  # Pairing every seed with seed 0's start would make seed 1 (start 0.2) a loss.
  wrong = rl_table.table4(variants, {seed: starts[0] for seed in range(3)}, title="t")
  assert not all(cell.endswith("win") for cell in _row(wrong, "against SFT", "eg_grpo_k2")[1:])


def test_one_shared_sft_start_is_one_row_and_duplicate_seeds_are_named(tmp_path):
  rng = np.random.default_rng(3)
  start = _values(rng, 0.0)
  run_dirs = [
    _write_run(tmp_path, f"{name}_s{seed}", _values(rng, 0.01), start)
    for name in ("grpo_k0", "eg_grpo_k2") for seed in (0, 1)
  ]  # fmt: skip
  table = rl_table.table4(*rl_table.load_runs(run_dirs), title="t")
  assert _row(table, "t", "SFT")[-1] == "1"
  assert "| eg_grpo_k2 |" in table[table.index("against GRPO") :]
  duplicate = _write_run(tmp_path / "other", "eg_grpo_k2_s1", _values(rng, 0.0), start)
  with pytest.raises(errors.ArtefactError, match="eg_grpo_k2_s1.*seed 1"):
    rl_table.load_runs([*run_dirs, duplicate])
