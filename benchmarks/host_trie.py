"""Benchmark 2: the on-device trie against a host-side Python trie (prefix_allowed_tokens_fn).

The baseline is the Hugging Face `prefix_allowed_tokens_fn` pattern: at every decode step, for
every beam, the host looks the beam's SID prefix up in a dict (prefix tuple -> allowed codes),
writes the allowed codes into a [beams, C] mask and copies the mask to the device. It needs the
chosen codes on the host first, so each step also pays a device -> host copy.

Measurements:
  * the constraint's own cost per decode step, isolated from the model (the target: at
    least 100x cheaper on device at batch 32, beam 100): on device, what the trie adds to a search
    step (`make_constraint_step`: the calls `beam_search` makes, fused as there), constrained
    minus unconstrained over many interleaved rounds; on the host, the prefixes' copy to the
    host, the dict lookups, the mask and its copy to the device. Also the trie lookups as a
    standalone jitted call (dispatch and a materialised mask included).
  * the same inside a whole model-free search (fixed logits), with its noise interval.
  * end to end with the `small` model: the jitted `beam_search` with the trie against a host loop
    that runs the same jitted model steps and builds each level's mask on the host.

  python -m benchmarks.host_trie            # 3M SIDs, batch 32, beam 100, small model
  python -m benchmarks.host_trie --quick
"""

from __future__ import annotations

import functools
import time

import gin
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from gr_jax.decoding import beam_search as beam_lib
from gr_jax.decoding import trie as trie_lib
from gr_jax.models import decoder
from gr_jax.models.token_layout import TokenLayout

NAME = "host_trie"
COLUMNS = (
  "measure",
  "level",
  "rows",
  "device_in_step_ms",
  "device_in_step_ci95_ms",
  "device_call_ms",
  "host_ms",
  "host_over_device_in_step",
  "host_over_device_call",
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
  """The trie lookups of one level as a standalone call: the mask rows and the step."""
  return trie_lib.valid_next_mask(trie, level, nodes), trie_lib.next_node(trie, level, nodes, codes)


def make_constraint_step(layout: TokenLayout, level: int, constrained: bool):
  """Jitted level step of the search with the model, log-softmax and top-k left out.

  (trie, log_probs [B, K_old, C], scores [B, K_old], nodes [B, K_old], parents [B, K],
  codes [B * K]) -> (candidate scores [B, K_old, C], child node ids [B * K]). Unconstrained, it
  only adds the beam scores to the log-probs (work the search does either way); constrained, it
  also does what the trie adds to a search step, with the same calls `beam_search` makes: the
  mask of the nodes' valid codes fused into the candidate scores, and the step from the picked
  parents to their children. Constrained minus unconstrained time is the constraint's own
  cost per step (finding and applying the valid next codes), isolated from the model.
  """

  @jax.jit
  def step(trie, log_probs, scores, nodes, parents, codes):
    candidates = scores[:, :, None] + log_probs  # [B, K_old, C]
    if not constrained:
      return candidates, codes
    mask = beam_lib.allowed_codes(level, nodes, layout=layout, trie=trie, allowed_first=None)
    candidates = jnp.where(mask, candidates, beam_lib.NEG_INF)
    parent_nodes = jnp.take_along_axis(nodes, parents, axis=1)  # [B, K]
    return candidates, trie_lib.next_node(trie, level, parent_nodes.reshape(-1), codes)

  return step


def bootstrap_median_ci(values: np.ndarray, rng: np.random.Generator, draws: int = 2000):
  """95% bootstrap interval [low, high] of the median of `values`."""
  medians = np.median(rng.choice(values, (draws, values.size)), axis=1)
  return [float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))]


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


def constraint_step_rows(
  trie, table, sids, layout, *, batch, beams, repeats, step_rounds, rng
) -> list[dict]:
  """Per level: the device constraint vs the host constraint on the same real prefixes.

  As in the search (ours and the host loop of `make_host_decode`), level 0 has one beam per
  request (B rows) and the deeper levels B * K beams, each the prefix of a real SID.
  """
  rows = []
  beam_sids = sids[rng.choice(sids.shape[0], batch * beams)].reshape(batch, beams, -1)
  for level in range(trie.num_levels):
    old_beams = 1 if level == 0 else beams
    prefix_sids = jnp.asarray(beam_sids[:, :old_beams].reshape(batch * old_beams, -1))
    nodes = _prefix_nodes(level, trie, prefix_sids)  # [B * K_old]
    parents = rng.integers(0, old_beams, (batch, beams)).astype(np.int32)  # [B, K]
    picked = np.take_along_axis(beam_sids[:, :old_beams], parents[:, :, None], axis=1)
    codes = jnp.asarray(picked[:, :, level].reshape(-1))  # [B * K] real children
    size = trie.level_sizes[level]
    own_codes = prefix_sids[:, level]  # [B * K_old] each prefix's own next code
    device = common.time_call(
      lambda nodes=nodes, level=level, c=own_codes: _device_constraint(trie, level, nodes, c),
      repeats=repeats,
    )
    step_args = (
      trie,
      jax.random.normal(jax.random.key(level), (batch, old_beams, size)),  # log-probs stand-in
      jnp.zeros((batch, old_beams)),
      nodes.reshape(batch, old_beams),
      jnp.asarray(parents),
      codes,
    )
    steps = {
      name: functools.partial(make_constraint_step(layout, level, constrained), *step_args)
      for name, constrained in (("free", False), ("constrained", True))
    }
    in_step = common.time_interleaved(steps, repeats=step_rounds)
    added_ms = 1e3 * np.subtract(in_step["constrained"]["times_s"], in_step["free"]["times_s"])
    device_prefixes = prefix_sids[:, :level]  # [N, level]: the codes the host must read

    def host_step(prefixes=device_prefixes, size=size):
      mask = host_mask(table, np.asarray(jax.device_get(prefixes)), size)
      return jax.device_put(mask)

    host = common.time_call(host_step, repeats=repeats)
    device_mask = np.asarray(_device_constraint(trie, level, nodes, own_codes)[0])
    host_same = bool(np.array_equal(device_mask, np.asarray(host_step())))
    parent_nodes = np.take_along_axis(np.asarray(nodes).reshape(batch, old_beams), parents, axis=1)
    want_children = np.asarray(trie_lib.next_node(trie, level, parent_nodes.reshape(-1), codes))
    step_children = np.asarray(steps["constrained"]()[1])
    children_same = np.array_equal(step_children, want_children) and (want_children >= 0).all()
    device_in_step_ms = float(np.median(added_ms))
    rows.append(
      {
        "measure": "constraint per step",
        "level": level,
        "batch": batch,
        "beams": beams,
        "rows": int(nodes.shape[0]),
        "device_call_ms": 1e3 * device["median_s"],
        "device_in_step_ms": device_in_step_ms,
        "device_in_step_ci95_ms": bootstrap_median_ci(added_ms, rng),
        "host_ms": 1e3 * host["median_s"],
        "host_over_device_call": host["median_s"] / device["median_s"],
        "host_over_device_in_step": (
          1e3 * host["median_s"] / device_in_step_ms if device_in_step_ms > 0 else None
        ),
        "step_free_ms": 1e3 * in_step["free"]["median_s"],
        "agrees": bool(host_same and children_same),
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
  step_rounds: int = 101,
  search_rounds: int = 21,
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
    step_rounds: interleaved rounds of the per-step constraint cost (each ~1 ms).
    search_rounds: interleaved rounds of the whole model-free search (each ~70 ms at B=32, K=100).
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
    step_rounds, search_rounds = 5, 3
  rng = np.random.default_rng(seed)
  sids = common.paper_sids(num_sids, rng, level_sizes)
  trie = trie_lib.build_trie_index(sids, level_sizes)
  start = time.perf_counter()
  table = build_host_trie(sids, level_sizes)
  host_build_s = time.perf_counter() - start
  layout = common.make_layout(level_sizes, text_vocab_size)
  rows = constraint_step_rows(
    trie,
    table,
    sids,
    layout,
    batch=batch,
    beams=beams,
    repeats=repeats,
    step_rounds=step_rounds,
    rng=rng,
  )
  # Per decode: the constraint's cost summed over the levels, one decode's worth on each side.
  decode_call = float(np.sum([r["device_call_ms"] for r in rows]))
  decode_in_step = float(np.sum([r["device_in_step_ms"] for r in rows]))
  decode_host = float(np.sum([r["host_ms"] for r in rows]))
  search = make_model_free_search(layout, beams)
  keys = jax.random.split(jax.random.key(seed))
  first_logits = jax.random.normal(keys[0], (batch, layout.vocab_size))
  step_logits = jax.random.normal(keys[1], (batch * beams, layout.vocab_size))
  in_search = common.time_interleaved(
    {
      "free": functools.partial(search, None, first_logits, step_logits),
      "constrained": functools.partial(search, trie, first_logits, step_logits),
    },
    repeats=search_rounds,
  )
  search_free_ms = 1e3 * in_search["free"]["median_s"]
  search_constrained_ms = 1e3 * in_search["constrained"]["median_s"]
  search_added_ms = 1e3 * np.subtract(
    in_search["constrained"]["times_s"], in_search["free"]["times_s"]
  )  # per round: what the trie added to one whole model-free search (4 levels)
  num_levels = trie.num_levels
  rows.append(
    {
      "measure": "constraint per step, mean over levels",
      "level": "all",
      "batch": batch,
      "beams": beams,
      "device_call_ms": decode_call / num_levels,
      "device_in_step_ms": decode_in_step / num_levels,
      "host_ms": decode_host / num_levels,
      "host_over_device_call": decode_host / decode_call,
      "host_over_device_in_step": decode_host / decode_in_step if decode_in_step > 0 else None,
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
    "constraint_speedup_in_step": rows[num_levels]["host_over_device_in_step"],
    "constraint_speedup_per_call": decode_host / decode_call,
    "constraint_speedup_in_step_by_level": [
      r["host_over_device_in_step"] for r in rows[:num_levels]
    ],
    "constraint_speedup_per_call_by_level": [r["host_over_device_call"] for r in rows[:num_levels]],
    "constraint_per_decode_ms": {
      "device_in_step": decode_in_step,
      "device_call": decode_call,
      "host": decode_host,
    },
    "model_free_search_ms": {
      "unconstrained": search_free_ms,
      "constrained": search_constrained_ms,
      "trie_added_median": float(np.median(search_added_ms)),
      "trie_added_ci95": bootstrap_median_ci(search_added_ms, rng),
      "rounds": search_rounds,
    },
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
    "step_rounds": step_rounds,
    "search_rounds": search_rounds,
  }
  notes = [
    "device_in_step: what the trie adds to one search step with the model, log-softmax and "
    "top-k left out (make_constraint_step: the mask fused into the candidate scores and the "
    "step from the picked parents to their children; the calls beam_search makes), as the "
    "median over interleaved rounds of constrained minus unconstrained time, with a 95% "
    "bootstrap interval of that median. This is the constraint's own cost per decode step, "
    "finding and applying the valid next codes.",
    "device_call: valid_next_mask + next_node as one standalone jitted call (dispatch and a "
    "materialised [rows, C] bool mask included, which the search never materialises).",
    "host: the prefix_allowed_tokens_fn pattern: copy the prefixes to the host, one dict lookup "
    "per beam, write the [rows, C] mask, copy it to the device (the mask's use on device is not "
    "counted on the host side).",
    "rows: level 0 has one beam per request (B rows, the empty prefix), as both searches run it; "
    "levels 1-3 have B*K beams, each the prefix of a real SID. Mean row: per-decode sums / 4.",
    "model_free_search_ms in the summary: a whole beam_search on fixed logits with and without "
    "the trie; at about 1% of the search, the trie's share is within that measurement's noise "
    "(see its interval), which is why the per-step isolation above is the figure.",
    "agrees: the host and device masks are equal and the step's children equal next_node's "
    "(constraint rows); for the end-to-end row, the two decodes give the same scores.",
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
  flags = (
    common.Flag("num_sids", 3_000_000),
    common.Flag("batch", 32),
    common.Flag("beams", 100),
    common.Flag("preset", "small"),
    common.Flag("step_rounds", 101),
    common.Flag("search_rounds", 21),
  )
  return common.run_main(run_host_trie, __doc__, argv, flags)


if __name__ == "__main__":
  main()
