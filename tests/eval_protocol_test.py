"""Tests for gr_jax/eval/protocol.py and tables.py on hand-built per-request values."""

import numpy as np
import pytest

from gr_jax import errors
from gr_jax.data import schema
from gr_jax.eval import protocol, tables


def _values(clk_by_beam, reached_by_beam, topk_by_beam=None):
  """Per-request values as score_generator returns them, from {beam: [B] values}."""
  out = {}
  for beam, clk in clk_by_beam.items():
    clk = np.asarray(clk, float)
    out[f"clk@{beam}"] = clk
    out[f"exp@{beam}"] = np.minimum(clk + 0.5, 1.0)
    out[f"purchase@{beam}"] = np.where(np.arange(len(clk)) % 2 == 0, clk, np.nan)
    topk = clk if topk_by_beam is None else np.asarray(topk_by_beam[beam], float)
    out[f"topk@{beam}"] = topk
    out[f"reached@{beam}"] = np.asarray(reached_by_beam[beam])
    out[f"valid@{beam}"] = np.ones(len(clk))
  return out


def _logs(split, clicked):
  n = len(split)
  return schema.SearchLogs(
    request_id=np.arange(n),
    user_id=np.zeros(n, np.int64),
    user_profile=np.zeros((n, 2), np.int32),
    recent_clicks=np.full((n, 1), schema.PAD_ITEM, np.int32),
    query=np.array(["q"] * n, object),
    exposed=np.asarray(clicked, np.int32),
    clicked=np.asarray(clicked, np.int32),
    purchased=np.full((n, 1), schema.PAD_ITEM, np.int32),
    split=np.array([schema.SPLITS.index(s) for s in split], np.int8),
  )


def test_sample_requests_reads_one_split_with_clicks_only():
  logs = _logs(["train", "valid", "valid", "test", "valid"], [[1], [2], [-1], [3], [4]])
  np.testing.assert_array_equal(protocol.sample_requests(logs, "valid", 10, seed=0), [1, 4])
  np.testing.assert_array_equal(protocol.sample_requests(logs, "test", 10, seed=0), [3])
  assert len(protocol.sample_requests(logs, "valid", 1, seed=0)) == 1
  with pytest.raises(errors.UserError, match="split: .train. is not one of"):
    protocol.sample_requests(logs, "train", 10, seed=0)


def test_summarize_gives_intervals_and_skips_requests_without_purchases():
  values = _values({1: [0.0, 1.0, 0.5, 0.5]}, {1: [10, 2000, 30, 1500]})
  summary = protocol.summarize(values, truncation_items=1000, resamples=200)
  entry = summary[1]
  assert entry["hitrate"] == entry["clk"] == pytest.approx(0.5)
  assert entry["ci"]["clk"][0] <= 0.5 <= entry["ci"]["clk"][1]
  assert entry["purchase"] == pytest.approx(0.25)  # requests 0 and 2 only
  assert entry["share_over_truncation"] == pytest.approx(0.5)
  assert entry["expanded_items"] == pytest.approx(885.0)
  assert entry["requests"] == 4


def test_compare_is_paired_over_the_same_requests():
  base = _values({1: np.linspace(0.1, 0.9, 50)}, {1: np.ones(50)})
  better = _values({1: np.linspace(0.1, 0.9, 50) * 1.2}, {1: np.ones(50)})
  result = protocol.compare(better, base, resamples=200)
  assert result[1]["clk"]["value"] == pytest.approx(0.2)
  assert result[1]["clk"]["low"] == pytest.approx(0.2)  # the same +20% on every request


def _curve(hitrates, shares, topks):
  return {
    b: {"hitrate": h, "share_over_truncation": s, "topk_hitrate": t}
    for b, h, s, t in zip((10, 50, 100, 200, 300), hitrates, shares, topks)
  }


def test_choose_beams_picks_the_smallest_reaching_beams():
  curves = {
    "rqvae": _curve([0.2, 0.5, 0.7, 0.8, 0.85], [0, 0, 0.1, 0.4, 0.9], [0.2, 0.5, 0.7, 0.75, 0.7]),
    "cq_sid": _curve([0.3, 0.7, 0.8, 0.9, 0.9], [0, 0, 0.3, 0.8, 1.0], [0.3, 0.6, 0.72, 0.8, 0.8]),
    "weak": _curve([0.1, 0.2, 0.3, 0.4, 0.5], [0, 0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4, 0.5]),
  }
  choices = protocol.choose_beams(curves, "rqvae", curve_beams=(10, 50, 100))
  assert choices.reference_beam == 100
  # Reaching rqvae's beam-100 hitrate (0.7): cq_sid at 50; weak never (within the curve).
  assert choices.half_beams == {"rqvae": 100, "cq_sid": 50, "weak": None}
  # rqvae's union first exceeds the cut for most requests at 300 (topk 0.7 there).
  assert choices.truncation_beams == {"rqvae": 300, "cq_sid": 100, "weak": None}
  with pytest.raises(ValueError, match="baseline 'x' was not evaluated"):
    protocol.choose_beams(curves, "x", curve_beams=(10,))


def test_read_choices_compares_each_method_at_its_own_beam():
  rng = np.random.default_rng(0)
  base_clk = rng.random(200)
  test_values = {
    "rqvae": _values(
      {100: base_clk, 300: base_clk}, {100: np.full(200, 900), 300: np.full(200, 1200)}
    ),
    "cq_sid": _values(
      {50: base_clk, 100: base_clk * 1.1}, {50: np.full(200, 700), 100: np.full(200, 1100)}
    ),
  }
  choices = protocol.BeamChoices(
    half_beams={"rqvae": 100, "cq_sid": 50},
    reference_beam=100,
    truncation_beams={"rqvae": 300, "cq_sid": 100},
  )
  read = protocol.read_choices(choices, test_values, "rqvae", 1000, resamples=200)
  assert read["half_beams"]["cq_sid"]["vs_baseline"]["value"] == pytest.approx(0.0)
  truncation = read["truncation"]["cq_sid"]
  assert truncation["beam"] == 100 and truncation["share_over_truncation"] == 1.0
  assert truncation["vs_baseline"]["value"] == pytest.approx(0.1)


def test_results_round_trip_into_tables_with_verdicts():
  rng = np.random.default_rng(1)
  base = rng.random(300)
  values = {
    "rqvae": {"semantic": _values({1: base, 10: base}, {1: np.ones(300), 10: np.ones(300)})},
    "cq_sid": {"semantic": _values({1: base * 1.3, 10: base}, {1: np.ones(300), 10: np.ones(300)})},
  }
  results = protocol.build_results(
    values,
    split="valid",
    baseline="rqvae",
    beam_sizes=(1, 10),
    curve_beam_sizes=(1, 10),
    truncation_beam_sizes=(),
    truncation_items=1000,
    requests=300,
    sample_seed=0,
    resamples=200,
  )
  assert results["choices"]["half_beams"]["cq_sid"] == 1  # 1.3 x 0.5 >= rqvae@10
  text = tables.render(results)
  assert "Table 1 analogue: semantic hitrate" in text
  assert "+30.0% [+30.0, +30.0]" in text and "1 / 1 / 0" in text  # a win at 1, a tie at 10
  assert "Beams chosen on this split" in text


def test_test_runs_score_only_what_valid_chose():
  grid = dict(
    beam_sizes=(1, 10, 100), curve_beam_sizes=(1, 50, 70, 100), truncation_beam_sizes=(200, 300)
  )
  assert protocol.semantic_beams(**grid) == [1, 10, 50, 70, 100, 200, 300]
  choices = protocol.BeamChoices(
    half_beams={"rqvae": 100, "cq_sid": 70, "weak": None},
    reference_beam=100,
    truncation_beams={"rqvae": 300, "cq_sid": None},
  )
  assert protocol.semantic_beams(**grid, valid_choices=choices) == [1, 10, 70, 100, 300]
  # Each method scores only its own chosen beams (and the reference beam).
  assert protocol.semantic_beams(**grid, valid_choices=choices, method="cq_sid") == [1, 10, 70, 100]
  assert protocol.semantic_beams(**grid, valid_choices=choices, method="rqvae") == [1, 10, 100, 300]


def test_scores_are_kept_and_only_missing_beams_are_computed(tmp_path):
  calls = []

  class Sample(protocol.RequestSample):
    def score(self, retriever, generator, task, item_sid, beam_sizes, truncation_items):
      calls.append(tuple(beam_sizes))
      return _values(
        {b: np.full(len(self.rows), b / 100) for b in beam_sizes},
        {b: np.ones(len(self.rows)) for b in beam_sizes},
      )

  rows = np.arange(4)
  sample = Sample("test", rows, None, None, None)
  path = str(tmp_path / "parts" / "cq.semantic.npz")
  load = lambda: (None, None)
  first = protocol.score_resumable(path, "k1", sample, load, "q2sid", None, (10, 1), 1000)
  again = protocol.score_resumable(path, "k1", sample, load, "q2sid", None, (1, 10), 1000)
  assert calls == [(1, 10)] and set(again) == set(first)
  np.testing.assert_array_equal(first["clk@10"], again["clk@10"])
  more = protocol.score_resumable(path, "k1", sample, load, "q2sid", None, (1, 10, 100), 1000)
  assert calls[-1] == (100,) and more["clk@100"][0] == 1.0 and more["clk@10"][0] == 0.1
  fewer = protocol.score_resumable(path, "k1", sample, load, "q2sid", None, (100,), 1000)
  assert len(calls) == 2 and set(fewer) == {
    f"{m}@100" for m in ("clk", "exp", "purchase", "topk", "reached", "valid")
  }
  protocol.score_resumable(path, "k2", sample, load, "q2sid", None, (1,), 1000)  # other key
  other = Sample("test", np.arange(1, 5), None, None, None)  # other requests
  protocol.score_resumable(path, "k2", other, load, "q2sid", None, (1,), 1000)
  assert calls[2:] == [(1,), (1,)]
