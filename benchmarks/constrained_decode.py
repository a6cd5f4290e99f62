"""Benchmark 1: constrained vs unconstrained beam search, same model, same shapes.

Both programs are the same jitted prefill + `beam_search`; the constrained one also gathers the
trie's rows (valid_next_mask) and walks it (next_node) at every level. The target is a time
ratio constrained / unconstrained <= 1.05 at batch 32, beams 10 / 50 / 100, over a paper-scale SID
set (codebooks 2048 x 1024 x 1024 plus the group suffix; ~3M unique SIDs for ~21M items).

  python -m benchmarks.constrained_decode            # 3M SIDs, presets tiny and small
  python -m benchmarks.constrained_decode --quick    # smoke-test sizes
"""

from __future__ import annotations

import functools
import sys
import time

import gin
import numpy as np

from benchmarks import common
from gr_jax.decoding import trie as trie_lib

NAME = "constrained_decode"
COLUMNS = (
  "preset",
  "batch",
  "beams",
  "num_sids",
  "unconstrained_ms",
  "constrained_ms",
  "ratio",
  "valid_fraction",
)


@gin.configurable(denylist=["out_dir", "load_before"])
def run_constrained_decode(
  *,
  quick: bool = False,
  out_dir: str = common.RESULTS_DIR,
  repeats: int = 5,
  num_sids: int = 3_000_000,
  presets: tuple[str, ...] = ("tiny", "small"),
  batch: int = 32,
  beams: tuple[int, ...] = (10, 50, 100),
  prompt_len: int = 16,
  text_vocab_size: int = 1000,
  seed: int = 0,
  load_before=None,
) -> dict:
  """Times both decodes for every (preset, beam) and writes the results.

  Args:
    quick: tiny SID space, tiny model, small batch (smoke test).
    out_dir: where <name>.json / .md go.
    repeats: timed calls per measurement (median reported).
    num_sids: unique valid SIDs in the trie.
    presets: decoder presets to try.
    batch: requests per call.
    beams: beam sizes.
    prompt_len: prompt tokens per request.
    text_vocab_size: text pieces in the vocabulary (sets the logits width with the SID codes).
    seed: data / parameter seed.
    load_before: load average at start (default: read now).

  Returns:
    The written JSON record.
  """
  load_before = load_before or common.load_average()
  level_sizes = common.scaled_level_sizes(quick)
  if quick:
    num_sids, presets, batch, beams, text_vocab_size = 300, ("tiny",), 4, (8,), 50
  rng = np.random.default_rng(seed)
  start = time.perf_counter()
  sids = common.paper_sids(num_sids, rng, level_sizes)
  trie = trie_lib.build_trie_index(sids, level_sizes)
  setup_s = time.perf_counter() - start
  layout = common.make_layout(level_sizes, text_vocab_size)
  prompts = common.random_prompts(rng, layout, batch, prompt_len)
  rows = []
  for preset in presets:
    config, params = common.make_model(preset, layout, seed)
    for beam_size in beams:
      decode = common.make_decode(config, layout, beam_size)
      timed = common.time_interleaved(
        {
          "free": functools.partial(decode, params, None, prompts),
          "constrained": functools.partial(decode, params, trie, prompts),
        },
        repeats=repeats,
      )
      free, constrained = timed["free"], timed["constrained"]
      _, _, valid = decode(params, trie, prompts)
      rows.append(
        {
          "preset": preset,
          "params": common.decoder.count_params(config),
          "batch": batch,
          "beams": beam_size,
          "num_sids": trie.num_sids,
          "unconstrained_ms": 1e3 * free["median_s"],
          "constrained_ms": 1e3 * constrained["median_s"],
          "ratio": common.paired_ratio(constrained["times_s"], free["times_s"]),
          "ratio_of_medians": constrained["median_s"] / free["median_s"],
          "valid_fraction": float(np.mean(np.asarray(valid))),
          "unconstrained_times_s": free["times_s"],
          "constrained_times_s": constrained["times_s"],
          "load_average": common.load_average(),
        }
      )
      print(rows[-1]["preset"], beam_size, f"ratio {rows[-1]['ratio']:.3f}", file=sys.stderr)
  summary = {
    "max_ratio": max(r["ratio"] for r in rows),
    "ratio_at_largest_beam": {r["preset"]: r["ratio"] for r in rows if r["beams"] == max(beams)},
    "target_ratio": 1.05,
    "sid_set_setup_s": setup_s,
  }
  settings = {
    "quick": quick,
    "num_sids": int(trie.num_sids),
    "level_sizes": level_sizes,
    "presets": presets,
    "batch": batch,
    "beams": beams,
    "prompt_len": prompt_len,
    "vocab_size": layout.vocab_size,
    "repeats": repeats,
  }
  notes = [
    "Random-initialised decoder weights: the timings depend on shapes, not on what was learnt.",
    "ratio = median over rounds of constrained / unconstrained wall time of one jitted call "
    "(prefill + 4-level beam search), after one warm-up round; each round runs the two calls "
    "back to back so that load changes on the shared machine hit both alike "
    "(ratio_of_medians in the JSON is the plain ratio of the medians).",
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
    common.Flag("presets", ("tiny", "small"), common.strs),
    common.Flag("beams", (10, 50, 100), common.ints),
    common.Flag("batch", 32),
  )
  return common.run_main(run_constrained_decode, __doc__, argv, flags)


if __name__ == "__main__":
  main()
