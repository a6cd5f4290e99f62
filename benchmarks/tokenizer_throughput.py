"""Benchmark 6: item tokenizer throughput: RQ-VAE training items/s and SID assignment items/s.

Training runs `Trainer.train_step` of `TokenizerTask` (encoder, residual quantization with the
level-1 code forced to the category, decoder, InfoNCE, EMA codebooks) on random features.
Assignment runs `sid.assign.encode_and_assign` (encode + residual quantization in fixed jitted
batches; the cluster-split suffix is not included) on N random items with the trained variables.
Catalogs larger than `stream_chunk` items are streamed: 21M x 384 float32 features are 32 GB,
more than this machine holds, so each chunk's features are drawn, assigned and dropped (only the
[N, L] codes are kept), as a job reading feature shards from disk would. The timed figure counts
the assignment calls only; the wall time with the feature generation is reported beside it.

  python -m benchmarks.tokenizer_throughput            # paper codebooks, batch 4096, 100k + 1M
  python -m benchmarks.tokenizer_throughput --assign-items=1000000,21000000   # measured 21M
  python -m benchmarks.tokenizer_throughput --quick
"""

from __future__ import annotations

import functools
import tempfile
import time

import gin
import jax
import numpy as np

from benchmarks import common
from gr_jax.sid import assign, quantizer, rqvae
from gr_jax.train import trainer as trainer_lib

NAME = "tokenizer_throughput"
COLUMNS = ("measure", "items", "batch", "seconds", "items_per_s")
PAPER_ITEMS = 21_000_000


def tokenizer_batch(
  rng: np.random.Generator, config: rqvae.TokenizerConfig, rows: int, num_categories: int
) -> dict[str, np.ndarray]:
  """Random features, Zipf categories and query features (half the items have a query)."""
  weights = 1.0 / np.arange(1, num_categories + 1)
  return {
    "features": rng.standard_normal((rows, config.feature_dim), np.float32),
    "category_id": rng.choice(num_categories, rows, p=weights / weights.sum()).astype(np.int32),
    "query_features": rng.standard_normal((rows, config.feature_dim), np.float32),
    "has_query": rng.random(rows) < 0.5,
  }


def assign_catalog(variables, config, rng, items, num_categories, assign_batch, stream_chunk):
  """Assigns `items` random items chunk by chunk; returns (assign_s, wall_s, codes [N, L])."""
  codes = []
  assign_s = 0.0
  wall_start = time.perf_counter()
  for start in range(0, items, stream_chunk):
    chunk = tokenizer_batch(rng, config, min(stream_chunk, items - start), num_categories)
    call_start = time.perf_counter()
    _, chunk_codes = assign.encode_and_assign(
      variables, config, chunk["features"], chunk["category_id"], assign_batch
    )
    assign_s += time.perf_counter() - call_start
    codes.append(chunk_codes)
    del chunk
  return assign_s, time.perf_counter() - wall_start, np.concatenate(codes)


def assignment_breakdown(variables, config, host_batch, repeats: int) -> list[dict]:
  """Device time of one assignment batch: encoder alone, residual quantization alone, both."""
  encode = jax.jit(lambda v, x: rqvae.encode(v, config, x))
  quantize = jax.jit(
    lambda v, z, c: (
      quantizer.residual_quantize(
        z, rqvae.codebooks_of(v, config), rqvae.forced_codes(config, c)
      ).codes
    )
  )
  both = jax.jit(lambda v, x, c: quantize(v, encode(v, x), c))
  features = jax.device_put(host_batch["features"])
  categories = jax.device_put(host_batch["category_id"])
  latents = encode(variables, features)
  timed = common.time_interleaved(
    {
      "encoder only": functools.partial(encode, variables, features),
      "residual quantization only": functools.partial(quantize, variables, latents, categories),
      "encode + quantize (device)": functools.partial(both, variables, features, categories),
    },
    repeats=repeats,
  )
  rows = features.shape[0]
  return [
    {
      "measure": f"assignment batch: {part}",
      "items": rows,
      "batch": rows,
      "seconds": result["median_s"],
      "items_per_s": rows / result["median_s"],
    }
    for part, result in timed.items()
  ]


@gin.configurable(denylist=["out_dir", "load_before"])
def run_tokenizer_throughput(
  *,
  quick: bool = False,
  out_dir: str = common.RESULTS_DIR,
  repeats: int = 5,
  batch: int = 4096,
  assign_items: tuple[int, ...] = (100_000, 1_000_000),
  assign_batch: int = 4096,
  stream_chunk: int = 1_000_000,
  num_categories: int = 1711,
  seed: int = 0,
  load_before=None,
) -> dict:
  """Times tokenizer train steps and assignment; writes the results.

  Args:
    quick: tiny tokenizer and sizes (smoke test).
    out_dir: where <name>.json / .md go.
    repeats: timed train steps (median reported).
    batch: items per train step.
    assign_items: catalog sizes whose assignment is timed (one pass each).
    assign_batch: rows per jitted assignment call.
    stream_chunk: items whose features are held at once (larger catalogs are streamed).
    num_categories: categories (level-1 codes forced to them).
    seed: data / parameter seed.
    load_before: load average at start (default: read now).

  Returns:
    The written JSON record.
  """
  load_before = load_before or common.load_average()
  config = rqvae.TokenizerConfig()  # paper sizes: 384-d features, codebooks 2048 x 1024 x 1024
  if quick:
    config = rqvae.TokenizerConfig(
      feature_dim=16,
      latent_dim=8,
      encoder_hidden=(32,),
      decoder_hidden=(32,),
      codebook_sizes=(16, 8, 8),
      kmeans_iters=2,
    )
    batch, assign_items, assign_batch, num_categories = 64, (256, 512), 128, 10
    stream_chunk = 200  # the 512-item catalog is streamed, so the smoke test covers it
  rng = np.random.default_rng(seed)
  host_batch = tokenizer_batch(rng, config, batch, num_categories)
  task = rqvae.TokenizerTask(config)
  with tempfile.TemporaryDirectory() as workdir:
    trainer = trainer_lib.Trainer(
      task,
      workdir,
      config=trainer_lib.TrainerConfig(num_steps=repeats + 1, progress_bar=False),
    )
    state, _ = trainer.init_state(host_batch)
    device_batch = trainer.put_batch(host_batch)
    step_rng = jax.random.key(seed)
    holder = {"state": state}

    def step():
      holder["state"], metrics = trainer.train_step(holder["state"], device_batch, step_rng)
      return metrics

    timed = common.time_call(step, warmup=2, repeats=repeats)
    trainer.close()
  state = holder["state"]
  variables = {"params": state.params, **state.model_state}
  rows = [
    {
      "measure": "RQ-VAE train step",
      "items": batch,
      "batch": batch,
      "seconds": timed["median_s"],
      "items_per_s": batch / timed["median_s"],
      "times_s": timed["times_s"],
      "load_average": common.load_average(),
    }
  ]
  # Compile the assignment program once, untimed.
  warm = tokenizer_batch(rng, config, assign_batch, num_categories)
  assign.encode_and_assign(variables, config, warm["features"], warm["category_id"], assign_batch)
  rows.extend(assignment_breakdown(variables, config, warm, repeats))
  measured = {}
  for items in assign_items:
    seconds, wall_s, codes = assign_catalog(
      variables, config, rng, items, num_categories, assign_batch, stream_chunk
    )
    measured[items] = seconds
    rows.append(
      {
        "measure": "SID assignment (encode + quantize)"
        + (", streamed" if items > stream_chunk else ""),
        "items": items,
        "batch": assign_batch,
        "seconds": seconds,
        "items_per_s": items / seconds,
        "wall_s_with_feature_generation": wall_s,
        "distinct_level1_codes": int(len(np.unique(codes[:, 0]))),
        "load_average": common.load_average(),
      }
    )
    del codes
  rate = rows[-1]["items_per_s"]
  if PAPER_ITEMS not in measured:
    rows.append(
      {
        "measure": "SID assignment, extrapolated",
        "items": PAPER_ITEMS,
        "batch": assign_batch,
        "seconds": PAPER_ITEMS / rate,
        "items_per_s": rate,
      }
    )
  summary = {
    "train_items_per_s": rows[0]["items_per_s"],
    "assign_items_per_s": {
      r["items"]: r["items_per_s"] for r in rows if r["measure"].startswith("SID assignment (")
    },
    # Extrapolated from the largest catalog only when 21M itself was not run.
    "assign_21m_extrapolated_s": None if PAPER_ITEMS in measured else PAPER_ITEMS / rate,
    "assign_21m_measured_s": measured.get(PAPER_ITEMS),
  }
  settings = {
    "quick": quick,
    "feature_dim": config.feature_dim,
    "latent_dim": config.latent_dim,
    "encoder_hidden": config.encoder_hidden,
    "codebook_sizes": config.codebook_sizes,
    "batch": batch,
    "assign_items": assign_items,
    "assign_batch": assign_batch,
    "stream_chunk": stream_chunk,
    "repeats": repeats,
  }
  notes = [
    "Assignment is timed as one pass over the catalog after a compile on one batch; catalogs "
    f"over {stream_chunk} items are streamed in chunks of that size (features drawn per chunk, "
    "not timed; only the codes are kept).",
  ]
  if PAPER_ITEMS not in measured:
    notes.append("The 21M row is extrapolated linearly from the largest measured catalog.")
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
    common.Flag("batch", 4096),
    common.Flag("assign_items", (100_000, 1_000_000), common.ints),
  )
  return common.run_main(run_tokenizer_throughput, __doc__, argv, flags)


if __name__ == "__main__":
  main()
