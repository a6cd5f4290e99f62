"""Temperature sampling of SIDs and teacher-forced scoring, on the beam search machinery.

Same step-function contract as `beam_search`:
step_fn(tokens [rows], cache) -> (logits [rows, V], cache), decoding from `first_logits` [B, V]
and the prompt's cache. Three ways to restrict a draw:

  "trie"         codes of the level that continue a valid SID (constrained decoding);
  "level_range"  any code of the level (the SID may not exist in the item pool);
  "full_vocab"   any token of the vocabulary (the token may not even be a SID code).

Returned log-probs are those of the model itself (full-vocabulary softmax at temperature 1),
not of the masked / tempered distribution the token was drawn from: that is what the RL ratio
needs, and `score_sids` gives the same numbers by teacher forcing (e.g. for expert SIDs).
"""

from __future__ import annotations

from typing import Any

import gin
import jax
import jax.numpy as jnp
from flax import struct

from gr_jax.decoding import beam_search as beam_lib
from gr_jax.decoding import trie as trie_lib
from gr_jax.models import generator as generator_lib
from gr_jax.models.token_layout import TokenLayout

MODES = ("trie", "level_range", "full_vocab")


@struct.dataclass
class SampledSids:
  """G sampled SIDs per request (one RL group).

  Attributes:
    tokens: [B, G, L] int32 token ids as fed to the model.
    codes: [B, G, L] int32 codes (layout.tokens_to_sid), -1 where a token is outside its level.
    log_probs: [B, G, L] float32 model log-prob of each token (full vocabulary, temperature 1).
    valid: [B, G] bool, every token in its level's range and allowed by `allowed_first`, and,
      with a trie, the SID in the trie.
  """

  tokens: jax.Array
  codes: jax.Array
  log_probs: jax.Array
  valid: jax.Array


@gin.configurable(allowlist=["num_samples", "temperature", "mode"])
def sample_sids(
  step_fn: beam_lib.StepFn,
  first_logits: jax.Array,
  cache: Any,
  rng: jax.Array,
  *,
  layout: TokenLayout,
  num_samples: int,
  temperature: float = 1.0,
  mode: str = "level_range",
  trie: trie_lib.TrieIndex | None = None,
  allowed_first: jax.Array | None = None,
) -> SampledSids:
  """Draws `num_samples` SIDs per request, token by token.

  Args:
    step_fn: (tokens [rows], cache) -> (logits [rows, V], cache), cache leaves batch-major.
    first_logits: [B, V] logits for the first SID token.
    cache: the step function's cache for the B prompts.
    rng: a jax PRNG key.
    layout: token layout.
    num_samples: G, SIDs per request (static).
    temperature: > 0; logits are divided by it before drawing.
    mode: one of MODES (see the module docstring).
    trie: required for mode "trie"; in the other modes, when given, only decides `valid`.
    allowed_first: optional [B, C_0] bool restriction of level-0 codes ("trie" / "level_range").

  Returns:
    SampledSids with [B, G, L] tokens, codes, log-probs and a [B, G] validity flag.

  Raises:
    ValueError: on an unknown mode, a missing trie, a bad temperature or shapes that do not fit.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  if mode == "trie" and trie is None:
    raise ValueError("mode 'trie' needs a trie")
  if mode == "full_vocab" and allowed_first is not None:
    raise ValueError("allowed_first restricts level codes; it does not apply to mode 'full_vocab'")
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples}")
  beam_lib.check_decoding_inputs(
    first_logits, layout=layout, trie=trie, allowed_first=allowed_first
  )
  batch, vocab = first_logits.shape
  num_levels = layout.num_sid_levels
  logits = beam_lib.repeat_cache(first_logits, num_samples)  # [B * G, V]
  cache = beam_lib.repeat_cache(cache, num_samples)
  nodes = jnp.zeros((batch, num_samples), jnp.int32)  # [B, G] trie node ids (root)
  level_keys = jax.random.split(rng, num_levels)
  allowed = jnp.ones((batch, num_samples), bool)  # [B, G] every draw had an allowed option
  tokens, codes, log_probs = [], [], []
  for level in range(num_levels):
    logits = logits.astype(jnp.float32)
    scaled = (logits / temperature).reshape(batch, num_samples, vocab)  # [B, G, V]
    offset = layout.sid_offset(level)
    if mode == "full_vocab":
      token = jax.random.categorical(level_keys[level], scaled)  # [B, G]
    else:
      level_logits = beam_lib.level_slice(layout, level, scaled)  # [B, G, C]
      constraint = trie if mode == "trie" else None
      mask = beam_lib.allowed_codes(
        level, nodes, layout=layout, trie=constraint, allowed_first=allowed_first
      )
      if mask is not None:
        level_logits = jnp.where(mask, level_logits, beam_lib.NEG_INF)
      drawn = jax.random.categorical(level_keys[level], level_logits)  # [B, G] codes
      if mask is not None:
        # A row with nothing allowed still draws (code 0): flag it.
        mask = jnp.broadcast_to(mask, level_logits.shape)  # [B, G, C]
        allowed &= jnp.take_along_axis(mask, drawn[:, :, None], axis=2)[:, :, 0]
      token = drawn + offset  # [B, G]
    token = token.astype(jnp.int32)
    log_probs.append(
      generator_lib.token_log_probs(logits, token.reshape(-1)).reshape(batch, num_samples)
    )
    code = token - offset  # [B, G]
    code = jnp.where((code >= 0) & (code < layout.sid_level_sizes[level]), code, -1)
    if trie is not None:
      nodes = trie_lib.next_node(trie, level, nodes.reshape(-1), code.reshape(-1))
      nodes = nodes.reshape(batch, num_samples)
    tokens.append(token)
    codes.append(code)
    if level + 1 < num_levels:
      logits, cache = step_fn(token.reshape(-1), cache)  # [B * G, V]
  codes = jnp.stack(codes, axis=2)  # [B, G, L]
  valid = allowed & jnp.all(codes >= 0, axis=2)  # [B, G]
  if trie is not None:
    valid &= nodes >= 0
  return SampledSids(
    tokens=jnp.stack(tokens, axis=2),
    codes=codes,
    log_probs=jnp.stack(log_probs, axis=2),
    valid=valid,
  )


def score_sids(
  step_fn: beam_lib.StepFn,
  first_logits: jax.Array,
  cache: Any,
  sid_tokens: jax.Array,
) -> jax.Array:
  """Teacher-forced model log-probs of given SID token sequences.

  Args:
    step_fn: (tokens [rows], cache) -> (logits [rows, V], cache), cache leaves batch-major.
    first_logits: [B, V] logits for the first SID token.
    cache: the step function's cache for the B prompts.
    sid_tokens: [B, G, L] token ids (codes -> tokens with layout.sid_to_tokens); any ids in
      [0, V), e.g. invalid samples of mode "full_vocab".

  Returns:
    [B, G, L] float32 log-prob of each token under the model (full vocabulary, temperature 1).

  Raises:
    ValueError: when sid_tokens is not [B, G, L] for the batch of first_logits.
  """
  if sid_tokens.ndim != 3 or sid_tokens.shape[0] != first_logits.shape[0]:
    raise ValueError(
      f"sid_tokens: expected [{first_logits.shape[0]}, G, L], got {tuple(sid_tokens.shape)}"
    )
  batch, num_sids, num_levels = sid_tokens.shape
  flat_tokens = sid_tokens.reshape(batch * num_sids, num_levels).astype(jnp.int32)  # [B * G, L]
  logits = beam_lib.repeat_cache(first_logits, num_sids)  # [B * G, V]
  cache = beam_lib.repeat_cache(cache, num_sids)
  log_probs = []
  for level in range(num_levels):
    log_probs.append(generator_lib.token_log_probs(logits, flat_tokens[:, level]))  # [B * G]
    if level + 1 < num_levels:
      logits, cache = step_fn(flat_tokens[:, level], cache)
  return jnp.stack(log_probs, axis=1).reshape(batch, num_sids, num_levels)
