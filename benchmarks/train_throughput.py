"""Benchmark 5: generator training throughput and achieved FLOP/s against a measured matmul peak.

Runs the real `Trainer.train_step` of `SftTask` (jitted forward + backward + AdamW, donated state)
on random fixed-layout batches and reports tokens/s and FLOP/s two ways:

  model FLOPs     `decoder.flops_per_token` (PaLM accounting: 6 N + attention, every position
                  counted with the vocabulary projection), the usual MFU numerator;
  executed FLOPs  the same minus the vocabulary projection of the prompt positions, which
                  `SftTask` skips (it computes logits only for the L SID targets).

The peak is a big float32 `jnp.dot` timed in the same process on the same device, before and
after the training steps (the larger is used). Issue 7's target on CPU: >= 50% of that peak.
There is no GPU here, so no GPU MFU.

  python -m benchmarks.train_throughput             # small preset, batch 32, length 64
  python -m benchmarks.train_throughput --quick
"""

from __future__ import annotations

import os
import sys
import tempfile

import gin
import jax
import jax.numpy as jnp
import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from gr_jax.models import decoder, sft_task  # noqa: E402
from gr_jax.train import trainer as trainer_lib  # noqa: E402

NAME = "train_throughput"
COLUMNS = (
  "measure",
  "preset",
  "batch",
  "length",
  "step_ms",
  "tokens_per_s",
  "gflops",
  "fraction_of_peak",
)


def matmul_peak(size: int, repeats: int) -> dict:
  """FLOP/s of a jitted float32 [size, size] @ [size, size] on the default device."""
  keys = jax.random.split(jax.random.key(0))
  a = jax.random.normal(keys[0], (size, size), jnp.float32)
  b = jax.random.normal(keys[1], (size, size), jnp.float32)
  dot = jax.jit(jnp.dot)
  timed = common.time_call(lambda: dot(a, b), repeats=repeats)
  return {"flops": 2.0 * size**3 / timed["median_s"], **timed}


def sft_batch(rng: np.random.Generator, layout, batch: int, length: int) -> dict[str, np.ndarray]:
  """Random prompt tokens followed by L random SID tokens; loss on the SID tokens."""
  levels = layout.num_sid_levels
  prompt = common.random_prompts(rng, layout, batch, length - levels)  # [B, T - L]
  codes = np.stack([rng.integers(0, s, batch) for s in layout.sid_level_sizes], axis=1)
  tokens = np.concatenate([prompt, layout.sid_to_tokens(codes.astype(np.int32))], axis=1)
  weights = np.zeros((batch, length), np.float32)
  weights[:, -levels:] = 1.0
  return {"tokens": tokens.astype(np.int32), "loss_weights": weights}


@gin.configurable(denylist=["out_dir", "load_before"])
def run_train_throughput(
  *,
  quick: bool = False,
  out_dir: str = common.RESULTS_DIR,
  repeats: int = 5,
  preset: str = "small",
  batch: int = 32,
  length: int = 64,
  text_vocab_size: int = 1000,
  matmul_size: int = 2048,
  seed: int = 0,
  load_before=None,
) -> dict:
  """Times train steps and the matmul peak; writes the results.

  Args:
    quick: tiny model and batch (smoke test).
    out_dir: where <name>.json / .md go.
    repeats: timed steps / matmuls (median reported).
    preset: decoder preset.
    batch: sequences per step.
    length: tokens per sequence (prompt + L SID tokens).
    text_vocab_size: text pieces in the vocabulary.
    matmul_size: n of the n x n x n peak matmul.
    seed: data / parameter seed.
    load_before: load average at start (default: read now).

  Returns:
    The written JSON record.
  """
  load_before = load_before or common.load_average()
  level_sizes = common.scaled_level_sizes(quick)
  if quick:
    preset, batch, length, text_vocab_size, matmul_size = "tiny", 8, 16, 50, 256
  rng = np.random.default_rng(seed)
  layout = common.make_layout(level_sizes, text_vocab_size)
  config = decoder.decoder_preset(preset, layout.vocab_size)
  peak_before = matmul_peak(matmul_size, repeats)

  host_batch = sft_batch(rng, layout, batch, length)
  task = sft_task.SftTask(config, layout.num_sid_levels)
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
    final_loss = float(step()["loss"])
    trainer.close()
  peak_after = matmul_peak(matmul_size, repeats)
  peak = max(peak_before["flops"], peak_after["flops"])

  tokens = batch * length
  model_flops = decoder.flops_per_token(config, length, training=True) * tokens
  skipped = (
    6.0 * config.padded_vocab_size * config.embed_dim * batch * (length - layout.num_sid_levels)
  )
  executed_flops = model_flops - skipped
  step_s = timed["median_s"]
  common_row = {
    "preset": preset,
    "params": decoder.count_params(config),
    "batch": batch,
    "length": length,
    "step_ms": 1e3 * step_s,
    "tokens_per_s": tokens / step_s,
    "step_times_s": timed["times_s"],
  }
  rows = [
    {
      **common_row,
      "measure": "model FLOPs (flops_per_token)",
      "gflops": model_flops / step_s / 1e9,
      "fraction_of_peak": model_flops / step_s / peak,
    },
    {
      **common_row,
      "measure": "executed FLOPs (no prompt logits)",
      "gflops": executed_flops / step_s / 1e9,
      "fraction_of_peak": executed_flops / step_s / peak,
    },
    {
      "measure": f"peak: f32 dot {matmul_size}^3, before / after",
      "gflops": peak / 1e9,
      "fraction_of_peak": 1.0,
      "peak_before_gflops": peak_before["flops"] / 1e9,
      "peak_after_gflops": peak_after["flops"] / 1e9,
    },
  ]
  summary = {
    "tokens_per_s": tokens / step_s,
    "mfu_model_flops": rows[0]["fraction_of_peak"],
    "fraction_executed_flops": rows[1]["fraction_of_peak"],
    "matmul_peak_gflops": peak / 1e9,
    "target_fraction": 0.5,
    "gpu_mfu": "not measured: no GPU in this task",
    "loss_after_steps": final_loss,
  }
  settings = {
    "quick": quick,
    "preset": preset,
    "batch": batch,
    "length": length,
    "vocab_size": layout.vocab_size,
    "matmul_size": matmul_size,
    "repeats": repeats,
    "dtype": config.dtype,
  }
  notes = [
    "Steps run through Trainer.train_step (the jitted step the fit loop uses), after 2 warm-up "
    "steps; host batch fixed and already on device, so input time is not counted.",
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
  parser.add_argument("--preset", default="small")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--length", type=int, default=64)
  parser.add_argument("--matmul-size", type=int, default=2048)
  args = parser.parse_args(argv)
  common.parse_gin(args.gin)
  return run_train_throughput(
    quick=args.quick,
    out_dir=args.out_dir,
    repeats=args.repeats,
    preset=args.preset,
    batch=args.batch,
    length=args.length,
    matmul_size=args.matmul_size,
  )


if __name__ == "__main__":
  main()
