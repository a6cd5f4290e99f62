"""Where a constrained decode's time goes: prefill, model steps, cache reorder, search, trie.

Times, for one (preset, batch, beam), each part of the jitted decode as its own jitted call:
the prefill, one model step (`decoder.extend`) on B * K rows, one cache reorder
(`beam_search.gather_beams`), the model-free beam search with and without the trie (fixed
logits), and the full decode with and without the trie. A decode is 1 prefill + (L - 1) model
steps + (L - 2) reorders + the search, so the parts can be checked against the whole.

  python -m benchmarks.decode_breakdown               # small, batch 32, beam 100, 3M SIDs
  python -m benchmarks.decode_breakdown --quick
"""

from __future__ import annotations

import functools

import gin
import jax
import numpy as np

from benchmarks import common
from benchmarks.host_trie import make_model_free_search
from gr_jax.decoding import beam_search as beam_lib
from gr_jax.decoding import trie as trie_lib
from gr_jax.models import decoder

NAME = "decode_breakdown"
COLUMNS = ("part", "calls_per_decode", "ms_per_call", "ms_per_decode", "share_of_decode")


@gin.configurable(denylist=["out_dir", "load_before"])
def run_decode_breakdown(
  *,
  quick: bool = False,
  out_dir: str = common.RESULTS_DIR,
  repeats: int = 5,
  num_sids: int = 3_000_000,
  preset: str = "small",
  batch: int = 32,
  beams: int = 100,
  prompt_len: int = 16,
  text_vocab_size: int = 1000,
  seed: int = 0,
  load_before=None,
) -> dict:
  """Times the parts of a decode and the whole; writes the results.

  Args:
    quick: tiny SID space and model (smoke test).
    out_dir: where <name>.json / .md go.
    repeats: timed rounds (median reported; the parts are timed round-robin).
    num_sids: unique valid SIDs in the trie.
    preset: decoder preset.
    batch: requests per call.
    beams: beam size.
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
    num_sids, preset, batch, beams, text_vocab_size = 300, "tiny", 4, 8, 50
  rng = np.random.default_rng(seed)
  trie = trie_lib.build_trie_index(common.paper_sids(num_sids, rng, level_sizes), level_sizes)
  layout = common.make_layout(level_sizes, text_vocab_size)
  config, params = common.make_model(preset, layout, seed)
  prompts = common.random_prompts(rng, layout, batch, prompt_len)
  levels = layout.num_sid_levels
  max_len = prompt_len + levels

  prefill = jax.jit(lambda p, x: decoder.prefill(p, config, x, max_len))
  first_logits, cache = prefill(params, prompts)
  wide_cache = jax.jit(lambda c: beam_lib.repeat_cache(c, beams))(cache)  # [B*K, ...]
  tokens = jax.numpy.asarray(rng.integers(0, layout.vocab_size, batch * beams), jax.numpy.int32)
  parents = jax.numpy.asarray(rng.integers(0, beams, (batch, beams)), jax.numpy.int32)
  extend = jax.jit(lambda p, t, c: decoder.extend(p, config, t, c))
  reorder = jax.jit(beam_lib.gather_beams)
  search = make_model_free_search(layout, beams)
  step_logits = jax.random.normal(jax.random.key(seed), (batch * beams, layout.vocab_size))
  decode = common.make_decode(config, layout, beams)
  timed = common.time_interleaved(
    {
      "prefill": functools.partial(prefill, params, prompts),
      "model step (extend)": functools.partial(extend, params, tokens, wide_cache),
      "cache reorder (gather_beams)": functools.partial(reorder, wide_cache, parents),
      "search, unconstrained": functools.partial(search, None, first_logits, step_logits),
      "search, constrained": functools.partial(search, trie, first_logits, step_logits),
      "decode, unconstrained": functools.partial(decode, params, None, prompts),
      "decode, constrained": functools.partial(decode, params, trie, prompts),
    },
    repeats=repeats,
  )
  calls = {
    "prefill": 1,
    "model step (extend)": levels - 1,
    "cache reorder (gather_beams)": levels - 2,
    "search, unconstrained": 1,
    "search, constrained": 1,
    "decode, unconstrained": 1,
    "decode, constrained": 1,
  }
  whole = timed["decode, constrained"]["median_s"]
  rows = []
  for part, result in timed.items():
    per_decode = calls[part] * result["median_s"]
    rows.append(
      {
        "part": part,
        "calls_per_decode": calls[part],
        "ms_per_call": 1e3 * result["median_s"],
        "ms_per_decode": 1e3 * per_decode,
        "share_of_decode": per_decode / whole,
        "times_s": result["times_s"],
      }
    )
  by_part = {r["part"]: r["ms_per_decode"] for r in rows}
  parts_sum = sum(
    by_part[p]
    for p in (
      "prefill",
      "model step (extend)",
      "cache reorder (gather_beams)",
      "search, constrained",
    )
  )
  summary = {
    "sum_of_parts_ms": parts_sum,
    "constrained_decode_ms": by_part["decode, constrained"],
    "trie_cost_in_search_ms": by_part["search, constrained"] - by_part["search, unconstrained"],
    "model_steps_share": by_part["model step (extend)"] / by_part["decode, constrained"],
  }
  settings = {
    "quick": quick,
    "num_sids": int(trie.num_sids),
    "preset": preset,
    "batch": batch,
    "beams": beams,
    "prompt_len": prompt_len,
    "vocab_size": layout.vocab_size,
    "repeats": repeats,
  }
  notes = [
    "Each part is its own jitted call (dispatch and output materialisation included), so the "
    "parts' sum exceeds the fused decode somewhat; the search rows include the fixed-logit "
    "step function (a [B*K, V] add per level).",
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
    common.Flag("preset", "small"),
    common.Flag("batch", 32),
    common.Flag("beams", 100),
  )
  return common.run_main(run_decode_breakdown, __doc__, argv, flags)


if __name__ == "__main__":
  main()
