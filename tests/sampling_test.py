import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gr_jax.decoding import sampling
from gr_jax.decoding import trie as trie_lib
from gr_jax.models.token_layout import TokenLayout

NUM_STATES = 53
LEVEL_SIZES = (3, 2, 3)
LAYOUT = TokenLayout(text_vocab_size=4, sid_level_sizes=LEVEL_SIZES)
PRODUCT = np.array(list(itertools.product(*[range(s) for s in LEVEL_SIZES])), np.int32)  # [18, 3]
VALID_SIDS = PRODUCT[[0, 3, 4, 7, 9, 10, 15, 17]]


class PrefixHashModel:
  """Toy model whose next-token logits depend on the whole prefix through a hashed state."""

  def __init__(self, seed: int, sid_bias: float = 0.0):
    self.table = np.random.default_rng(seed).normal(0.0, 1.5, (NUM_STATES, LAYOUT.vocab_size))
    # A bias on the SID tokens puts most, but not all, of the mass on them.
    self.table[:, LAYOUT.sid_offset(0) :] += sid_bias
    self.table = self.table.astype(np.float32)

  @staticmethod
  def next_state(state, tokens):
    return (state * 29 + tokens + 3) % NUM_STATES

  def prefill(self, prompts):
    state = jnp.asarray(np.asarray(prompts) % NUM_STATES, jnp.int32)
    return jnp.asarray(self.table)[state], {"state": state}

  def step_fn(self, tokens, cache):
    state = self.next_state(cache["state"], tokens)
    return jnp.asarray(self.table)[state], {"state": state}

  def sid_distribution(self, prompt, sids, temperature=1.0, allowed=None):
    """Exact probability of drawing each SID [M, L] when every level is restricted to its codes
    and renormalised over the children allowed by `allowed` ([K, L] SIDs; None = all codes)."""
    allowed = PRODUCT if allowed is None else allowed
    probs = np.ones(sids.shape[0])
    state = np.full(sids.shape[0], prompt % NUM_STATES)
    for level, size in enumerate(LEVEL_SIZES):
      logits = self.table[state][:, LAYOUT.sid_offset(level) + np.arange(size)] / temperature
      ok = np.array(
        [
          [(*sid[:level], code) in {tuple(a[: level + 1]) for a in allowed} for code in range(size)]
          for sid in sids.tolist()
        ]
      )  # [M, size] codes continuing an allowed prefix
      weights = np.where(ok, np.exp(logits - logits.max(-1, keepdims=True)), 0.0)
      total = weights.sum(-1)  # 0 below a prefix that is not allowed, where probs is 0 already
      probs *= weights[np.arange(len(sids)), sids[:, level]] / np.where(total > 0, total, 1.0)
      state = self.next_state(state, sids[:, level] + LAYOUT.sid_offset(level))
    return probs


def draw(model, prompts, rng_seed, **kwargs):
  first_logits, cache = model.prefill(prompts)
  sample = jax.jit(functools.partial(sampling.sample_sids, model.step_fn, layout=LAYOUT, **kwargs))
  return jax.tree.map(np.asarray, sample(first_logits, cache, jax.random.key(rng_seed)))


def assert_frequencies_match(codes, probs):
  """Empirical SID frequencies within 5 standard errors (+ a small floor) of `probs`."""
  num = codes.shape[0]
  index = {tuple(s): i for i, s in enumerate(PRODUCT.tolist())}
  counts = np.bincount([index[tuple(s)] for s in codes.tolist()], minlength=len(PRODUCT))
  tolerance = 5 * np.sqrt(probs * (1 - probs) / num) + 2e-3
  np.testing.assert_array_less(np.abs(counts / num - probs), tolerance)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_level_range_frequencies_match_model(temperature):
  model = PrefixHashModel(seed=0)
  samples = draw(model, [5, 11], 0, num_samples=6000, temperature=temperature, mode="level_range")
  assert samples.valid.all()
  np.testing.assert_array_equal(samples.tokens, LAYOUT.sid_to_tokens(samples.codes))
  for row, prompt in enumerate([5, 11]):
    probs = model.sid_distribution(prompt, PRODUCT, temperature)
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-6)
    assert_frequencies_match(samples.codes[row], probs)


def test_trie_constrained_samples_are_valid_and_follow_model():
  model = PrefixHashModel(seed=1)
  trie = trie_lib.build_trie_index(VALID_SIDS, LEVEL_SIZES, dense_level2_max_entries=0)
  samples = draw(model, [2], 1, num_samples=6000, mode="trie", trie=trie)
  assert samples.valid.all()
  valid_set = {tuple(s) for s in VALID_SIDS.tolist()}
  assert all(tuple(s) in valid_set for s in samples.codes[0].tolist())
  assert_frequencies_match(samples.codes[0], model.sid_distribution(2, PRODUCT, allowed=VALID_SIDS))


def test_allowed_first_is_respected():
  model = PrefixHashModel(seed=2)
  trie = trie_lib.build_trie_index(VALID_SIDS, LEVEL_SIZES)
  allowed_first = jnp.array([[False, True, True], [True, False, False], [False, False, False]])
  for mode in ("trie", "level_range"):
    samples = draw(
      model, [1, 8, 9], 2, num_samples=300, mode=mode, trie=trie, allowed_first=allowed_first
    )
    assert set(samples.codes[0, :, 0].tolist()) <= {1, 2}
    assert set(samples.codes[1, :, 0].tolist()) == {0}
    assert not samples.valid[2].any()  # nothing allowed: the draws are flagged
    valid_set = {tuple(s) for s in VALID_SIDS.tolist()}
    in_trie = np.array([[tuple(s) in valid_set for s in row.tolist()] for row in samples.codes[:2]])
    np.testing.assert_array_equal(samples.valid[:2], in_trie)
    if mode == "trie":
      assert in_trie.all()


def test_full_vocab_flags_invalid_and_log_probs_match_scoring():
  model = PrefixHashModel(seed=3, sid_bias=3.0)
  trie = trie_lib.build_trie_index(VALID_SIDS, LEVEL_SIZES)
  prompts = [4, 30]
  samples = draw(model, prompts, 3, num_samples=500, mode="full_vocab", trie=trie)
  in_range = np.asarray(LAYOUT.is_valid_sid_token(samples.tokens)).all(-1)  # [B, N]
  valid_set = {tuple(s) for s in VALID_SIDS.tolist()}
  in_trie = np.array([[tuple(s) in valid_set for s in row.tolist()] for row in samples.codes])
  np.testing.assert_array_equal(samples.valid, in_range & in_trie)
  assert 0 < samples.valid.mean() < 1  # the toy model puts mass outside the SID ranges
  np.testing.assert_array_equal(samples.codes >= 0, LAYOUT.is_valid_sid_token(samples.tokens))
  # Returned log-probs are the model's: teacher forcing the same tokens gives the same numbers.
  first_logits, cache = model.prefill(prompts)
  scored = jax.jit(functools.partial(sampling.score_sids, model.step_fn))(
    first_logits, cache, jnp.asarray(samples.tokens)
  )
  np.testing.assert_allclose(scored, samples.log_probs, rtol=1e-5, atol=1e-5)
  # And they are the full-vocabulary log-softmax of the toy table along the path.
  log_table = model.table - np.log(np.exp(model.table).sum(-1, keepdims=True))
  state = np.asarray(prompts)[:, None] % NUM_STATES
  for level in range(len(LEVEL_SIZES)):
    token = samples.tokens[:, :, level]
    np.testing.assert_allclose(
      samples.log_probs[:, :, level], log_table[state, token], rtol=1e-5, atol=1e-5
    )
    state = model.next_state(state, token)


def test_sharded_batch_equals_single_device():
  assert jax.device_count() == 8, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
  model = PrefixHashModel(seed=4)
  trie = trie_lib.build_trie_index(VALID_SIDS, LEVEL_SIZES)
  first_logits, cache = model.prefill(np.arange(8) * 5)
  sample = functools.partial(
    sampling.sample_sids, model.step_fn, layout=LAYOUT, num_samples=4, mode="trie", trie=trie
  )
  key = jax.random.key(7)
  single = jax.jit(sample)(first_logits, cache, key)
  mesh = Mesh(np.array(jax.devices()), ("data",))
  batch_sharding = NamedSharding(mesh, P("data"))
  with jax.set_mesh(mesh):
    sharded = jax.jit(
      sample,
      in_shardings=(batch_sharding, batch_sharding, NamedSharding(mesh, P())),
      out_shardings=batch_sharding,
    )(*jax.device_put((first_logits, cache), batch_sharding), key)
  assert sharded.tokens.sharding.spec == P("data")
  np.testing.assert_array_equal(np.asarray(sharded.tokens), np.asarray(single.tokens))
  np.testing.assert_array_equal(np.asarray(sharded.valid), np.asarray(single.valid))
  np.testing.assert_allclose(np.asarray(sharded.log_probs), np.asarray(single.log_probs), rtol=1e-6)


def test_bad_arguments_raise():
  model = PrefixHashModel(seed=5)
  first_logits, cache = model.prefill([0])
  key = jax.random.key(0)
  call = functools.partial(sampling.sample_sids, model.step_fn, first_logits, cache, key)
  with pytest.raises(ValueError, match="mode"):
    call(layout=LAYOUT, num_samples=2, mode="beam")
  with pytest.raises(ValueError, match="needs a trie"):
    call(layout=LAYOUT, num_samples=2, mode="trie")
  with pytest.raises(ValueError, match="temperature"):
    call(layout=LAYOUT, num_samples=2, temperature=0.0)
  with pytest.raises(ValueError, match="full_vocab"):
    call(layout=LAYOUT, num_samples=2, mode="full_vocab", allowed_first=jnp.ones((1, 3), bool))
  with pytest.raises(ValueError, match="sid_tokens"):
    sampling.score_sids(model.step_fn, first_logits, cache, jnp.zeros((2, 1, 3), jnp.int32))
