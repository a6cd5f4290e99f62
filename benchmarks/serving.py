"""Benchmark 7: retrieval serving on this machine: QPS and p50 / p99 latency of Retriever.decode.

A `Retriever` (small generator, trie of a paper-shaped 21M-item catalog) answers requests one at a
time (batch 1) and in moderate batches, at beams 20 / 50 / 100. Latency is the wall time of one
`Retriever.decode` call (host prompts in, host SIDs out: transfer, prefill, constrained beam
search); QPS is requests answered per second of back-to-back calls. The paper serves 200 QPS on 8
GPUs at 40 ms average; this is a 2-core CPU, so the figures are a CPU baseline, not a comparison.

  python -m benchmarks.serving            # 21M items, small preset, batch 1 and 32
  python -m benchmarks.serving --quick
"""

from __future__ import annotations

import os
import sys
import time

import gin
import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from gr_jax import retrieval  # noqa: E402
from gr_jax.sid import tables  # noqa: E402

NAME = "serving"
COLUMNS = ("batch", "beams", "calls", "qps", "mean_ms", "p50_ms", "p99_ms")


def serve_rows(retriever, prompts: np.ndarray, batch: int, beams: int, calls: int) -> dict:
  """Latency of `calls` back-to-back decode calls of `batch` requests each (after a warm-up)."""
  retriever.decode(prompts[:batch], beams)  # compile
  latencies = []
  for call in range(calls):
    start_row = (call * batch) % (len(prompts) - batch + 1)
    chunk = prompts[start_row : start_row + batch]
    start = time.perf_counter()
    retriever.decode(chunk, beams)
    latencies.append(time.perf_counter() - start)
  mean = float(np.mean(latencies))
  return {
    "batch": batch,
    "beams": beams,
    "calls": calls,
    "qps": batch / mean,
    "mean_ms": 1e3 * mean,
    "p50_ms": 1e3 * common.percentile(latencies, 50),
    "p99_ms": 1e3 * common.percentile(latencies, 99),
    "latencies_s": latencies,
    "load_average": common.load_average(),
  }


@gin.configurable(denylist=["out_dir", "load_before"])
def run_serving(
  *,
  quick: bool = False,
  out_dir: str = common.RESULTS_DIR,
  repeats: int = 20,
  items: int = 21_000_000,
  preset: str = "small",
  batches: tuple[int, ...] = (1, 32),
  beams: tuple[int, ...] = (20, 50, 100),
  prompt_len: int = 16,
  text_vocab_size: int = 1000,
  seed: int = 0,
  load_before=None,
) -> dict:
  """Serves random prompts at every (batch, beam) and writes QPS and latency percentiles.

  Args:
    quick: tiny catalog and model (smoke test).
    out_dir: where <name>.json / .md go.
    repeats: decode calls per (batch, beam) (batch-1 calls; larger batches get fewer, >= 3).
    items: catalog size (item -> SID table and trie of its SIDs).
    preset: decoder preset.
    batches: requests per call.
    beams: beam sizes.
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
    items, preset, batches, beams, text_vocab_size = 700, "tiny", (1,), (4,), 50
  rng = np.random.default_rng(seed)
  _, item_sid = common.paper_item_sids(items, rng, level_sizes=level_sizes)
  sid_tables = tables.build_sid_tables(item_sid, level_sizes)
  del item_sid
  layout = common.make_layout(level_sizes, text_vocab_size)
  config, params = common.make_model(preset, layout, seed)
  efficiency = rng.random(items).astype(np.float32)
  prompts = common.random_prompts(rng, layout, max(batches) * 4, prompt_len)
  rows = []
  for batch in batches:
    retriever = retrieval.Retriever(
      params, config, layout, sid_tables, efficiency, batch_size=batch, constrained=True
    )
    calls = max(3, repeats // batch) if batch > 1 else repeats
    for beam_size in beams:
      rows.append(serve_rows(retriever, prompts, batch, beam_size, calls))
      print(f"batch {batch} beam {beam_size}: {rows[-1]['qps']:.1f} QPS", file=sys.stderr)
    del retriever
  summary = {
    "best_qps": max(r["qps"] for r in rows),
    "batch1_p50_ms": {r["beams"]: r["p50_ms"] for r in rows if r["batch"] == 1},
    "paper": "200 QPS on 8 GPUs at 40 ms average (not comparable: this is a 2-core CPU)",
  }
  settings = {
    "quick": quick,
    "items": items,
    "num_sids": sid_tables.num_sids,
    "level_sizes": level_sizes,
    "preset": preset,
    "batches": batches,
    "beams": beams,
    "prompt_len": prompt_len,
    "vocab_size": layout.vocab_size,
    "devices": retrieval.partitioning.make_mesh().devices.size,
  }
  notes = [
    "Random-initialised generator weights; prompts are random text tokens.",
    "Latency covers Retriever.decode only (SIDs out), not the SID -> item expansion.",
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
  parser.set_defaults(repeats=20)
  parser.add_argument("--items", type=int, default=21_000_000)
  parser.add_argument("--preset", default="small")
  parser.add_argument("--batches", default="1,32")
  parser.add_argument("--beams", default="20,50,100")
  args = parser.parse_args(argv)
  common.parse_gin(args.gin)
  return run_serving(
    quick=args.quick,
    out_dir=args.out_dir,
    repeats=args.repeats,
    items=args.items,
    preset=args.preset,
    batches=tuple(int(b) for b in args.batches.split(",")),
    beams=tuple(int(b) for b in args.beams.split(",")),
  )


if __name__ == "__main__":
  main()
