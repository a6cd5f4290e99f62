"""Tests for gr_jax/eval/online.py on the tiny world."""

import numpy as np
import pytest

from gr_jax.data import schema
from gr_jax.data.world import simulator
from gr_jax.eval import online


@pytest.fixture(scope="module")
def world():
  return simulator.generate_world(simulator.world_preset("tiny"))


def test_expected_clicks_of_the_logged_exposure_match_the_logged_clicks(world):
  # The logs were drawn from the same click model: mean expected = mean observed clicks.
  served = online.OnlineWorld(world)
  rows = np.arange(world.logs.num_requests)
  expected = served.logged(rows)
  observed_clicks = (world.logs.clicked != schema.PAD_ITEM).sum(1)
  observed_purchases = (world.logs.purchased != schema.PAD_ITEM).sum(1)
  se = observed_clicks.std() / np.sqrt(len(rows))
  assert abs(expected["clicks"].mean() - observed_clicks.mean()) < 4 * se
  se = observed_purchases.std() / np.sqrt(len(rows))
  assert abs(expected["purchases"].mean() - observed_purchases.mean()) < 4 * se


def test_serving_the_intent_beats_serving_random_items(world):
  served = online.OnlineWorld(world)
  rows = np.arange(500)
  rng = np.random.default_rng(0)
  by_leaf = [
    np.flatnonzero(world.catalog.category_id == leaf)
    for leaf in range(world.config.num_leaf_categories)
  ]
  intent = np.full((len(rows), 20), schema.PAD_ITEM, np.int32)
  for i, row in enumerate(rows):
    members = by_leaf[world.query_intent_leaf[row]][:20]
    intent[i, : len(members)] = members
  random_items = rng.integers(0, world.catalog.num_items, (len(rows), 20)).astype(np.int32)
  good, bad = served.serve(rows, intent), served.serve(rows, random_items)
  assert good["clicks"].mean() > 1.5 * bad["clicks"].mean()
  assert np.nanmean(good["relevance"]) > np.nanmean(bad["relevance"])
  nothing = served.serve(rows[:3], np.full((3, 5), schema.PAD_ITEM, np.int32))
  np.testing.assert_array_equal(nothing["clicks"], 0.0)
  assert np.isnan(nothing["relevance"]).all()


def test_ranker_noise_is_a_function_of_request_and_item_only(world):
  served = online.OnlineWorld(world)
  rows = np.array([3, 3, 7])
  items = np.array([[5, 9, 11], [11, 2, 5], [5, 9, 11]])
  noise = served.ranker_noise(rows, items)
  assert noise[0, 0] == noise[1, 2] and noise[0, 2] == noise[1, 0]  # same pair, same noise
  assert noise[0, 0] != noise[2, 0]  # another request
  draws = served.ranker_noise(np.arange(2000), np.full((2000, 1), 17))
  assert abs(draws.mean()) < 0.1 and abs(draws.std() - 1.0) < 0.1
  # Order of the candidates does not change what the ranker shows.
  a = served.serve(rows[:1], items[:1])
  b = served.serve(rows[:1], items[:1, ::-1])
  np.testing.assert_allclose(a["clicks"], b["clicks"])
