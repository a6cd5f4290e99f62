import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gr_jax.decoding import beam_search as beam_lib
from gr_jax.decoding import trie as trie_lib
from gr_jax.models.token_layout import TokenLayout

NUM_STATES = 101


class PrefixHashModel:
  """Toy model whose next-token logits depend on the whole prefix (through a hash state).

  The cache carries the hash, so a wrong cache reorder changes the scores.
  """

  def __init__(self, layout: TokenLayout, seed: int):
    rng = np.random.default_rng(seed)
    self.layout = layout
    self.table = rng.normal(0.0, 2.0, (NUM_STATES, layout.vocab_size)).astype(np.float32)

  @staticmethod
  def next_state(state, tokens):
    return (state * 31 + tokens + 7) % NUM_STATES

  def prefill(self, prompts: np.ndarray):
    state = jnp.asarray(prompts % NUM_STATES, jnp.int32)  # [B]
    return jnp.asarray(self.table)[state], {"state": state}

  def step_fn(self, tokens, cache):
    state = self.next_state(cache["state"], tokens)
    return jnp.asarray(self.table)[state], {"state": state}

  def brute_force_scores(self, prompt: int, sids: np.ndarray) -> np.ndarray:
    """[M, L] codes -> [M] summed full-vocabulary log-probs, in numpy."""
    tokens = self.layout.sid_to_tokens(sids.astype(np.int64))  # [M, L]
    log_table = self.table - np.log(np.exp(self.table).sum(-1, keepdims=True))
    state = np.full(sids.shape[0], prompt % NUM_STATES)
    total = np.zeros(sids.shape[0])
    for level in range(sids.shape[1]):
      total += log_table[state, tokens[:, level]]
      state = self.next_state(state, tokens[:, level])
    return total


def brute_force_top(model, prompt, candidates, beam_size):
  """Best-first SIDs and scores among `candidates` [M, L]."""
  scores = model.brute_force_scores(prompt, candidates)
  order = np.argsort(-scores, kind="stable")[:beam_size]
  return candidates[order], scores[order]


def run_beam_search(model, prompts, beam_size, trie=None, allowed_first=None):
  first_logits, cache = model.prefill(prompts)
  search = jax.jit(
    functools.partial(beam_lib.beam_search, model.step_fn, layout=model.layout, beam_size=beam_size)
  )
  outputs = search(first_logits, cache, trie=trie, allowed_first=allowed_first)
  return jax.tree.map(np.asarray, outputs)


def random_sid_set(rng, level_sizes, num):
  product = np.array(list(itertools.product(*[range(s) for s in level_sizes])), np.int32)
  return product[rng.choice(len(product), num, replace=False)]


class MarkovTable:
  """Hand-built fixed-probability chain: p(s1) then p(s2 | s1), nothing outside the SID codes."""

  def __init__(self):
    self.layout = TokenLayout(text_vocab_size=0, sid_level_sizes=(2, 3))
    vocab = self.layout.vocab_size
    self.first = np.full(vocab, -np.inf, np.float32)
    self.first[self.layout.sid_offset(0) + np.arange(2)] = np.log([0.55, 0.45])
    self.after = np.full((vocab, vocab), -np.inf, np.float32)  # [previous token, V]
    level1 = self.layout.sid_offset(1) + np.arange(3)
    self.after[self.layout.sid_offset(0), level1] = np.log([0.4, 0.35, 0.25])
    self.after[self.layout.sid_offset(0) + 1, level1] = np.log([0.9, 0.05, 0.05])

  def step_fn(self, tokens, cache):
    return jnp.asarray(self.after)[tokens], {"last": tokens}

  def search(self, beam_size, trie=None):
    first_logits = jnp.asarray(self.first)[None]  # [1, V]
    cache = {"last": jnp.zeros((1,), jnp.int32)}
    return jax.tree.map(
      np.asarray,
      jax.jit(
        functools.partial(
          beam_lib.beam_search, self.step_fn, layout=self.layout, beam_size=beam_size, trie=trie
        )
      )(first_logits, cache),
    )


def test_markov_oracle_beats_greedy():
  chain = MarkovTable()
  # p(0,0) = .22, p(0,1) = .1925, p(0,2) = .1375, p(1,0) = .405, p(1,1) = p(1,2) = .0225.
  sids, scores, valid = chain.search(beam_size=2)
  np.testing.assert_array_equal(sids[0], [[1, 0], [0, 0]])
  np.testing.assert_allclose(np.exp(scores[0]), [0.405, 0.22], rtol=1e-6)
  assert valid.all()
  # One beam is greedy and misses the best SID.
  sids, scores, _ = chain.search(beam_size=1)
  np.testing.assert_array_equal(sids[0], [[0, 0]])
  np.testing.assert_allclose(np.exp(scores[0]), [0.22], rtol=1e-6)
  # Without (1, 0) in the index the constrained search falls back to the next valid SIDs.
  trie = trie_lib.build_trie_index(np.array([[0, 0], [0, 1], [1, 1]]), (2, 3))
  sids, scores, valid = chain.search(beam_size=4, trie=trie)
  np.testing.assert_array_equal(sids[0], [[0, 0], [0, 1], [1, 1], [-1, -1]])
  np.testing.assert_allclose(np.exp(scores[0, :3]), [0.22, 0.1925, 0.0225], rtol=1e-6)
  np.testing.assert_array_equal(valid[0], [True, True, True, False])
  assert scores[0, 3] == -np.inf


@pytest.mark.parametrize("dense_level2_max_entries", [1 << 20, 0])
def test_constrained_equals_brute_force_over_valid_sids(dense_level2_max_entries):
  rng = np.random.default_rng(0)
  level_sizes = (5, 3, 4, 2)
  layout = TokenLayout(text_vocab_size=6, sid_level_sizes=level_sizes)
  valid_sids = random_sid_set(rng, level_sizes, 23)
  trie = trie_lib.build_trie_index(
    valid_sids, level_sizes, dense_level2_max_entries=dense_level2_max_entries
  )
  model = PrefixHashModel(layout, seed=1)
  prompts = np.array([3, 17, 40])
  beam_size = 30  # more beams than valid SIDs: the search is exhaustive
  sids, scores, valid = run_beam_search(model, prompts, beam_size, trie=trie)
  for row, prompt in enumerate(prompts):
    want_sids, want_scores = brute_force_top(model, prompt, valid_sids, beam_size)
    np.testing.assert_array_equal(sids[row, :23], want_sids)
    np.testing.assert_allclose(scores[row, :23], want_scores, rtol=1e-5, atol=1e-5)
    assert valid[row, :23].all() and not valid[row, 23:].any()
    assert (sids[row, 23:] == -1).all() and (scores[row, 23:] == -np.inf).all()
  # Fewer beams: every returned SID is valid, best first, scored as brute force scores it.
  sids, scores, valid = run_beam_search(model, prompts, 6, trie=trie)
  valid_set = {tuple(s) for s in valid_sids}
  assert valid.all()
  for row, prompt in enumerate(prompts):
    assert all(tuple(s) in valid_set for s in sids[row])
    assert (np.diff(scores[row]) <= 0).all()
    np.testing.assert_allclose(scores[row], model.brute_force_scores(prompt, sids[row]), atol=1e-5)


def test_unconstrained_equals_brute_force_over_code_product():
  level_sizes = (3, 2, 4)
  layout = TokenLayout(text_vocab_size=4, sid_level_sizes=level_sizes)
  product = np.array(list(itertools.product(*[range(s) for s in level_sizes])), np.int32)
  model = PrefixHashModel(layout, seed=2)
  prompts = np.array([1, 9])
  sids, scores, valid = run_beam_search(model, prompts, beam_size=30)  # 24 SIDs exist
  for row, prompt in enumerate(prompts):
    want_sids, want_scores = brute_force_top(model, prompt, product, 24)
    np.testing.assert_array_equal(sids[row, :24], want_sids)
    np.testing.assert_allclose(scores[row, :24], want_scores, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(valid[:, :24], True)
  np.testing.assert_array_equal(valid[:, 24:], False)


def test_allowed_first_restricts_level_one():
  rng = np.random.default_rng(3)
  level_sizes = (6, 3, 3)
  layout = TokenLayout(text_vocab_size=2, sid_level_sizes=level_sizes)
  valid_sids = random_sid_set(rng, level_sizes, 30)
  trie = trie_lib.build_trie_index(valid_sids, level_sizes)
  model = PrefixHashModel(layout, seed=4)
  prompts = np.array([5, 6, 7])
  allowed_first = np.zeros((3, 6), bool)
  allowed_first[0, [1, 4]] = True
  allowed_first[1, :] = True
  beam_size = 32
  for constrained in (True, False):
    sids, scores, valid = run_beam_search(
      model, prompts, beam_size, trie=trie if constrained else None, allowed_first=allowed_first
    )
    product = np.array(list(itertools.product(*[range(s) for s in level_sizes])), np.int32)
    for row, prompt in enumerate(prompts[:2]):
      pool = valid_sids if constrained else product
      pool = pool[allowed_first[row, pool[:, 0]]]
      count = min(len(pool), beam_size)
      want_sids, want_scores = brute_force_top(model, prompt, pool, count)
      np.testing.assert_array_equal(sids[row, :count], want_sids)
      np.testing.assert_allclose(scores[row, :count], want_scores, atol=1e-5)
      assert valid[row, :count].all() and not valid[row, count:].any()
    # Nothing allowed: nothing returned.
    assert not valid[2].any() and (sids[2] == -1).all()


def test_sharded_batch_equals_single_device():
  assert jax.device_count() == 8, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
  rng = np.random.default_rng(5)
  level_sizes = (7, 4, 3, 2)
  layout = TokenLayout(text_vocab_size=5, sid_level_sizes=level_sizes)
  trie = trie_lib.build_trie_index(random_sid_set(rng, level_sizes, 60), level_sizes)
  model = PrefixHashModel(layout, seed=6)
  first_logits, cache = model.prefill(np.arange(16) * 3)
  allowed_first = jnp.asarray(rng.random((16, 7)) < 0.7)
  search = functools.partial(
    beam_lib.beam_search, model.step_fn, layout=layout, beam_size=10, trie=trie
  )
  single = jax.jit(search)(first_logits, cache, allowed_first=allowed_first)
  mesh = Mesh(np.array(jax.devices()), ("data",))
  batch_sharding = NamedSharding(mesh, P("data"))
  with jax.set_mesh(mesh):
    sharded_fn = jax.jit(
      lambda logits, cache, allowed: search(logits, cache, allowed_first=allowed),
      in_shardings=batch_sharding,
      out_shardings=batch_sharding,
    )
    sharded = sharded_fn(*jax.device_put((first_logits, cache, allowed_first), batch_sharding))
  assert sharded[0].sharding.spec == P("data")
  # Beams stay in their request's shard: the compiled search moves nothing between devices.
  with jax.set_mesh(mesh):
    compiled = sharded_fn.lower(
      *jax.device_put((first_logits, cache, allowed_first), batch_sharding)
    ).compile()
  collectives = ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter")
  assert not [op for op in collectives if op in compiled.as_text()]
  np.testing.assert_array_equal(np.asarray(sharded[0]), np.asarray(single[0]))  # sids
  np.testing.assert_allclose(np.asarray(sharded[1]), np.asarray(single[1]), rtol=1e-6)  # scores
  np.testing.assert_array_equal(np.asarray(sharded[2]), np.asarray(single[2]))  # valid


def test_bad_inputs_raise():
  layout = TokenLayout(text_vocab_size=3, sid_level_sizes=(3, 2))
  model = PrefixHashModel(layout, seed=0)
  first_logits, cache = model.prefill(np.arange(2))
  with pytest.raises(ValueError, match="first_logits"):
    beam_lib.beam_search(model.step_fn, first_logits[:, :-1], cache, layout=layout, beam_size=2)
  other = trie_lib.build_trie_index(np.array([[0, 0]]), (3, 3))
  with pytest.raises(ValueError, match="trie"):
    beam_lib.beam_search(model.step_fn, first_logits, cache, layout=layout, beam_size=2, trie=other)
  with pytest.raises(ValueError, match="allowed_first"):
    beam_lib.beam_search(
      model.step_fn,
      first_logits,
      cache,
      layout=layout,
      beam_size=2,
      allowed_first=jnp.ones((2, 2), bool),
    )
  with pytest.raises(ValueError, match="beam_size"):
    beam_lib.beam_search(model.step_fn, first_logits, cache, layout=layout, beam_size=0)
