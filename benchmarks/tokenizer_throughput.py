"""Benchmark 6: item tokenizer throughput: RQ-VAE training items/s and SID assignment items/s.

Training runs `Trainer.train_step` of `TokenizerTask` (encoder, residual quantization with the
level-1 code forced to the category, decoder, InfoNCE, EMA codebooks) on random features.
Assignment runs `sid.assign.encode_and_assign` (encode + residual quantization in fixed jitted
batches; the cluster-split suffix is not included) on N random items with the trained variables.
21M items do not fit this machine's memory as one feature array (21M x 384 float32 = 32 GB), so
the 21M figure is extrapolated from the largest measured N (assignment is per-item: linear).

  python -m benchmarks.tokenizer_throughput            # paper codebooks, batch 4096, 100k + 1M
  python -m benchmarks.tokenizer_throughput --quick
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile

import gin
import jax
import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from gr_jax.sid import assign, quantizer, rqvae  # noqa: E402
from gr_jax.train import trainer as trainer_lib  # noqa: E402

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
  for items in assign_items:
    catalog = tokenizer_batch(rng, config, items, num_categories)
    seconds = common.time_call(
      lambda catalog=catalog: assign.encode_and_assign(
        variables, config, catalog["features"], catalog["category_id"], assign_batch
      ),
      warmup=0,
      repeats=1,
    )["median_s"]
    rows.append(
      {
        "measure": "SID assignment (encode + quantize)",
        "items": items,
        "batch": assign_batch,
        "seconds": seconds,
        "items_per_s": items / seconds,
        "load_average": common.load_average(),
      }
    )
    del catalog
  rate = rows[-1]["items_per_s"]
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
    "assign_21m_extrapolated_s": PAPER_ITEMS / rate,
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
    "repeats": repeats,
  }
  notes = [
    "The 21M row is extrapolated linearly from the largest measured catalog (not measured: a "
    "21M x 384 float32 feature array is 32 GB, more than this machine's memory).",
    "Assignment is timed as one pass over the catalog after a compile on one batch.",
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
  parser.add_argument("--batch", type=int, default=4096)
  parser.add_argument("--assign-items", default="100000,1000000")
  args = parser.parse_args(argv)
  common.parse_gin(args.gin)
  return run_tokenizer_throughput(
    quick=args.quick,
    out_dir=args.out_dir,
    repeats=args.repeats,
    batch=args.batch,
    assign_items=tuple(int(n) for n in args.assign_items.split(",")),
  )


if __name__ == "__main__":
  main()
