"""Benchmark 2: the on-device trie against a host-side Python trie (prefix_allowed_tokens_fn).

The baseline is the Hugging Face `prefix_allowed_tokens_fn` pattern: at every decode step, for
every beam, the host looks the beam's SID prefix up in a dict (prefix tuple -> allowed codes),
writes the allowed codes into a [beams, C] mask and copies the mask to the device. It needs the
chosen codes on the host first, so each step also pays a device -> host copy.

Two measurements:
  * the constraint alone per decode step (no model): on device, `valid_next_mask` + `next_node`
    on the real node ids of B * K beams (one jitted call, dispatch included); on the host, the
    codes' copy to the host, the dict lookups, the mask and its copy to the device. Issue 7's
    target: on-device >= 100x cheaper at batch 32, beam 100.
  * end to end with the `small` model: the jitted `beam_search` with the trie against a host loop
    that runs the same jitted model steps and builds each level's mask on the host.

  python -m benchmarks.host_trie            # 3M SIDs, batch 32, beam 100, small model
  python -m benchmarks.host_trie --quick
"""

from __future__ import annotations

import functools
import os
import sys
import time

import gin
import jax
import jax.numpy as jnp
import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from gr_jax.data.token_layout import TokenLayout  # noqa: E402
from gr_jax.decoding import beam_search as beam_lib  # noqa: E402
from gr_jax.decoding import trie as trie_lib  # noqa: E402
from gr_jax.models import decoder  # noqa: E402

NAME = "host_trie"
COLUMNS = (
  "measure",
  "level",
  "batch",
  "beams",
  "device_call_ms",
  "device_in_search_ms",
  "host_ms",
  "host_over_device_call",
  "host_over_device_in_search",
)


def build_host_trie(
  sids: np.ndarray, level_sizes: tuple[int, ...]
) -> dict[tuple[int, ...], np.ndarray]:
  """Prefix tuple (length 0..L-1) -> sorted int32 array of the codes that may follow it.

  Built with numpy per depth; the lookup structure is a plain dict, as a host trie is.
  """
  unique = trie_lib.unique_sids(sids, level_sizes)  # [U, L]
  table: dict[tuple[int, ...], np.ndarray] = {}
  for depth in range(unique.shape[1]):
    prefixes = unique[:, : depth + 1]  # [U, depth + 1]: prefix then the next code
    changed = np.any(prefixes[1:] != prefixes[:-1], axis=1)  # distinct (prefix, code) pairs
    pairs = prefixes[np.concatenate([[True], changed])]  # [P, depth + 1]
    if depth == 0:
      table[()] = pairs[:, 0].astype(np.int32)
      continue
    new_prefix = np.concatenate([[True], np.any(pairs[1:, :depth] != pairs[:-1, :depth], axis=1)])
    starts = np.flatnonzero(new_prefix)  # [num_prefixes]
    children = np.split(pairs[:, depth].astype(np.int32), starts[1:])
    table.update(zip(map(tuple, pairs[starts, :depth].tolist()), children))
  return table


def host_mask(table, prefixes: np.ndarray, size: int) -> np.ndarray:
  """[N, level] code prefixes -> [N, size] bool mask of allowed next codes (per-beam lookups)."""
  mask = np.zeros((prefixes.shape[0], size), bool)
  for row, prefix in enumerate(prefixes.tolist()):
    allowed = table.get(tuple(prefix))
    if allowed is not None:
      mask[row, allowed] = True
  return mask


@functools.partial(jax.jit, static_argnums=(1,))
def _device_constraint(trie, level, nodes, codes):
  """What the on-device search adds per level: the mask rows and the trie step."""
  return trie_lib.valid_next_mask(trie, level, nodes), trie_lib.next_node(trie, level, nodes, codes)


def make_model_free_search(layout: TokenLayout, beam_size: int):
  """Jitted (trie or None, first_logits [B, V], step_logits [B*K, V]) -> beam_search outputs.

  The step function returns fixed logits (shifted by the fed token so that it is not constant),
  so the program is the search alone and constrained minus unconstrained time is what the trie
  adds inside the search.
  """

  @jax.jit
  def search(trie, first_logits, step_logits):
    cache = {"rows": jnp.zeros((first_logits.shape[0],), jnp.int32)}  # batch-major, unused

    def step_fn(tokens, cache):
      return step_logits + 1e-3 * tokens[:, None].astype(jnp.float32), cache  # [N, V]

    return beam_lib.beam_search(
      step_fn, first_logits, cache, layout=layout, beam_size=beam_size, trie=trie
    )

  return search


@functools.partial(jax.jit, static_argnums=(0,))
def _prefix_nodes(level, trie, sids):
  """[N, L] SIDs -> [N] depth-`level` node ids of their prefixes."""
  nodes = jnp.zeros(sids.shape[0], jnp.int32)
  for depth in range(level):
    nodes = trie_lib.next_node(trie, depth, nodes, sids[:, depth])
  return nodes


def constraint_step_rows(trie, table, sids, *, batch, beams, repeats, rng) -> list[dict]:
  """Per level: the device constraint vs the host constraint on the same B * K real prefixes."""
  rows = []
  beam_sids = sids[rng.choice(sids.shape[0], batch * beams)]  # [N, L] real SIDs as beams
  device_sids = jnp.asarray(beam_sids)
  for level in range(trie.num_levels):
    nodes = _prefix_nodes(level, trie, device_sids)  # [N]
    codes = device_sids[:, level]  # [N]
    size = trie.level_sizes[level]
    device = common.time_call(
      lambda nodes=nodes, codes=codes, level=level: _device_constraint(trie, level, nodes, codes),
      repeats=repeats,
    )
    device_prefixes = device_sids[:, :level]  # [N, level]: the codes the host must read

    def host_step(prefixes=device_prefixes, size=size):
      mask = host_mask(table, np.asarray(jax.device_get(prefixes)), size)
      return jax.device_put(mask)

    host = common.time_call(host_step, repeats=repeats)
    device_mask = np.asarray(_device_constraint(trie, level, nodes, codes)[0])
    host_same = bool(np.array_equal(device_mask, np.asarray(host_step())))
    rows.append(
      {
        "measure": "constraint per step",
        "level": level,
        "batch": batch,
        "beams": beams,
        "device_call_ms": 1e3 * device["median_s"],
        "host_ms": 1e3 * host["median_s"],
        "host_over_device_call": host["median_s"] / device["median_s"],
        "agrees": host_same,
        "load_average": common.load_average(),
      }
    )
  return rows


def make_host_decode(config: decoder.DecoderConfig, layout: TokenLayout, beam_size: int):
  """Beam search driven from the host: jitted model steps, masks built by `host_mask`.

  Returns:
    (table, params, prompts) -> (sids [B, K, L], scores [B, K]) as numpy.
  """
  num_levels = layout.num_sid_levels

  @jax.jit
  def prefill(params, prompts):
    return decoder.prefill(params, config, prompts, prompts.shape[1] + num_levels)

  @functools.partial(jax.jit, static_argnums=(0,))
  def select(level, logits, scores, mask):
    batch, beams, size = mask.shape
    candidates = scores[:, :, None] + beam_lib.level_log_probs(layout, level, logits)
    candidates = jnp.where(mask, candidates, beam_lib.NEG_INF).reshape(batch, beams * size)
    if beams * size < beam_size:
      padding = jnp.full((batch, beam_size - beams * size), beam_lib.NEG_INF)
      candidates = jnp.concatenate([candidates, padding], axis=1)
    scores, flat_index = beam_lib.batch_local_top_k(candidates, beam_size)  # [B, K]
    alive = scores > beam_lib.NEG_INF
    return scores, jnp.where(alive, flat_index // size, 0), jnp.where(alive, flat_index % size, 0)

  @functools.partial(jax.jit, static_argnums=(0,))
  def advance(level, params, cache, parents, chosen):
    if level == 0:
      cache = beam_lib.repeat_cache(cache, beam_size)
    else:
      cache = beam_lib.gather_beams(cache, parents)
    tokens = (chosen + layout.sid_offset(level)).reshape(-1)  # [B * K]
    logits, cache = decoder.extend(params, config, tokens, cache)
    return logits.reshape(parents.shape[0], beam_size, -1), cache

  def decode(table, params, prompts):
    first_logits, cache = prefill(params, prompts)
    batch = prompts.shape[0]
    logits = first_logits[:, None, :]  # [B, 1, V]
    scores = jnp.zeros((batch, 1), jnp.float32)
    codes = np.zeros((batch, 1, 0), np.int32)  # [B, beams, level] on the host
    for level in range(num_levels):
      beams = codes.shape[1]
      size = layout.sid_level_sizes[level]
      mask = host_mask(table, codes.reshape(batch * beams, level), size)
      mask = jax.device_put(mask.reshape(batch, beams, size))
      scores, parents, chosen = select(level, logits, scores, mask)
      parents_host, chosen_host = jax.device_get((parents, chosen))  # the host needs the codes
      codes = np.take_along_axis(codes, parents_host[:, :, None], axis=1)
      codes = np.concatenate([codes, chosen_host[:, :, None]], axis=2)  # [B, K, level + 1]
      if level + 1 < num_levels:
        logits, cache = advance(level, params, cache, parents, chosen)
    return codes, np.asarray(scores)

  return decode


@gin.configurable(denylist=["out_dir", "load_before"])
def run_host_trie(
  *,
  quick: bool = False,
  out_dir: str = common.RESULTS_DIR,
  repeats: int = 5,
  num_sids: int = 3_000_000,
  batch: int = 32,
  beams: int = 100,
  preset: str = "small",
  prompt_len: int = 16,
  text_vocab_size: int = 1000,
  seed: int = 0,
  load_before=None,
) -> dict:
  """Measures the constraint per step and the end-to-end decode, device vs host trie.

  Args:
    quick: tiny SID space and model (smoke test).
    out_dir: where <name>.json / .md go.
    repeats: timed calls per measurement (median reported).
    num_sids: unique valid SIDs.
    batch: requests per call.
    beams: beam size.
    preset: decoder preset of the end-to-end decode.
    prompt_len: prompt tokens per request.
    text_vocab_size: text pieces in the vocabulary.
    seed: data / parameter seed.
    load_before: load average at start (default: read now).

  Returns:
    The written JSON record.
  """
  load_before = load_before or common.load_average()
  level_sizes = common.scaled_level_sizes(quick)
  if quick:
    num_sids, batch, beams, preset, text_vocab_size = 300, 4, 8, "tiny", 50
  rng = np.random.default_rng(seed)
  sids = common.paper_sids(num_sids, rng, level_sizes)
  trie = trie_lib.build_trie_index(sids, level_sizes)
  start = time.perf_counter()
  table = build_host_trie(sids, level_sizes)
  host_build_s = time.perf_counter() - start
  rows = constraint_step_rows(trie, table, sids, batch=batch, beams=beams, repeats=repeats, rng=rng)
  step_call = float(np.mean([r["device_call_ms"] for r in rows]))
  step_host = float(np.mean([r["host_ms"] for r in rows]))
  layout = common.make_layout(level_sizes, text_vocab_size)
  search = make_model_free_search(layout, beams)
  keys = jax.random.split(jax.random.key(seed))
  first_logits = jax.random.normal(keys[0], (batch, layout.vocab_size))
  step_logits = jax.random.normal(keys[1], (batch * beams, layout.vocab_size))
  in_search = common.time_interleaved(
    {
      "free": functools.partial(search, None, first_logits, step_logits),
      "constrained": functools.partial(search, trie, first_logits, step_logits),
    },
    repeats=2 * repeats + 1,
  )
  search_free_ms = 1e3 * in_search["free"]["median_s"]
  search_constrained_ms = 1e3 * in_search["constrained"]["median_s"]
  differences = np.subtract(in_search["constrained"]["times_s"], in_search["free"]["times_s"])
  step_in_search = 1e3 * float(np.median(differences)) / trie.num_levels  # paired per round
  rows.append(
    {
      "measure": "constraint per step, mean over levels",
      "level": "all",
      "batch": batch,
      "beams": beams,
      "device_call_ms": step_call,
      "device_in_search_ms": step_in_search,
      "host_ms": step_host,
      "host_over_device_call": step_host / step_call,
      "host_over_device_in_search": step_host / step_in_search if step_in_search > 0 else None,
      "search_free_ms": search_free_ms,
      "search_constrained_ms": search_constrained_ms,
      "search_free_times_s": in_search["free"]["times_s"],
      "search_constrained_times_s": in_search["constrained"]["times_s"],
    }
  )

  config, params = common.make_model(preset, layout, seed)
  prompts = common.random_prompts(rng, layout, batch, prompt_len)
  device_decode = common.make_decode(config, layout, beams)
  host_decode = make_host_decode(config, layout, beams)
  device = common.time_call(lambda: device_decode(params, trie, prompts), repeats=repeats)
  host = common.time_call(lambda: host_decode(table, params, prompts), repeats=repeats)
  device_sids, device_scores, valid = jax.device_get(device_decode(params, trie, prompts))
  host_sids, host_scores = host_decode(table, params, prompts)
  rows.append(
    {
      "measure": f"end-to-end decode ({preset})",
      "level": "all",
      "batch": batch,
      "beams": beams,
      "device_call_ms": 1e3 * device["median_s"],
      "host_ms": 1e3 * host["median_s"],
      "host_over_device_call": host["median_s"] / device["median_s"],
      "agrees": bool(np.allclose(device_scores, host_scores, rtol=1e-4, atol=1e-4)),
      "load_average": common.load_average(),
    }
  )
  summary = {
    "constraint_speedup_per_call": step_host / step_call,
    "constraint_speedup_in_search": rows[trie.num_levels]["host_over_device_in_search"],
    "constraint_speedup_per_call_by_level": [
      r["host_over_device_call"] for r in rows[: trie.num_levels]
    ],
    "model_free_search_ms": {"unconstrained": search_free_ms, "constrained": search_constrained_ms},
    "target_speedup": 100.0,
    "end_to_end_speedup": rows[-1]["host_over_device_call"],
    "same_sids_end_to_end": bool(np.array_equal(device_sids[valid], host_sids[valid])),
    "host_trie_build_s": host_build_s,
    "host_trie_entries": len(table),
  }
  settings = {
    "quick": quick,
    "num_sids": int(trie.num_sids),
    "level_sizes": level_sizes,
    "batch": batch,
    "beams": beams,
    "preset": preset,
    "vocab_size": layout.vocab_size,
    "repeats": repeats,
  }
  notes = [
    "device_call: valid_next_mask + next_node as one jitted call per step (dispatch and a "
    "materialised [B*K, C] mask included); device_in_search: (constrained - unconstrained) "
    "time of a model-free beam_search (fixed logits) / 4 levels, i.e. what the trie adds per "
    "step inside the fused search (median over back-to-back rounds; noisy on a loaded machine).",
    "Level 0 has the empty prefix for every beam (one dict key); levels 1-3 look up B*K "
    "distinct real prefixes.",
    "agrees: the host and device masks are equal (constraint rows); for the end-to-end row, "
    "the two decodes give the same scores.",
  ]
  return common.write_results(
    NAME,
    rows,
    columns=COLUMNS,
    summary=summary,
    settings=settings,
    notes=notes,
    out_dir=out_dir,
    load_before=load_before,
  )


def main(argv=None) -> dict:
  parser = common.base_parser(__doc__.splitlines()[0])
  parser.add_argument("--num-sids", type=int, default=3_000_000)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--beams", type=int, default=100)
  parser.add_argument("--preset", default="small")
  args = parser.parse_args(argv)
  common.parse_gin(args.gin)
  return run_host_trie(
    quick=args.quick,
    out_dir=args.out_dir,
    repeats=args.repeats,
    num_sids=args.num_sids,
    batch=args.batch,
    beams=args.beams,
    preset=args.preset,
  )


if __name__ == "__main__":
  main()
