"""Serving-side retrieval: prompts -> constrained beam search -> SIDs -> items.

A `Retriever` holds everything once (generator params on the mesh, the trie on
device, the SID -> items table on the host) and answers `retrieve(prompts,
beam_size)`. One jitted program per (batch, beam size) does prefill, the beam
search and the trie lookups on device; only prompts go in and SIDs come out.

Inputs are checked before anything reaches a device: a mismatch between the
tables, the item scores and the generator, an empty or non-integer batch, token
ids outside the vocabulary, prompts longer than the model accepts, or a beam size
or item count below 1 raise errors.RetrieverInputError naming what is wrong.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import gin
import jax
import numpy as np

from gr_jax import errors
from gr_jax import workdir as workdir_lib
from gr_jax.decoding import beam_search as beam_lib
from gr_jax.decoding import trie as trie_lib
from gr_jax.eval import metrics
from gr_jax.models import decoder
from gr_jax.models.generator import Generator
from gr_jax.models.token_layout import PAD_ID, TokenLayout
from gr_jax.sid import tables
from gr_jax.train import partitioning


def decode_prompts(
  params,
  trie: trie_lib.TrieIndex | None,
  prompts: jax.Array,
  allowed_first: jax.Array | None,
  model_config: decoder.DecoderConfig,
  layout: TokenLayout,
  beam_size: int,
):
  """Prefill + constrained beam search: [B, Tp] prompts -> (sids [B, K, L], scores, valid).

  Pure and traceable (what `Retriever` jits and `serving/export.py` exports).
  """
  # Cache: the prompt plus the L-1 SID tokens fed back (the last one is never fed).
  max_len = prompts.shape[1] + layout.num_sid_levels
  first_logits, cache = decoder.prefill(params, model_config, prompts, max_len)
  step_fn = lambda tokens, c: decoder.extend(params, model_config, tokens, c)
  return beam_lib.beam_search(
    step_fn,
    first_logits,
    cache,
    layout=layout,
    beam_size=beam_size,
    trie=trie,
    allowed_first=allowed_first,
  )


@gin.configurable(allowlist=["batch_size", "constrained"])
class Retriever:
  """Generative retrieval over one SID space.

  Args:
    params: generator parameters (host or device arrays).
    model_config: the generator's DecoderConfig.
    layout: token layout (its sid_level_sizes must match the SID tables).
    sid_tables: the SID -> items expansion table.
    efficiency_score: [N] item score for ranking inside a cluster / truncation.
    mesh: device mesh (default: the gin mesh over all devices).
    rules: logical axis rules (default: gin rules).
    batch_size: requests per device program (padded to a multiple of the data axes).
    constrained: decode over the trie of valid SIDs (True) or any code per level.
  """

  def __init__(
    self,
    params,
    model_config: decoder.DecoderConfig,
    layout: TokenLayout,
    sid_tables: tables.SidTables,
    efficiency_score: np.ndarray,
    *,
    mesh: jax.sharding.Mesh | None = None,
    rules=None,
    batch_size: int = 256,
    constrained: bool = True,
  ):
    if tuple(sid_tables.level_sizes) != layout.sid_level_sizes:
      raise errors.RetrieverInputError(
        f"Retriever: SID tables have level sizes {sid_tables.level_sizes}, the generator's "
        f"layout {layout.sid_level_sizes}: they come from different tokenizers"
      )
    _check_items(sid_tables, np.asarray(efficiency_score))
    self.model_config = model_config
    self.layout = layout
    self.sid_tables = sid_tables
    self.efficiency_score = np.asarray(efficiency_score, np.float32)
    self.mesh = mesh if mesh is not None else partitioning.make_mesh()
    self.rules = tuple(rules) if rules is not None else partitioning.logical_rules()
    self._batch_sharding = partitioning.batch_sharding(self.mesh, self.rules)
    data_ways = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
    self.batch_size = max(data_ways, -(-batch_size // data_ways) * data_ways)
    shardings = decoder.param_shardings(model_config, self.mesh, self.rules)
    self.params = jax.device_put(params, shardings)
    self.trie = None
    if constrained:
      # Built on the host, then replicated on the mesh once (set-up may copy).
      with jax.transfer_guard("allow"):
        trie = trie_lib.build_trie_index(sid_tables.sids, layout.sid_level_sizes)
      self.trie = jax.device_put(trie, partitioning.replicated(self.mesh))

  def set_params(self, params) -> None:
    """Decodes with other weights of the same model from now on (no recompilation)."""
    shardings = decoder.param_shardings(self.model_config, self.mesh, self.rules)
    self.params = jax.device_put(params, shardings)

  @functools.partial(jax.jit, static_argnames=("self", "beam_size"))
  def _decode(self, params, trie, prompts, allowed_first, *, beam_size: int):
    return decode_prompts(
      params, trie, prompts, allowed_first, self.model_config, self.layout, beam_size
    )

  def decode(self, prompts: np.ndarray, beam_size: int, allowed_first: np.ndarray | None = None):
    """[R, Tp] left-padded prompts -> (sids [R, K, L], scores [R, K], valid [R, K]) on host.

    Args:
      prompts: [R, Tp] int prompt tokens.
      beam_size: K (one compiled program per beam size and prompt length).
      allowed_first: optional [R, C_0] bool level-0 codes each request may start with. A
        mask is a program input, so any mask runs the same compiled program; with None the
        program has no mask at all (a second program).

    Raises:
      errors.RetrieverInputError: see the module docstring.
    """
    prompts = self._check_prompts(prompts)
    _check_count("beam_size", beam_size)
    if allowed_first is not None:
      allowed_first = np.asarray(allowed_first, bool)
      if allowed_first.shape != (len(prompts), self.layout.sid_level_sizes[0]):
        raise ValueError(
          f"allowed_first: expected shape {(len(prompts), self.layout.sid_level_sizes[0])}, "
          f"got {allowed_first.shape}"
        )
    outputs = []
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      for start in range(0, len(prompts), self.batch_size):
        chunk = prompts[start : start + self.batch_size]
        padded = np.full((self.batch_size, prompts.shape[1]), PAD_ID, np.int32)
        padded[: len(chunk)] = chunk
        device_prompts = jax.device_put(padded, self._batch_sharding)
        device_allowed = None
        if allowed_first is not None:
          # Padding rows allow every code: a row with none would only waste the beams.
          mask = np.ones((self.batch_size, allowed_first.shape[1]), bool)
          mask[: len(chunk)] = allowed_first[start : start + self.batch_size]
          device_allowed = jax.device_put(mask, self._batch_sharding)
        result = self._decode(
          self.params, self.trie, device_prompts, device_allowed, beam_size=beam_size
        )
        outputs.append([np.asarray(x)[: len(chunk)] for x in jax.device_get(result)])
    return tuple(np.concatenate(parts) for parts in zip(*outputs))

  def retrieve(self, prompts: np.ndarray, beam_size: int, max_items: int = 1000) -> np.ndarray:
    """[R, Tp] prompts -> [R, max_items] ranked, de-duplicated item ids (PAD_ITEM-padded)."""
    _check_count("max_items", max_items)
    sids, _, valid = self.decode(prompts, beam_size)
    return metrics.ranked_items(
      sids, valid, self.sid_tables, self.efficiency_score, max_items=max_items
    )

  def _check_prompts(self, prompts) -> np.ndarray:
    prompts = np.asarray(prompts)
    if prompts.ndim != 2 or not np.issubdtype(prompts.dtype, np.integer):
      raise errors.RetrieverInputError(
        f"Retriever: prompts must be a 2-D integer array [requests, tokens], got "
        f"{prompts.dtype} of shape {prompts.shape}"
      )
    if prompts.shape[0] == 0 or prompts.shape[1] == 0:
      raise errors.RetrieverInputError(f"Retriever: empty batch of prompts {prompts.shape}")
    vocab = self.layout.vocab_size
    bad = (prompts < 0) | (prompts >= vocab)
    if bad.any():
      row, col = map(int, np.argwhere(bad)[0])
      raise errors.RetrieverInputError(
        f"Retriever: prompt {row} token {col} is {int(prompts[row, col])}, outside the "
        f"vocabulary [0, {vocab}) ({int(bad.sum())} such tokens)"
      )
    longest = prompts.shape[1] + self.layout.num_sid_levels
    if longest > self.model_config.max_len:
      raise errors.RetrieverInputError(
        f"Retriever: prompts of {prompts.shape[1]} tokens + {self.layout.num_sid_levels} SID "
        f"tokens exceed the model's max_len {self.model_config.max_len}"
      )
    return prompts.astype(np.int32)

  def __hash__(self):
    return id(self)

  def __eq__(self, other):
    return self is other


def _check_count(name: str, value) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise errors.RetrieverInputError(f"Retriever: {name} must be an integer >= 1, got {value!r}")


def _check_items(sid_tables: tables.SidTables, efficiency_score: np.ndarray) -> None:
  """The tables' item ids must index `efficiency_score` (one score per catalog item)."""
  if efficiency_score.ndim != 1:
    raise errors.RetrieverInputError(
      f"Retriever: efficiency_score must be [num_items], got shape {efficiency_score.shape}"
    )
  items = np.asarray(sid_tables.items)
  if items.size and (items.min() < 0 or items.max() >= len(efficiency_score)):
    raise errors.RetrieverInputError(
      f"Retriever: the SID tables hold item ids in [{int(items.min())}, {int(items.max())}] "
      f"but efficiency_score has {len(efficiency_score)} items: tables and catalog differ"
    )


def generator_retriever(
  generator: Generator, params, sid_tables: tables.SidTables, efficiency_score, *, mesh, rules
) -> Retriever:
  """A Retriever over `generator` with `params` (e.g. an RL policy's), on `mesh`."""
  return Retriever(
    params,
    generator.model_config,
    generator.layout,
    sid_tables,
    efficiency_score,
    mesh=mesh,
    rules=rules,
  )


def load_retriever(
  workdir: str, tokenizer: str, stage: str, catalog, sid_artefacts, *, mesh=None, rules=None
) -> tuple[Generator, Retriever]:
  """(Generator, Retriever) of SFT stage `stage` of `tokenizer` in a work directory."""
  generator, params = workdir_lib.load_generator(workdir_lib.sft_dir(workdir, tokenizer, stage))
  retriever = generator_retriever(
    generator, params, sid_artefacts.tables, catalog.efficiency_score, mesh=mesh, rules=rules
  )
  return generator, retriever
