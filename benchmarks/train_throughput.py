"""Benchmark 5: generator training throughput and achieved FLOP/s against a measured matmul peak.

Runs the real `Trainer.train_step` of `SftTask` (jitted forward + backward + AdamW, donated state)
on random fixed-layout batches and reports tokens/s and FLOP/s two ways:

  model FLOPs     `decoder.flops_per_token` (PaLM accounting: 6 N + attention, every position
                  counted with the vocabulary projection), the usual MFU numerator;
  executed FLOPs  the same minus the vocabulary projection of the prompt positions, which
                  `SftTask` skips (it computes logits only for the L SID targets).

Two denominators:

  measured peak   a big `jnp.dot` in the run's dtype, timed in the same process on the same
                  device, before and after the training steps (the larger is used). The
                  target on CPU: >= 50% of it.
  spec peak       on a GPU whose kind is in `GPU_SPEC_TFLOPS` (H100, H200, A100), the vendor's
                  dense peak for the dtype: bf16 tensor cores for --dtype bfloat16; for float32,
                  the TF32 tensor-core peak, since JAX's default matmul precision lets XLA run
                  float32 dots in TF32 on Ampere / Hopper (the plain FP32 peak applies under
                  jax_default_matmul_precision=highest). `gpu_mfu` in the summary is model FLOP/s
                  over this peak; null (with a note) on an unknown GPU, text on a CPU.

--dtype bfloat16 sets the decoder's compute dtype (parameters and optimizer state stay float32)
and times the peak matmul in bfloat16 too. Presets `base` and `qwen05b` default to 16 x 512 and
8 x 512 tokens per step; `--remat` (or an out-of-memory error, which retries once with it)
rematerialises each block in the backward pass.

  python -m benchmarks.train_throughput                                   # small, 128 x 64, f32
  python -m benchmarks.train_throughput --preset qwen05b --dtype bfloat16 # GPU: 8 x 512
  python -m benchmarks.train_throughput --quick
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile

import gin
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from gr_jax.models import decoder, sft_task
from gr_jax.train import trainer as trainer_lib

NAME = "train_throughput"
COLUMNS = (
  "measure",
  "preset",
  "dtype",
  "batch",
  "length",
  "step_ms",
  "tokens_per_s",
  "gflops",
  "fraction_of_peak",
  "fraction_of_spec",
)

# (batch, length) per preset when --batch / --length are not given: `small` at the SFT run's batch
# (gin_configs/runs/sft.gin: 128); tokens per step that fill a GPU without remat for the large
# presets (base ~80M, qwen05b ~0.36B parameters at this vocab).
PRESET_SHAPES = {"tiny": (32, 64), "small": (128, 64), "base": (16, 512), "qwen05b": (8, 512)}

# Vendor dense peaks (no structured sparsity), TFLOP/s: NVIDIA data sheets (H100 / H200 SXM and
# NVL, H100 PCIe, A100), the "with sparsity" figures halved. Matched in order against the
# lower-cased `device_kind`, so the NVL / PCIe variants come before the plain names
# ('NVIDIA H100 80GB HBM3' is the H100 SXM). Keys: bf16 tensor cores, TF32 tensor cores, FP32
# without tensor cores.
GPU_SPEC_TFLOPS = (
  ("h100 nvl", "H100 NVL", {"bfloat16": 835.5, "tf32": 417.5, "float32": 60.0}),
  ("h200 nvl", "H200 NVL", {"bfloat16": 835.5, "tf32": 417.5, "float32": 60.0}),
  ("h100 pcie", "H100 PCIe", {"bfloat16": 756.5, "tf32": 378.0, "float32": 51.2}),
  ("h100", "H100 SXM", {"bfloat16": 989.4, "tf32": 494.7, "float32": 66.9}),
  ("h200", "H200 SXM", {"bfloat16": 989.4, "tf32": 494.7, "float32": 66.9}),
  ("a100", "A100", {"bfloat16": 312.0, "tf32": 156.0, "float32": 19.5}),
)

_FULL_F32_PRECISIONS = ("highest", "float32", "f32_f32_f32")
CPU_GPU_MFU = "not measured: no GPU in this task"


def spec_peak(platform: str, device_kind: str, dtype: str) -> dict:
  """The vendor's dense peak that applies to `dtype` matmuls on this device.

  Args:
    platform: jax device platform ('gpu', 'cpu', 'tpu').
    device_kind: jax `device_kind` (e.g. 'NVIDIA H100 80GB HBM3').
    dtype: the run's compute dtype, 'float32' or 'bfloat16'.

  Returns:
    {'tflops': float or None, 'precision': 'bf16' / 'tf32' / 'fp32' or None, 'device': table
    name or None, 'note': where the number comes from or why there is none}.
  """
  if platform != "gpu":
    return {
      "tflops": None,
      "precision": None,
      "device": None,
      "note": f"no spec peak for platform {platform!r} (the table covers NVIDIA GPUs)",
    }
  kind = device_kind.lower()
  match = next((entry for entry in GPU_SPEC_TFLOPS if entry[0] in kind), None)
  if match is None:
    return {
      "tflops": None,
      "precision": None,
      "device": None,
      "note": f"unknown GPU kind {device_kind!r}: not in GPU_SPEC_TFLOPS, so no spec MFU",
    }
  _, name, peaks = match
  if dtype == "bfloat16":
    return {
      "tflops": peaks["bfloat16"],
      "precision": "bf16",
      "device": name,
      "note": f"{name} dense bf16 tensor-core peak (data sheet, without sparsity)",
    }
  precision = str(jax.config.jax_default_matmul_precision or "default").lower()
  if precision in _FULL_F32_PRECISIONS:
    return {
      "tflops": peaks["float32"],
      "precision": "fp32",
      "device": name,
      "note": f"{name} FP32 (non-tensor-core) peak: jax_default_matmul_precision={precision}",
    }
  return {
    "tflops": peaks["tf32"],
    "precision": "tf32",
    "device": name,
    "note": f"{name} dense TF32 tensor-core peak: JAX's default matmul precision runs float32 "
    "dots in TF32 on this GPU (set jax_default_matmul_precision=highest for true FP32, whose "
    f"peak is {peaks['float32']} TFLOP/s)",
  }


def matmul_peak(size: int, repeats: int, dtype: str = "float32") -> dict:
  """FLOP/s of a jitted [size, size] @ [size, size] in `dtype` on the default device."""
  keys = jax.random.split(jax.random.key(0))
  a = jax.random.normal(keys[0], (size, size), jnp.float32).astype(dtype)
  b = jax.random.normal(keys[1], (size, size), jnp.float32).astype(dtype)
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


def is_out_of_memory(error: BaseException) -> bool:
  """True for XLA's device out-of-memory errors (RESOURCE_EXHAUSTED)."""
  text = str(error).lower()
  return "resource_exhausted" in text or "out of memory" in text


def time_train_steps(config, layout, host_batch, *, repeats: int, seed: int) -> tuple[dict, float]:
  """Median step time of `repeats` Trainer.train_step calls (after 2 warm-ups), final loss."""
  task = sft_task.SftTask(config, layout.num_sid_levels)
  with tempfile.TemporaryDirectory() as workdir:
    trainer = trainer_lib.Trainer(
      task,
      workdir,
      config=trainer_lib.TrainerConfig(num_steps=repeats + 1, progress_bar=False),
    )
    try:
      state, _ = trainer.init_state(host_batch)
      device_batch = trainer.put_batch(host_batch)
      step_rng = jax.random.key(seed)
      holder = {"state": state}
      del state

      def step():
        holder["state"], metrics = trainer.train_step(holder["state"], device_batch, step_rng)
        return metrics

      timed = common.time_call(step, warmup=2, repeats=repeats)
      final_loss = float(step()["loss"])
      holder.clear()
    finally:
      trainer.close()
  return timed, final_loss


@gin.configurable(denylist=["out_dir", "load_before"])
def run_train_throughput(
  *,
  quick: bool = False,
  out_dir: str = common.RESULTS_DIR,
  repeats: int = 5,
  preset: str = "small",
  batch: int | None = None,
  length: int | None = None,
  dtype: str = "float32",
  remat: bool = False,
  text_vocab_size: int = 1000,
  matmul_size: int | None = None,
  seed: int = 0,
  load_before=None,
) -> dict:
  """Times train steps and the matmul peak; writes the results.

  Args:
    quick: tiny model and batch (smoke test); dtype and remat still apply.
    out_dir: where <name>.json / .md go.
    repeats: timed steps / matmuls (median reported).
    preset: decoder preset.
    batch: sequences per step (default: PRESET_SHAPES).
    length: tokens per sequence, prompt + L SID tokens (default: PRESET_SHAPES).
    dtype: compute dtype of the decoder and of the peak matmul, 'float32' or 'bfloat16'.
    remat: rematerialise each block in the backward pass (also switched on, once, when the
      first try runs out of device memory).
    text_vocab_size: text pieces in the vocabulary.
    matmul_size: n of the n x n x n peak matmul (default: 8192 on an accelerator, 2048 on CPU).
    seed: data / parameter seed.
    load_before: load average at start (default: read now).

  Returns:
    The written JSON record.

  Raises:
    ValueError: unknown dtype.
  """
  load_before = load_before or common.load_average()
  if dtype not in ("float32", "bfloat16"):
    raise ValueError(f"run_train_throughput: dtype must be float32 or bfloat16, got {dtype!r}")
  device = jax.devices()[0]
  level_sizes = common.scaled_level_sizes(quick)
  default_batch, default_length = PRESET_SHAPES.get(preset, (32, 64))
  batch = batch or default_batch
  length = length or default_length
  if matmul_size is None:
    matmul_size = 2048 if device.platform == "cpu" else 8192
  if quick:
    preset, batch, length, text_vocab_size, matmul_size = "tiny", 8, 16, 50, 256
  rng = np.random.default_rng(seed)
  layout = common.make_layout(level_sizes, text_vocab_size)
  config = decoder.decoder_preset(preset, layout.vocab_size, dtype=dtype, remat=remat)
  peak_before = matmul_peak(matmul_size, repeats, dtype)

  host_batch = sft_batch(rng, layout, batch, length)
  remat_after_oom = False
  try:
    timed, final_loss = time_train_steps(config, layout, host_batch, repeats=repeats, seed=seed)
  except Exception as error:  # XLA raises its own runtime error type for device OOM
    if config.remat or not is_out_of_memory(error):
      raise
    print(f"out of device memory without remat; retrying with remat: {error}", file=sys.stderr)
    remat_after_oom = True
  if remat_after_oom:  # retried outside the handler, so the failed try's buffers can be freed
    config = dataclasses.replace(config, remat=True)
    timed, final_loss = time_train_steps(config, layout, host_batch, repeats=repeats, seed=seed)
  peak_after = matmul_peak(matmul_size, repeats, dtype)
  peak = max(peak_before["flops"], peak_after["flops"])
  spec = spec_peak(device.platform, device.device_kind, dtype)
  spec_flops = 1e12 * spec["tflops"] if spec["tflops"] else None

  tokens = batch * length
  model_flops = decoder.flops_per_token(config, length, training=True) * tokens
  skipped = (
    6.0 * config.padded_vocab_size * config.embed_dim * batch * (length - layout.num_sid_levels)
  )
  executed_flops = model_flops - skipped
  step_s = timed["median_s"]

  def of_spec(flops: float) -> float | None:
    return flops / step_s / spec_flops if spec_flops else None

  common_row = {
    "preset": preset,
    "dtype": dtype,
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
      "fraction_of_spec": of_spec(model_flops),
    },
    {
      **common_row,
      "measure": "executed FLOPs (no prompt logits)",
      "gflops": executed_flops / step_s / 1e9,
      "fraction_of_peak": executed_flops / step_s / peak,
      "fraction_of_spec": of_spec(executed_flops),
    },
    {
      "measure": f"peak: {dtype} dot {matmul_size}^3, before / after",
      "dtype": dtype,
      "gflops": peak / 1e9,
      "fraction_of_peak": 1.0,
      "fraction_of_spec": peak / spec_flops if spec_flops else None,
      "peak_before_gflops": peak_before["flops"] / 1e9,
      "peak_after_gflops": peak_after["flops"] / 1e9,
    },
  ]
  for row in rows:  # no spec peak (CPU, unknown GPU): leave the cells blank
    if row["fraction_of_spec"] is None:
      del row["fraction_of_spec"]
  if spec_flops:
    rows.append(
      {
        "measure": f"spec peak: {spec['device']} dense {spec['precision']}",
        "dtype": dtype,
        "gflops": spec_flops / 1e9,
        "fraction_of_spec": 1.0,
      }
    )
  if device.platform == "gpu":
    gpu_mfu = of_spec(model_flops)  # None on a GPU missing from the table (see spec_peak_note)
  else:
    gpu_mfu = CPU_GPU_MFU
  summary = {
    "tokens_per_s": tokens / step_s,
    "mfu_model_flops": rows[0]["fraction_of_peak"],
    "fraction_executed_flops": rows[1]["fraction_of_peak"],
    "matmul_peak_gflops": peak / 1e9,
    "matmul_peak_dtype": dtype,
    "target_fraction": 0.5,
    "gpu_mfu": gpu_mfu,
    "gpu_mfu_executed": of_spec(executed_flops) if device.platform == "gpu" else None,
    "spec_peak_tflops": spec["tflops"],
    "spec_peak_precision": spec["precision"],
    "spec_peak_note": spec["note"],
    "device_kind": device.device_kind,
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
    "remat": config.remat,
    "remat_after_oom": remat_after_oom,
    "default_matmul_precision": jax.config.jax_default_matmul_precision,
  }
  notes = [
    "Steps run through Trainer.train_step (the jitted step the fit loop uses), after 2 warm-up "
    "steps; host batch fixed and already on device, so input time is not counted.",
    f"fraction_of_peak: over the {dtype} matmul measured in this process; fraction_of_spec: "
    f"over the device's spec dense peak ({spec['note']}).",
  ]
  if dtype == "bfloat16":
    notes.append(
      "bfloat16: compute dtype of the decoder (activations, matmul inputs); parameters, "
      "gradients and AdamW state stay float32; logits are float32."
    )
  if remat_after_oom:
    notes.append("The first try ran out of device memory; these steps use remat.")
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
    common.Flag("preset", "small"),
    common.Flag("batch", None, int, "default: by preset"),
    common.Flag("length", None, int, "default: by preset"),
    common.Flag("dtype", "float32", choices=("float32", "bfloat16")),
    common.Flag("remat", action="store_true", help="rematerialise each block"),
    common.Flag("matmul_size", None, int, "default: by device"),
  )
  return common.run_main(run_train_throughput, __doc__, argv, flags)


if __name__ == "__main__":
  main()
