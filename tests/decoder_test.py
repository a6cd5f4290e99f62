"""Tests of gr_jax.models.decoder: cache equivalence, padding, GQA, sharding, bf16, training."""

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gr_jax.models import decoder
from gr_jax.models.token_layout import PAD_ID

VOCAB = 64
RULES = [
  ("batch", ("data", "fsdp")),
  ("length", None),
  ("embed", "fsdp"),
  ("mlp", "model"),
  ("heads", "model"),
  ("kv", None),
  ("head_dim", None),
  ("vocab", "model"),
]


def tiny(**overrides) -> decoder.DecoderConfig:
  return decoder.decoder_preset("tiny", VOCAB, **overrides)


forward = jax.jit(decoder.forward, static_argnums=1)
init_params = jax.jit(decoder.init_params, static_argnums=0)


def random_params(config: decoder.DecoderConfig, seed: int = 0, scale: float = 0.3):
  """Every leaf (biases and norm scales included) random, so no term is trivially zero."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda x: jnp.asarray((x.ndim == 1) + scale * rng.normal(size=x.shape), jnp.float32),
    param_shapes(config),
  )


def param_shapes(config: decoder.DecoderConfig):
  """Parameter tree of ShapeDtypeStructs (no compilation, no allocation)."""
  return jax.eval_shape(lambda: decoder.init_params(config, jax.random.key(0)))


def left_padded(rows: list[list[int]], length: int) -> jnp.ndarray:
  return jnp.array([[PAD_ID] * (length - len(r)) + r for r in rows], jnp.int32)


def teacher_forced(params, config, tokens, prompt_len):
  """Prefill tokens[:, :prompt_len], then extend with each later token -> [B, T - Tp + 1, V]."""
  logits, cache = decoder.prefill(params, config, tokens[:, :prompt_len], tokens.shape[1])

  def step(cache, token):  # token [B]
    step_logits, cache = decoder.extend(params, config, token, cache)
    return cache, step_logits

  cache, later = jax.lax.scan(step, cache, tokens[:, prompt_len:].T)  # later [T - Tp, B, V]
  return jnp.concatenate([logits[:, None], later.transpose(1, 0, 2)], axis=1), cache


decode_teacher_forced = jax.jit(teacher_forced, static_argnums=(1, 3))


@pytest.mark.parametrize(
  "overrides",
  [
    dict(),  # GQA, 4 query heads on 2 kv heads
    dict(num_kv_heads=1),  # MQA
    dict(num_kv_heads=4, tie_embeddings=False, qkv_bias=False),  # MHA, separate head
  ],
)
def test_cached_decoding_equals_full_recomputation(overrides):
  config = tiny(**overrides)
  params = random_params(config)
  rows = [[7, 8, 9, 10, 11, 12, 13, 14, 15], [20, 21, 22, 23, 24, 25], [30, 31, 32, 33, 34, 35, 36]]
  tokens = left_padded(rows, 10)  # pad lengths 1, 4, 3
  prompt_len = 6
  full = forward(params, config, tokens)  # [B, T, V]
  cached, cache = decode_teacher_forced(params, config, tokens, prompt_len)
  np.testing.assert_allclose(cached, full[:, prompt_len - 1 :], rtol=2e-5, atol=2e-5)
  # The cache's bookkeeping: every slot written, rope position = real token count.
  np.testing.assert_array_equal(cache["index"], [10, 10, 10])
  np.testing.assert_array_equal(cache["next_pos"], [len(r) for r in rows])
  np.testing.assert_array_equal(cache["key_valid"], tokens != PAD_ID)
  for leaf in jax.tree.leaves(cache):
    assert leaf.shape[0] == len(rows)


def test_cache_rows_can_be_reordered_like_beams():
  """Gathering every cache leaf on axis 0 moves whole rows (the beam search contract)."""
  config = tiny()
  params = random_params(config)
  tokens = left_padded([[5, 6, 7], [8, 9, 10, 11, 12]], 6)
  _, cache = jax.jit(decoder.prefill, static_argnums=(1, 3))(params, config, tokens, 8)
  order = jnp.array([1, 1, 0])
  reordered = jax.tree.map(lambda x: x[order], cache)
  extend = jax.jit(decoder.extend, static_argnums=1)
  logits, _ = extend(params, config, jnp.array([13, 14, 15]), reordered)
  full = forward(params, config, jnp.concatenate([tokens[order], jnp.array([[13], [14], [15]])], 1))
  np.testing.assert_allclose(logits, full[:, -1], rtol=2e-5, atol=2e-5)


def test_init_cache_layout():
  config = tiny()
  cache = decoder.init_cache(config, 3, 12)
  assert len(cache["layers"]) == config.num_layers
  assert cache["layers"][0]["k"].shape == (3, 12, config.num_kv_heads, config.head_dim)
  assert cache["key_valid"].shape == (3, 12) and cache["key_valid"].dtype == bool
  assert cache["next_pos"].shape == cache["index"].shape == (3,)
  axes = decoder.cache_logical_axes(config)
  assert jax.tree.structure(
    axes, is_leaf=lambda x: isinstance(x, tuple) and isinstance(x[0], str)
  ) == (jax.tree.structure(cache))


def test_padding_does_not_change_real_positions():
  config = tiny()
  params = random_params(config, seed=3)
  row = [11, 12, 13, 14, 15]
  unpadded = forward(params, config, jnp.array([row]))
  padded = forward(params, config, left_padded([row], 9))
  np.testing.assert_allclose(padded[:, 4:], unpadded, rtol=2e-5, atol=2e-5)


def test_positions_and_mask_by_hand():
  tokens = jnp.array([[0, 0, 5, 6], [7, 0, 8, 9]])
  np.testing.assert_array_equal(decoder.token_positions(tokens), [[0, 0, 0, 1], [0, 0, 1, 2]])
  mask = decoder.causal_padding_mask(tokens)
  expected_row0 = [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
  np.testing.assert_array_equal(mask[0], np.array(expected_row0, bool))


def test_rope_scores_depend_only_on_relative_position():
  rng = np.random.default_rng(0)
  query = jnp.asarray(rng.normal(size=(1, 1, 1, 8)), jnp.float32)
  key = jnp.asarray(rng.normal(size=(1, 1, 1, 8)), jnp.float32)

  def score(query_pos, key_pos):
    q = decoder.apply_rope(query, *decoder.rope_angles(jnp.array([[query_pos]]), 8, 100.0))
    k = decoder.apply_rope(key, *decoder.rope_angles(jnp.array([[key_pos]]), 8, 100.0))
    return float(jnp.sum(q * k))

  assert score(7, 3) == pytest.approx(score(14, 10), rel=1e-5)
  assert score(7, 3) != pytest.approx(score(7, 5), rel=1e-3)
  assert score(0, 0) == pytest.approx(float(jnp.sum(query * key)), rel=1e-6)


def test_grouped_query_attention_equals_repeated_kv_heads():
  """Oracle: plain multi-head attention in numpy with each kv head repeated for its group."""
  rng = np.random.default_rng(1)
  batch, length, heads, kv_heads, dim = 2, 5, 6, 2, 4
  query = rng.normal(size=(batch, length, heads, dim)).astype(np.float32)
  key = rng.normal(size=(batch, length, kv_heads, dim)).astype(np.float32)
  value = rng.normal(size=(batch, length, kv_heads, dim)).astype(np.float32)
  mask = np.asarray(decoder.causal_padding_mask(jnp.array([[0, 4, 5, 6, 7], [1, 2, 3, 4, 5]])))
  got = decoder.grouped_query_attention(*map(jnp.asarray, (query, key, value, mask)))

  key_full = np.repeat(key, heads // kv_heads, axis=2)  # [B, S, H, D]
  value_full = np.repeat(value, heads // kv_heads, axis=2)
  scores = np.einsum("bthd,bshd->bhts", query, key_full) / math.sqrt(dim)
  scores = np.where(mask[:, None], scores, -1e9)
  weights = np.exp(scores - scores.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  expected = np.einsum("bhts,bshd->bthd", weights, value_full)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_mha_when_kv_heads_equal_heads():
  config = tiny(num_kv_heads=4)
  params = param_shapes(config)
  attention = params["blocks_0"]["attention"]
  assert attention["query"].shape == attention["key"].shape == (64, 4, 16)
  tokens = jax.ShapeDtypeStruct((2, 5), jnp.int32)
  logits = jax.eval_shape(lambda p, t: decoder.forward(p, config, t), params, tokens)
  assert logits.shape == (2, 5, VOCAB) and logits.dtype == jnp.float32


@pytest.mark.parametrize(
  "overrides", [dict(), dict(tie_embeddings=False), dict(qkv_bias=False, num_kv_heads=1)]
)
def test_count_params_matches_tree(overrides):
  config = tiny(**overrides)
  params = param_shapes(config)
  assert decoder.count_params(config) == sum(math.prod(x.shape) for x in jax.tree.leaves(params))


def test_qwen05b_has_qwen25_parameter_count():
  config = decoder.decoder_preset("qwen05b", 151_936)
  assert decoder.count_params(config) == 494_032_768  # Qwen2.5-0.5B, published
  shapes = param_shapes(config)
  assert sum(math.prod(x.shape) for x in jax.tree.leaves(shapes)) == 494_032_768


def test_flops_per_token_by_hand():
  config = tiny(tie_embeddings=False)
  matmul_params = decoder.count_params(config) - VOCAB * 64
  attention = 4 * 2 * 4 * 16 * 32
  assert decoder.flops_per_token(config, 32) == 3 * (2 * matmul_params + attention)
  assert decoder.flops_per_token(config, 32, training=False) == 2 * matmul_params + attention


def test_bfloat16_runs_and_is_close_to_float32():
  config = tiny()
  config_bf16 = dataclasses.replace(config, dtype="bfloat16")
  params = random_params(config, seed=5, scale=0.1)
  tokens = left_padded([[5, 6, 7, 8, 9, 10], [11, 12, 13]], 6)
  logits = forward(params, config, tokens)
  logits_bf16 = forward(params, config_bf16, tokens)
  assert logits_bf16.dtype == jnp.float32
  error = float(jnp.max(jnp.abs(logits_bf16 - logits)))
  assert error < 0.05 * float(jnp.max(jnp.abs(logits))), error
  # Cached decoding also runs in bf16 (cache stored in bf16).
  cached, cache = decode_teacher_forced(params, config_bf16, tokens, 4)
  assert cache["layers"][0]["k"].dtype == jnp.bfloat16
  assert float(jnp.max(jnp.abs(cached - logits[:, 3:]))) < 0.05 * float(jnp.max(jnp.abs(logits)))


def test_sharded_forward_equals_single_device():
  if jax.device_count() < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
  config = tiny()
  reference_params = random_params(config, seed=7)
  tokens = left_padded([[5 + i + j for j in range(3 + i % 5)] for i in range(8)], 8)
  reference = forward(reference_params, config, tokens)
  # Without a mesh the logical constraints are no-ops.
  unsharded_jaxpr = jax.make_jaxpr(lambda p, t: decoder.forward(p, config, t))(
    reference_params, tokens
  )
  assert "sharding_constraint" not in str(unsharded_jaxpr)
  reference_cached, _ = decode_teacher_forced(reference_params, config, tokens, 5)

  devices = np.asarray(jax.devices()[:8]).reshape(4, 1, 2)
  mesh = jax.sharding.Mesh(devices, ("data", "fsdp", "model"))
  with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
    shardings = decoder.param_shardings(config, mesh, RULES)
    params = jax.jit(lambda p: p, out_shardings=shardings)(reference_params)
    token_sharding = nn.logical_to_mesh_sharding(
      jax.sharding.PartitionSpec("batch", "length"), mesh, RULES
    )
    tokens_sharded = jax.device_put(tokens, token_sharding)
    # Fresh functions: a trace cached outside the rules context would hold no constraints.
    sharded_forward = lambda p, t: decoder.forward(p, config, t)
    assert "sharding_constraint" in str(jax.make_jaxpr(sharded_forward)(params, tokens_sharded))
    logits = jax.jit(sharded_forward)(params, tokens_sharded)
    cached, cache = jax.jit(lambda p, t: teacher_forced(p, config, t, 5))(params, tokens_sharded)
    initialised = jax.jit(lambda rng: decoder.init_params(config, rng), out_shardings=shardings)(
      jax.random.key(0)
    )

  P = jax.sharding.PartitionSpec
  assert params["embedding"].sharding.spec == P("model", "fsdp")
  assert params["blocks_0"]["mlp"]["gate"].sharding.spec == P("fsdp", "model")
  assert params["blocks_0"]["mlp"]["down"].sharding.spec == P("model", "fsdp")
  assert params["blocks_1"]["attention"]["query"].sharding.spec == P("fsdp", "model", None)
  assert params["blocks_1"]["attention"]["key"].sharding.spec == P("fsdp", None, None)
  assert initialised["embedding"].sharding.spec == P("model", "fsdp")
  # Each device really holds only its shard.
  assert params["embedding"].addressable_shards[0].data.shape == (VOCAB // 2, 64)
  assert logits.addressable_shards[0].data.shape == (2, 8, VOCAB // 2)
  assert cache["layers"][0]["k"].addressable_shards[0].data.shape == (2, 8, 2, 16)
  np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(cached, reference_cached, rtol=1e-4, atol=1e-4)


def test_training_on_copy_task_lowers_loss():
  """The second half of each sequence repeats the first: only attention can predict it."""
  config = tiny(num_layers=2)
  half, content = 6, 16  # content tokens 10..25
  params = init_params(config, jax.random.key(0))
  optimizer = optax.adam(1e-2)
  opt_state = optimizer.init(params)

  def loss_fn(params, tokens):
    logits = forward(params, config, tokens[:, :-1])
    log_probs = jax.nn.log_softmax(logits[:, half:])  # predict the copied half
    targets = tokens[:, half + 1 :]
    return -jnp.mean(jnp.take_along_axis(log_probs, targets[..., None], -1))

  @jax.jit
  def step(params, opt_state, rng):
    first = jax.random.randint(rng, (32, half), 10, 10 + content)
    tokens = jnp.concatenate([first, jnp.full((32, 1), 3), first], axis=1)  # 3 = SEP
    loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  for rng in jax.random.split(jax.random.key(1), 60):
    params, opt_state, loss = step(params, opt_state, rng)
    losses.append(float(loss))
  assert losses[0] > math.log(content)
  # Below the loss of guessing uniformly among the content tokens: it copies.
  assert np.mean(losses[-5:]) < 0.25 * math.log(content), losses[-5:]


def test_padded_vocab_equals_unpadded_model_on_real_columns():
  config = decoder.decoder_preset("tiny", 60, num_layers=1)
  padded_config = dataclasses.replace(config, vocab_multiple=16)
  assert padded_config.padded_vocab_size == 64
  padded_params = random_params(padded_config, seed=2)
  params = {**padded_params, "embedding": padded_params["embedding"][:60]}
  tokens = left_padded([[5, 6, 59], [7]], 3)
  logits = forward(params, config, tokens)
  padded_logits = forward(padded_params, padded_config, tokens)
  assert padded_logits.shape == (2, 3, 64)
  np.testing.assert_allclose(padded_logits[..., :60], logits, rtol=1e-5, atol=1e-5)
  assert float(jnp.max(padded_logits[..., 60:])) <= -1e8
  assert decoder.count_params(padded_config) == decoder.count_params(config) + 4 * 64


def test_remat_gives_the_same_gradients():
  config = tiny(num_layers=1)
  params = random_params(config, seed=4, scale=0.1)
  tokens = left_padded([[5, 6, 7, 8], [9, 10]], 4)

  def grads(config):
    loss = lambda p: jnp.mean(jax.nn.logsumexp(decoder.forward(p, config, tokens), -1))
    return jax.jit(jax.grad(loss))(params)

  jax.tree.map(
    functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6),
    grads(dataclasses.replace(config, remat=True)),
    grads(config),
  )


def test_bad_arguments_raise_clear_errors():
  with pytest.raises(ValueError, match="num_kv_heads"):
    tiny(num_kv_heads=3)
  with pytest.raises(ValueError, match="dtype"):
    tiny(dtype="float16")
  with pytest.raises(ValueError, match="head_dim"):
    tiny(head_dim=15)
  with pytest.raises(ValueError, match="unknown preset"):
    decoder.decoder_preset("huge", VOCAB)
  config = tiny(max_len=8)
  params = param_shapes(config)
  with pytest.raises(ValueError, match="max_len=8"):
    jax.eval_shape(lambda p: decoder.forward(p, config, jnp.ones((1, 9), jnp.int32)), params)
  with pytest.raises(ValueError, match="prompt length 6"):
    jax.eval_shape(lambda p: decoder.prefill(p, config, jnp.ones((1, 6), jnp.int32), 5), params)
