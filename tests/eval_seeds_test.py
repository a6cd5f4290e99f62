"""Tests for gr_jax/eval/seeds.py on seed work directories written by the evaluate writer."""

import numpy as np
import pytest

from gr_jax.eval import protocol, seeds, tables


def _values(clk):
  clk = np.asarray(clk, float)
  return {f"{m}@10": clk for m in ("clk", "exp", "purchase", "topk")} | {
    "reached@10": np.full(len(clk), 50),
    "valid@10": np.ones(len(clk)),
  }


def _write_seed(folder, methods, rows):
  values = {name: {"semantic": _values(clk)} for name, clk in methods.items()}
  results = protocol.build_results(
    values,
    split="test",
    baseline="rqvae",
    beam_sizes=(10,),
    curve_beam_sizes=(10,),
    truncation_beam_sizes=(),
    truncation_items=1000,
    requests=len(rows),
    sample_seed=0,
    resamples=100,
  )
  tables.write(str(folder / "eval" / "test"), results, values, rows)
  return str(folder)


def test_a_win_needs_the_interval_and_every_seed(tmp_path):
  rng = np.random.default_rng(0)
  base = rng.random(400)
  rows = np.arange(400)
  workdirs = []
  for seed, (good, mixed) in enumerate([(1.2, 1.1), (1.1, 1.2), (1.15, 0.97)]):
    workdirs.append(
      _write_seed(
        tmp_path / f"seed{seed}", {"rqvae": base, "good": base * good, "mixed": base * mixed}, rows
      )
    )
  combined = seeds.combine(workdirs, resamples=200)
  good = combined["rows"]["good"]["semantic"]["clk@10"]
  mixed = combined["rows"]["mixed"]["semantic"]["clk@10"]
  assert good["vs_baseline"]["verdict"] == "win"
  assert good["vs_baseline"]["value"] == pytest.approx(0.15)
  assert good["seed_std"] == pytest.approx(np.std([1.2, 1.1, 1.15], ddof=1) * base.mean())
  # Seed-averaged it is +9%, but one seed is behind: not a win.
  assert mixed["vs_baseline"]["low"] > 0 and mixed["vs_baseline"]["verdict"] == "tie"
  assert combined["rows"]["rqvae"]["semantic"]["clk@10"]["vs_baseline"] is None
  text = seeds.render(combined)
  assert "3 seeds" in text and "+15.0%" in text and "win" in text
  # Against another method: the full method's gains over its ablation.
  against_good = seeds.combine(workdirs, baseline="good", resamples=200)
  assert against_good["rows"]["rqvae"]["semantic"]["clk@10"]["vs_baseline"]["verdict"] == "loss"
  assert against_good["rows"]["good"]["semantic"]["clk@10"]["vs_baseline"] is None
  with pytest.raises(seeds.SeedsError, match="baseline 'nope'"):
    seeds.combine(workdirs, baseline="nope")


def test_seeds_on_other_requests_or_missing_runs_are_named(tmp_path):
  a = _write_seed(tmp_path / "a", {"rqvae": np.ones(5)}, np.arange(5))
  b = _write_seed(tmp_path / "b", {"rqvae": np.ones(5)}, np.arange(1, 6))
  with pytest.raises(seeds.SeedsError, match="b: evaluated on other requests"):
    seeds.combine([a, b])
  with pytest.raises(seeds.SeedsError, match="no metrics.json"):
    seeds.combine([str(tmp_path / "c")])
