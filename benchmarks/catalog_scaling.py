"""Benchmark 3: constrained decode latency as the catalog grows from 10k to 21M items.

The catalog enters the decode only through the trie of its unique SIDs (about one SID per 7
items at paper scale), so each catalog size gets its trie and the same jitted decode (prefill +
constrained beam search, same model, same shapes) is timed on each, round-robin. The target:
latency at 21M items / latency at 10k items <= 1.1.

  python -m benchmarks.catalog_scaling             # 10k, 100k, 1M, 21M items; small; beam 100
  python -m benchmarks.catalog_scaling --quick
"""

from __future__ import annotations

import functools

import gin
import jax
import numpy as np

from benchmarks import common
from gr_jax.decoding import trie as trie_lib

NAME = "catalog_scaling"
COLUMNS = ("items", "num_sids", "trie_mib", "latency_ms", "ratio_to_smallest", "valid_fraction")


def trie_bytes(trie: trie_lib.TrieIndex) -> int:
  """Bytes of every array of the trie."""
  return sum(int(x.nbytes) for x in jax.tree.leaves(trie))


@gin.configurable(denylist=["out_dir", "load_before"])
def run_catalog_scaling(
  *,
  quick: bool = False,
  out_dir: str = common.RESULTS_DIR,
  repeats: int = 5,
  items: tuple[int, ...] = (10_000, 100_000, 1_000_000, 21_000_000),
  preset: str = "small",
  batch: int = 32,
  beams: int = 100,
  prompt_len: int = 16,
  text_vocab_size: int = 1000,
  seed: int = 0,
  load_before=None,
) -> dict:
  """Times the constrained decode over tries of growing catalogs.

  Args:
    quick: tiny SID space and model (smoke test).
    out_dir: where <name>.json / .md go.
    repeats: timed rounds (median reported).
    items: catalog sizes; each gets round(items / 7) unique SIDs.
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
    items, preset, batch, beams, text_vocab_size = (70, 700), "tiny", 4, 8, 50
  rng = np.random.default_rng(seed)
  tries = {}
  for num_items in items:
    num_sids = max(1, round(num_items / common.PAPER_ITEMS_PER_SID))
    tries[num_items] = trie_lib.build_trie_index(
      common.paper_sids(num_sids, rng, level_sizes), level_sizes
    )
  layout = common.make_layout(level_sizes, text_vocab_size)
  config, params = common.make_model(preset, layout, seed)
  prompts = common.random_prompts(rng, layout, batch, prompt_len)
  decode = common.make_decode(config, layout, beams)
  timed = common.time_interleaved(
    {n: functools.partial(decode, params, t, prompts) for n, t in tries.items()}, repeats=repeats
  )
  smallest = timed[items[0]]["times_s"]
  rows = []
  for num_items, trie in tries.items():
    _, _, valid = decode(params, trie, prompts)
    rows.append(
      {
        "items": num_items,
        "num_sids": trie.num_sids,
        "trie_mib": trie_bytes(trie) / 2**20,
        "latency_ms": 1e3 * timed[num_items]["median_s"],
        "ratio_to_smallest": common.paired_ratio(timed[num_items]["times_s"], smallest),
        "valid_fraction": float(np.mean(np.asarray(valid))),
        "times_s": timed[num_items]["times_s"],
      }
    )
  summary = {
    "largest_over_smallest": rows[-1]["ratio_to_smallest"],
    "target_ratio": 1.1,
    "load_average_after_timing": common.load_average(),
  }
  settings = {
    "quick": quick,
    "items": items,
    "level_sizes": level_sizes,
    "preset": preset,
    "batch": batch,
    "beams": beams,
    "prompt_len": prompt_len,
    "vocab_size": layout.vocab_size,
    "repeats": repeats,
  }
  notes = [
    "ratio_to_smallest: median over rounds of this catalog's time / the smallest's (the "
    "catalogs are timed round-robin, one call each per round).",
    "Catalogs are synthetic paper-shaped SID sets (common.random_paper_scale_sids), 7 items per "
    "SID, as in the paper's 21M items / 3M SIDs; the decode sees only the trie.",
    "Shapes, and so the work of every op, are the same for every catalog; only the trie's "
    "tables (trie_mib) and the rows gathered from them differ.",
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
    common.Flag("items", (10_000, 100_000, 1_000_000, 21_000_000), common.ints),
    common.Flag("preset", "small"),
    common.Flag("beams", 100),
  )
  return common.run_main(run_catalog_scaling, __doc__, argv, flags)


if __name__ == "__main__":
  main()
