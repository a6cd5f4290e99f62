"""Tests for the built-in simulated world (gr_jax/data/world/simulator.py), on the tiny preset."""

import dataclasses
import os

import numpy as np
import pytest

from gr_jax.data import schema
from gr_jax.data.world import simulator as world_lib


@pytest.fixture(scope="module")
def tiny():
  return world_lib.generate_world(world_lib.world_preset("tiny"))


def _in_row(items: np.ndarray, pool: np.ndarray) -> np.ndarray:
  """[R, M] True where items[r, m] is padding or appears in pool[r]."""
  return (items < 0) | (items[:, :, None] == pool[:, None, :]).any(axis=2)


def _segment(logs: schema.SearchLogs) -> np.ndarray:
  return logs.user_profile[:, 0] * world_lib.NUM_AGE_BANDS + logs.user_profile[:, 1]


def _assert_worlds_equal(a: world_lib.World, b: world_lib.World) -> None:
  assert a.config == b.config
  for table_a, table_b in ((a.catalog, b.catalog), (a.logs, b.logs), (a, b)):
    for field in dataclasses.fields(table_a):
      value_a, value_b = getattr(table_a, field.name), getattr(table_b, field.name)
      if isinstance(value_a, np.ndarray):
        assert value_a.shape == value_b.shape, field.name
        if value_a.dtype == object:
          assert list(value_a) == list(value_b), field.name
        else:
          np.testing.assert_array_equal(value_a, value_b, err_msg=field.name)


def test_shapes_and_contract(tiny):
  config, catalog, logs = tiny.config, tiny.catalog, tiny.logs
  assert catalog.num_items == config.num_items
  assert catalog.num_categories == config.num_leaf_categories
  assert catalog.features.shape == (config.num_items, config.latent_dim)
  assert logs.num_requests == config.num_requests
  assert logs.query_features.shape == (config.num_requests, config.latent_dim)
  assert logs.exposed.shape == (config.num_requests, config.exposure_k)
  assert logs.recent_clicks.shape == (config.num_requests, config.history_length)
  assert set(np.unique(logs.user_profile[:, 0])) <= set(range(world_lib.NUM_GENDERS))
  assert set(np.unique(logs.user_profile[:, 1])) <= set(range(world_lib.NUM_AGE_BANDS))
  # Each item's path ends in its leaf's name, and every leaf has items.
  leaf_names = [path[-1] for path in catalog.category_path]
  assert leaf_names == list(catalog.category_names[catalog.category_id])
  assert np.all(np.bincount(catalog.category_id) > 0)
  assert np.all(catalog.efficiency_score > 0)
  assert all(title and query for title, query in zip(catalog.title, logs.query))
  # Ids are valid, exposure rows hold no duplicates, padding is trailing.
  for ids in (logs.exposed, logs.clicked, logs.purchased, logs.recent_clicks):
    assert ids.min() >= schema.PAD_ITEM and ids.max() < config.num_items
  sorted_exposed = np.sort(logs.exposed, axis=1)
  assert not np.any(
    (sorted_exposed[:, 1:] == sorted_exposed[:, :-1]) & (sorted_exposed[:, 1:] >= 0)
  )
  for ids in (logs.exposed, logs.clicked, logs.purchased):
    assert not np.any((ids[:, 1:] >= 0) & (ids[:, :-1] < 0))


def test_purchased_within_clicked_within_exposed(tiny):
  logs = tiny.logs
  assert np.all(_in_row(logs.clicked, logs.exposed))
  assert np.all(_in_row(logs.purchased, logs.clicked))
  # And the three sets differ, as the reward needs.
  assert (logs.clicked >= 0).sum() < (logs.exposed >= 0).sum()
  assert 0 < (logs.purchased >= 0).sum() < (logs.clicked >= 0).sum()


def test_click_through_rate_in_stated_range(tiny):
  logs = tiny.logs
  exposures = (logs.exposed >= 0).sum()
  ctr = (logs.clicked >= 0).sum() / exposures
  assert 0.05 <= ctr <= 0.30
  assert exposures / logs.num_requests > 0.9 * tiny.config.exposure_k


def test_ranker_and_clicks_follow_true_relevance(tiny):
  relevance = tiny.exposed_relevance  # [R, k]
  # The ranker is noisy but ordered by utility: top slots are more relevant.
  assert np.nanmean(relevance[:, 0]) > np.nanmean(relevance[:, -1])
  clicked = _in_row(tiny.logs.exposed, tiny.logs.clicked) & (tiny.logs.exposed >= 0)
  assert relevance[clicked].mean() > relevance[~clicked & (tiny.logs.exposed >= 0)].mean()
  # Position bias: the first slot is clicked more often than the last.
  clicks_per_slot = clicked.mean(axis=0)
  assert clicks_per_slot[0] > 2 * clicks_per_slot[-1]


def test_recent_clicks_are_earlier_clicks_of_same_user(tiny):
  logs = tiny.logs
  history = logs.recent_clicks
  # Left-padded: no padding after the first real id.
  assert not np.any((history[:, :-1] >= 0) & (history[:, 1:] < 0))
  # Brute-force oracle on a sample of rows.
  for row in np.linspace(0, logs.num_requests - 1, 60).astype(int):
    earlier = np.nonzero((logs.user_id == logs.user_id[row]) & (logs.request_id < row))[0]
    clicks = [item for r in earlier for item in logs.clicked[r] if item >= 0]
    expected = clicks[-tiny.config.history_length :]
    got = [item for item in history[row] if item >= 0]
    assert got == expected, row


def test_splits_by_time(tiny):
  split = tiny.logs.split
  assert np.all(np.diff(split) >= 0)
  np.testing.assert_allclose(
    np.bincount(split, minlength=3) / len(split), tiny.config.split_fractions, atol=1e-3
  )


def test_query_features_point_at_the_intent(tiny):
  catalog, logs = tiny.catalog, tiny.logs
  leaf_mean = np.stack(
    [catalog.features[catalog.category_id == c].mean(0) for c in range(catalog.num_categories)]
  )
  leaf_queries = ~tiny.query_intent_is_mid
  distance = ((logs.query_features[leaf_queries, None, :] - leaf_mean[None]) ** 2).sum(-1)
  accuracy = (distance.argmin(1) == tiny.query_intent_leaf[leaf_queries]).mean()
  assert accuracy > 0.5


def _preferred_brand_click_share(world: world_lib.World) -> float:
  logs = world.logs
  rows, cols = np.nonzero(logs.clicked >= 0)
  brand = world.item_brand_id[logs.clicked[rows, cols]]
  return float((world.segment_brand_affinity[_segment(logs)[rows], brand] > 0).mean())


def test_personalization_shifts_clicks_to_preferred_brands():
  neutral = world_lib.generate_world(world_lib.world_preset("tiny", personalization=0.0))
  strong = world_lib.generate_world(world_lib.world_preset("tiny", personalization=3.0))
  neutral_share = _preferred_brand_click_share(neutral)
  # Without personalization brand taste is a coin flip (N(0, 1) affinity > 0).
  assert abs(neutral_share - 0.5) < 0.06
  assert _preferred_brand_click_share(strong) > neutral_share + 0.2


def _bag_of_words_category_accuracy(catalog: schema.Catalog) -> float:
  """Nearest-centroid leaf classifier on title word counts, half train half test."""
  tokens = [title.lower().split() for title in catalog.title]
  vocabulary = {word: i for i, word in enumerate(sorted({w for words in tokens for w in words}))}
  counts = np.zeros((len(tokens), len(vocabulary)), np.float32)
  for row, words in enumerate(tokens):
    for word in words:
      counts[row, vocabulary[word]] += 1
  labels = catalog.category_id
  train = np.arange(len(labels)) % 2 == 0
  centroids = np.zeros((catalog.num_categories, len(vocabulary)), np.float32)
  np.add.at(centroids, labels[train], counts[train])
  centroids /= np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-9
  predicted = np.argmax(counts[~train] @ centroids.T, axis=1)
  return float((predicted == labels[~train]).mean())


def test_title_noise_lowers_bag_of_words_accuracy():
  accuracy = {
    noise: _bag_of_words_category_accuracy(
      world_lib.generate_world(world_lib.world_preset("tiny", title_noise=noise)).catalog
    )
    for noise in (0.0, 0.5, 0.9)
  }
  assert accuracy[0.0] > 0.95
  assert accuracy[0.0] > accuracy[0.5] + 0.05 > accuracy[0.9] + 0.1


def test_synonym_rate_widens_the_vocabulary_gap():
  def share_of_query_words_in_titles(synonym_rate):
    world = world_lib.generate_world(
      world_lib.world_preset("tiny", synonym_rate=synonym_rate, title_noise=0.0)
    )
    title_words = {w for title in world.catalog.title for w in title.lower().split()}
    query_words = [w for query in world.logs.query for w in query.lower().split()]
    return np.mean([w in title_words for w in query_words])

  assert share_of_query_words_in_titles(0.0) > share_of_query_words_in_titles(0.8) + 0.3


def test_query_ambiguity_sets_share_of_mid_level_intents():
  for ambiguity in (0.0, 0.5):
    world = world_lib.generate_world(world_lib.world_preset("tiny", query_ambiguity=ambiguity))
    assert abs(world.query_intent_is_mid.mean() - ambiguity) < 0.03


def test_same_seed_same_world_other_seed_other_world(tiny):
  _assert_worlds_equal(tiny, world_lib.generate_world(world_lib.world_preset("tiny")))
  other = world_lib.generate_world(world_lib.world_preset("tiny", seed=1))
  assert list(other.catalog.title) != list(tiny.catalog.title)
  assert not np.array_equal(other.logs.exposed, tiny.logs.exposed)


def test_save_load_round_trip(tiny, tmp_path):
  directory = str(tmp_path / "world")
  world_lib.save_world(tiny, directory)
  _assert_worlds_equal(tiny, world_lib.load_world(directory))
  os.remove(os.path.join(directory, "world.json"))
  with pytest.raises(FileNotFoundError, match="world.json"):
    world_lib.load_world(directory)


def test_catalog_only_world():
  world = world_lib.generate_world(world_lib.world_preset("tiny", num_requests=0))
  assert world.catalog.num_items == world.config.num_items
  assert world.logs.num_requests == 0
  assert world.logs.recent_clicks.shape == (0, world.config.history_length)


def test_bad_config_names_the_field():
  with pytest.raises(ValueError, match="title_noise"):
    world_lib.world_preset("tiny", title_noise=1.5)
  with pytest.raises(ValueError, match="num_leaf_categories"):
    world_lib.world_preset("tiny", num_leaf_categories=2)
  with pytest.raises(ValueError, match="unknown world preset"):
    world_lib.world_preset("huge")
  with pytest.raises(ValueError, match="not_a_knob"):
    world_lib.world_preset("tiny", not_a_knob=1)
