"""InfoNCE and category SupCon against their formulas on hand examples."""

import jax.numpy as jnp
import numpy as np
import pytest

from gr_jax.sid import losses


def _cosine(a, b):
  a = a / np.linalg.norm(a, axis=1, keepdims=True)
  b = b / np.linalg.norm(b, axis=1, keepdims=True)
  return a @ b.T


def _log_softmax_at(row, index):
  return row[index] - np.log(np.sum(np.exp(row)))


def test_bidirectional_info_nce_equals_formula():
  items = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  queries = np.array([[1.0, 0.2], [0.1, 1.0], [0.5, -1.0]])
  temperature = 0.1
  sims = _cosine(items, queries) / temperature
  expected = np.mean(
    [-0.5 * (_log_softmax_at(sims[i], i) + _log_softmax_at(sims[:, i], i)) for i in range(3)]
  )
  got = losses.bidirectional_info_nce(
    jnp.asarray(items), jnp.asarray(queries), jnp.ones(3, bool), temperature
  )
  assert float(got) == pytest.approx(expected, rel=1e-5)


def test_info_nce_masks_rows_without_query():
  rng = np.random.default_rng(0)
  items = rng.normal(size=(5, 3))
  queries = rng.normal(size=(5, 3))
  has_query = np.array([True, False, True, True, False])
  got = losses.bidirectional_info_nce(
    jnp.asarray(items), jnp.asarray(queries), jnp.asarray(has_query), 0.1
  )
  # Same as the loss on the valid rows alone: masked rows are neither anchors nor negatives.
  valid = losses.bidirectional_info_nce(
    jnp.asarray(items[has_query]), jnp.asarray(queries[has_query]), jnp.ones(3, bool), 0.1
  )
  assert float(got) == pytest.approx(float(valid), rel=1e-5)
  # Garbage in a masked query row changes nothing.
  queries[1] = 1e3
  again = losses.bidirectional_info_nce(
    jnp.asarray(items), jnp.asarray(queries), jnp.asarray(has_query), 0.1
  )
  assert float(again) == pytest.approx(float(got), rel=1e-6)
  none = losses.bidirectional_info_nce(
    jnp.asarray(items), jnp.asarray(queries), jnp.zeros(5, bool), 0.1
  )
  assert float(none) == 0.0


def test_category_supcon_equals_formula():
  latents = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 1.0], [1.0, 1.0]])
  category = np.array([0, 0, 1, 1, -1])
  temperature = 0.5
  sims = _cosine(latents, latents) / temperature
  known = [0, 1, 2, 3]
  per_anchor = []
  for i in known:
    others = [a for a in known if a != i]
    log_den = np.log(np.sum(np.exp(sims[i, others])))
    positives = [p for p in others if category[p] == category[i]]
    per_anchor.append(-np.mean([sims[i, p] - log_den for p in positives]))
  got = losses.category_supervised_contrastive(
    jnp.asarray(latents), jnp.asarray(category), temperature
  )
  assert float(got) == pytest.approx(np.mean(per_anchor), rel=1e-5)
