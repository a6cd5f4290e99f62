"""Benchmark 7: retrieval serving on this machine: QPS and p50 / p99 latency of Retriever.decode.

A `Retriever` (generator preset, trie of a paper-shaped 21M-item catalog) answers requests one at
a time (batch 1) and in moderate batches, at beams 20 / 50 / 100. Latency is the wall time of one
`Retriever.decode` call (host prompts in, host SIDs out: transfer, prefill, constrained beam
search); QPS is requests answered per second of back-to-back calls. The paper serves 200 QPS on 8
GPUs at 40 ms average; on a CPU the figures are a baseline, not a comparison.

Several presets (`--preset small,qwen05b`) share one catalog and trie and are served in turn; the
results are written after each preset, so a run stopped later keeps the finished ones, and a
preset that fails (e.g. out of memory) is recorded and the next one still runs. `--dtype
bfloat16` sets the generators' compute dtype. `--max-setting-s` caps the timed calls of each
(preset, batch, beam) setting (at least 3 calls run; compilation is outside the cap and reported
as compile_s).

  python -m benchmarks.serving            # 21M items, small preset, batch 1 and 32
  python -m benchmarks.serving --preset small,qwen05b --dtype bfloat16 --repeats 400 \
      --max-setting-s 4                   # the GPU set (benchmarks/gpu_set.sh)
  python -m benchmarks.serving --quick
"""

from __future__ import annotations

import sys
import time
import traceback

import gin
import jax
import numpy as np

from benchmarks import common
from gr_jax.models import decoder
from gr_jax.serving import retriever as retrieval
from gr_jax.sid import tables

NAME = "serving"
COLUMNS = ("preset", "batch", "beams", "calls", "qps", "mean_ms", "p50_ms", "p99_ms", "compile_s")
MIN_CALLS = 3


def serve_rows(
  retriever,
  prompts: np.ndarray,
  batch: int,
  beams: int,
  calls: int,
  *,
  warmup: int = 1,
  max_seconds: float | None = None,
) -> dict:
  """Latency of up to `calls` back-to-back decode calls of `batch` requests each.

  Args:
    retriever: the Retriever to call.
    prompts: [N, Tp] prompts; calls take consecutive chunks of `batch`.
    batch: requests per call.
    beams: beam size.
    calls: timed calls at most.
    warmup: untimed calls first (the first compiles; its time is compile_s).
    max_seconds: stop timing once the timed calls add up to this (after MIN_CALLS calls).

  Returns:
    The row: QPS, mean / p50 / p99 latency, every latency, compile_s.
  """
  start = time.perf_counter()
  retriever.decode(prompts[:batch], beams)  # compile
  compile_s = time.perf_counter() - start
  for _ in range(warmup - 1):
    retriever.decode(prompts[:batch], beams)
  latencies = []
  for call in range(calls):
    start_row = (call * batch) % (len(prompts) - batch + 1)
    chunk = prompts[start_row : start_row + batch]
    start = time.perf_counter()
    retriever.decode(chunk, beams)
    latencies.append(time.perf_counter() - start)
    if max_seconds is not None and len(latencies) >= MIN_CALLS and sum(latencies) >= max_seconds:
      break
  mean = float(np.mean(latencies))
  return {
    "batch": batch,
    "beams": beams,
    "calls": len(latencies),
    "qps": batch / mean,
    "mean_ms": 1e3 * mean,
    "p50_ms": 1e3 * common.percentile(latencies, 50),
    "p99_ms": 1e3 * common.percentile(latencies, 99),
    "compile_s": compile_s,
    "capped": len(latencies) < calls,
    "latencies_s": latencies,
    "load_average": common.load_average(),
  }


def _summary(rows: list[dict], presets: tuple[str, ...], failed: dict[str, str]) -> dict:
  done = [r for r in rows if "error" not in r]
  by_preset = {}
  for preset in presets:
    mine = [r for r in done if r["preset"] == preset]
    if mine:
      by_preset[preset] = {
        "best_qps": max(r["qps"] for r in mine),
        "batch1_p50_ms": {r["beams"]: r["p50_ms"] for r in mine if r["batch"] == 1},
        "batch1_p99_ms": {r["beams"]: r["p99_ms"] for r in mine if r["batch"] == 1},
      }
  if len(presets) == 1:
    batch1 = by_preset.get(presets[0], {}).get("batch1_p50_ms", {})
  else:
    batch1 = {p: v["batch1_p50_ms"] for p, v in by_preset.items()}
  device = jax.devices()[0]
  if device.platform == "cpu":
    paper = "200 QPS on 8 GPUs at 40 ms average (not comparable: this is a CPU)"
  else:
    paper = (
      f"200 QPS on 8 GPUs at 40 ms average; this run: 1 {device.device_kind}, random weights "
      "(compare per GPU, and only with a generator of the paper's size)"
    )
  return {
    "best_qps": max((r["qps"] for r in done), default=None),
    "batch1_p50_ms": batch1,
    "by_preset": by_preset,
    "failed_presets": failed,
    "paper": paper,
  }


@gin.configurable(denylist=["out_dir", "load_before"])
def run_serving(
  *,
  quick: bool = False,
  out_dir: str = common.RESULTS_DIR,
  repeats: int = 20,
  items: int = 21_000_000,
  preset: str | tuple[str, ...] = "small",
  dtype: str = "float32",
  batches: tuple[int, ...] = (1, 32),
  beams: tuple[int, ...] = (20, 50, 100),
  prompt_len: int = 16,
  text_vocab_size: int = 1000,
  warmup: int = 1,
  max_setting_s: float | None = None,
  seed: int = 0,
  load_before=None,
) -> dict:
  """Serves random prompts at every (preset, batch, beam) and writes QPS and latency percentiles.

  Args:
    quick: tiny catalog and model (smoke test).
    out_dir: where <name>.json / .md go.
    repeats: decode calls per (batch, beam) (batch-1 calls; larger batches get fewer, >= 3).
    items: catalog size (item -> SID table and trie of its SIDs).
    preset: decoder preset, or several (a tuple or a comma-separated string), served in turn.
    dtype: the generators' compute dtype, 'float32' or 'bfloat16'.
    batches: requests per call.
    beams: beam sizes.
    prompt_len: prompt tokens per request.
    text_vocab_size: text pieces in the vocabulary.
    warmup: untimed calls per setting (the first compiles).
    max_setting_s: cap on the timed calls' total seconds per setting (None: no cap).
    seed: data / parameter seed.
    load_before: load average at start (default: read now).

  Returns:
    The written JSON record (after the last preset).
  """
  load_before = load_before or common.load_average()
  presets = tuple(preset.split(",")) if isinstance(preset, str) else tuple(preset)
  level_sizes = common.scaled_level_sizes(quick)
  if quick:
    items, presets, batches, beams, text_vocab_size = 700, ("tiny",), (1,), (4,), 50
  rng = np.random.default_rng(seed)
  start = time.perf_counter()
  _, item_sid = common.paper_item_sids(items, rng, level_sizes=level_sizes)
  sid_tables = tables.build_sid_tables(item_sid, level_sizes)
  del item_sid
  catalog_s = time.perf_counter() - start
  layout = common.make_layout(level_sizes, text_vocab_size)
  efficiency = rng.random(items).astype(np.float32)
  prompts = common.random_prompts(rng, layout, max(batches) * 4, prompt_len)
  settings = {
    "quick": quick,
    "items": items,
    "num_sids": sid_tables.num_sids,
    "level_sizes": level_sizes,
    "presets": presets,
    "dtype": dtype,
    "batches": batches,
    "beams": beams,
    "prompt_len": prompt_len,
    "vocab_size": layout.vocab_size,
    "repeats": repeats,
    "warmup": warmup,
    "max_setting_s": max_setting_s,
    "catalog_setup_s": catalog_s,
    "devices": retrieval.partitioning.make_mesh().devices.size,
  }
  notes = [
    "Random-initialised generator weights; prompts are random text tokens.",
    "Latency covers Retriever.decode only (SIDs out), not the SID -> item expansion.",
    "compile_s: the first (compiling) call of each setting, not in the latencies; calls: timed "
    "calls, fewer than asked when the per-setting cap (max_setting_s) stopped them (capped).",
  ]
  rows: list[dict] = []
  failed: dict[str, str] = {}
  record = {}
  for name in presets:
    try:
      config = decoder.decoder_preset(name, layout.vocab_size, dtype=dtype)
      params = jax.jit(decoder.init_params, static_argnums=0)(config, jax.random.key(seed))
      for batch in batches:
        retriever = retrieval.Retriever(
          params, config, layout, sid_tables, efficiency, batch_size=batch, constrained=True
        )
        calls = max(MIN_CALLS, repeats // batch) if batch > 1 else repeats
        for beam_size in beams:
          row = serve_rows(
            retriever,
            prompts,
            batch,
            beam_size,
            calls,
            warmup=warmup,
            max_seconds=max_setting_s,
          )
          rows.append({"preset": name, "dtype": dtype, **row})
          print(
            f"{name} batch {batch} beam {beam_size}: {row['qps']:.1f} QPS, "
            f"p50 {row['p50_ms']:.1f} ms (compile {row['compile_s']:.1f} s)",
            file=sys.stderr,
          )
        del retriever
      del params
    except Exception as error:  # record it and go on with the next preset
      traceback.print_exc()
      failed[name] = f"{type(error).__name__}: {error}"[:2000]
      rows.append({"preset": name, "dtype": dtype, "error": failed[name]})
    record = common.write_results(
      NAME,
      rows,
      columns=COLUMNS,
      summary=_summary(rows, presets, failed),
      settings=settings,
      notes=notes,
      out_dir=out_dir,
      load_before=load_before,
    )
  return record


def main(argv=None) -> dict:
  flags = (
    common.Flag("items", 21_000_000),
    common.Flag("preset", "small", help="one preset or several, comma-separated"),
    common.Flag("dtype", "float32", choices=("float32", "bfloat16")),
    common.Flag("batches", (1, 32), common.ints),
    common.Flag("beams", (20, 50, 100), common.ints),
    common.Flag("warmup", 1, lambda text: max(1, int(text)), "untimed calls per setting (>= 1)"),
    common.Flag("max_setting_s", None, float, "cap on each setting's timed calls"),
  )
  record = common.run_main(run_serving, __doc__, argv, flags, repeats=20)
  if record["summary"]["failed_presets"]:
    print(f"error: presets failed: {record['summary']['failed_presets']}", file=sys.stderr)
    sys.exit(1)
  return record


if __name__ == "__main__":
  main()
