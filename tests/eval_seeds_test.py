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


def _write_test(folder, values, rows, beams, truncation_beams=(), valid_choices=None):
  """Writes one seed's test evaluation of {method: semantic values}; returns its folder."""
  values = {name: {"semantic": v} for name, v in values.items()}
  results = protocol.build_results(
    values,
    split="test",
    baseline="rqvae",
    beam_sizes=beams,
    curve_beam_sizes=beams,
    truncation_beam_sizes=truncation_beams,
    truncation_items=1000,
    requests=len(rows),
    sample_seed=0,
    resamples=100,
    valid_choices=valid_choices,
  )
  tables.write(str(folder / "eval" / "test"), results, values, rows)
  return str(folder)


def _write_seed(folder, methods, rows):
  return _write_test(folder, {name: _values(clk) for name, clk in methods.items()}, rows, (10,))


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


def _beam_values(by_beam, reached=1200):
  """{beam: per-request clk} -> every metric at every beam (top-K equal to clk)."""
  out = {}
  for beam, clk in by_beam.items():
    clk = np.asarray(clk, float)
    out |= {f"{m}@{beam}": clk for m in ("clk", "exp", "purchase", "topk")}
    out |= {f"reached@{beam}": np.full(len(clk), reached), f"valid@{beam}": np.ones(len(clk))}
  return out


def _write_chosen_seed(folder, values, rows, half, truncation):
  choices = protocol.BeamChoices(
    half_beams={"rqvae": 100, "cq_sid": half},
    reference_beam=100,
    truncation_beams={"rqvae": 300, "cq_sid": truncation},
  )
  return _write_test(folder, values, rows, (100,), (150, 200, 300), choices)


def test_chosen_operating_points_pair_each_seed_at_its_own_beams(tmp_path):
  rng = np.random.default_rng(1)
  base = rng.random(500)
  rows = np.arange(500)
  workdirs = []
  # Seed 0 chose beam 70, seed 1 beam 80: the other beam holds zeros, so reading
  # one shared beam would make CQ-SID lose instead of win.
  for seed, (half, other, cut) in enumerate([(70, 80, 150), (80, 70, 200)]):
    values = {
      "rqvae": _beam_values({100: base, 300: base}),
      "cq_sid": _beam_values({half: base * 1.1, other: np.zeros(500), cut: base, 100: base}),
    }
    workdirs.append(_write_chosen_seed(tmp_path / f"s{seed}", values, rows, half, cut))
  chosen = seeds.combine(workdirs, resamples=200)["chosen"]
  half = chosen["half_beams"]["cq_sid"]
  assert half["beams"] == [70, 80] and half["baseline_beams"] == [100, 100]
  assert half["vs_baseline"]["value"] == pytest.approx(0.1)
  assert half["vs_baseline"]["verdict"] == "win"
  table2 = chosen["truncation"]["cq_sid"]
  assert table2["beams"] == [150, 200] and table2["baseline_beams"] == [300, 300]
  assert table2["vs_baseline"]["verdict"] == "tie"
  assert table2["baseline_share_over_truncation"] == [1.0, 1.0]
  assert table2["baseline"]["seed_mean"] == pytest.approx(base.mean())
  text = seeds.render(seeds.combine(workdirs, resamples=200))
  assert "cq_sid (70/80)" in text and "+10.0%" in text
  # Table 2 beam 150 is one seed's only: the grid table has no all-n/a column for it.
  assert "topk@150" not in text and "topk@300" in text
  # Gains against another baseline: valid chose no beams against it.
  assert seeds.combine(workdirs, baseline="cq_sid", resamples=100)["chosen"] == {}


def test_a_seed_that_never_reached_the_baseline_has_no_operating_point(tmp_path):
  base = np.linspace(0.1, 0.9, 50)
  rows = np.arange(50)
  values = {"rqvae": _beam_values({100: base, 300: base}), "cq_sid": _beam_values({100: base})}
  workdirs = [
    _write_chosen_seed(tmp_path / "s0", values, rows, 100, None),
    _write_chosen_seed(tmp_path / "s1", values, rows, None, None),
  ]
  combined = seeds.combine(workdirs, resamples=100)
  half = combined["chosen"]["half_beams"]["cq_sid"]
  assert half["beams"] == [100, None] and "vs_baseline" not in half
  assert "not reached in every seed" in seeds.render(combined)
