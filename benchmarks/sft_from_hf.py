"""SFT from a converted Hugging Face Qwen2.5 checkpoint: conversion time, memory and train steps.

Writes random weights of the real Qwen2.5-0.5B shape in the Hugging Face layout (config.json in
Qwen2.5's own format, bfloat16 safetensors in several shards with model.safetensors.index.json,
and a tokenizer.json with Qwen2.5's 151,665 ids) into a temporary folder with numpy and
safetensors only, then times what `train_sft.init_from_hf` does:

  convert     hf_qwen.init_generator_from_hf onto the mesh (tensor by tensor, sharded), with the
              paper's SID levels appended to the vocabulary;
  save        the converted weights as the trainer's init checkpoint;
  restore     Trainer.init_state from that checkpoint (TrainerConfig.init_checkpoint);
  train       SftTask train steps (jitted forward + backward + AdamW) on random batches.

Random weights of the real shape time the same work as the downloaded model would.

  python -m benchmarks.sft_from_hf                         # GPU: Qwen2.5-0.5B shape, bf16
  python -m benchmarks.sft_from_hf --quick                 # CPU smoke run, tiny shape
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import gin
import jax
import ml_dtypes
import numpy as np
import tokenizers
from safetensors.numpy import save_file

from benchmarks import common
from benchmarks.train_throughput import sft_batch
from gr_jax.data.text import hf_vocab as hf_tokenizer_vocab
from gr_jax.models import decoder, hf_qwen, sft_task
from gr_jax.models.token_layout import TokenLayout
from gr_jax.train import partitioning
from gr_jax.train import trainer as trainer_lib

NAME = "sft_from_hf"
COLUMNS = ("phase", "seconds", "peak_rss_mib", "detail")

# Qwen2.5-0.5B's config.json (as published, transformers 4.x format).
QWEN25_05B = {
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151643,
  "hidden_act": "silu",
  "hidden_size": 896,
  "initializer_range": 0.02,
  "intermediate_size": 4864,
  "max_position_embeddings": 32768,
  "max_window_layers": 24,
  "model_type": "qwen2",
  "num_attention_heads": 14,
  "num_hidden_layers": 24,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_scaling": None,
  "rope_theta": 1000000.0,
  "sliding_window": 32768,
  "tie_word_embeddings": True,
  "torch_dtype": "bfloat16",
  "use_cache": True,
  "use_sliding_window": False,
  "vocab_size": 151936,
}
QWEN25_TOKENIZER_SIZE = 151_665  # 151,643 BPE ids + 22 added special tokens
QWEN25_SPECIAL_TOKENS = 22
QUICK = dict(
  hidden_size=64,
  intermediate_size=128,
  num_hidden_layers=2,
  num_attention_heads=4,
  num_key_value_heads=2,
  vocab_size=1024,
)
QUICK_TOKENIZER_SIZE = 1000


def hf_tensor_shapes(hf: dict) -> dict[str, tuple[int, ...]]:
  """Name -> shape of every tensor of a Qwen2ForCausalLM with this config.json."""
  e, m, v = hf["hidden_size"], hf["intermediate_size"], hf["vocab_size"]
  heads, kv = hf["num_attention_heads"], hf["num_key_value_heads"]
  d = e // heads
  shapes = {"model.embed_tokens.weight": (v, e)}
  for i in range(hf["num_hidden_layers"]):
    p = f"model.layers.{i}."
    shapes.update(
      {
        p + "input_layernorm.weight": (e,),
        p + "self_attn.q_proj.weight": (heads * d, e),
        p + "self_attn.q_proj.bias": (heads * d,),
        p + "self_attn.k_proj.weight": (kv * d, e),
        p + "self_attn.k_proj.bias": (kv * d,),
        p + "self_attn.v_proj.weight": (kv * d, e),
        p + "self_attn.v_proj.bias": (kv * d,),
        p + "self_attn.o_proj.weight": (e, heads * d),
        p + "post_attention_layernorm.weight": (e,),
        p + "mlp.gate_proj.weight": (m, e),
        p + "mlp.up_proj.weight": (m, e),
        p + "mlp.down_proj.weight": (e, m),
      }
    )
  shapes["model.norm.weight"] = (e,)
  if not hf.get("tie_word_embeddings", False):
    shapes["lm_head.weight"] = (v, e)
  return shapes


def write_random_checkpoint(
  folder: str, hf: dict, seed: int = 0, max_shard_bytes: int = 400 << 20
) -> int:
  """Writes config.json and random bfloat16 safetensors shards (+ index) of this config.

  Shards are written as they fill, so at most one shard is in host memory.

  Returns:
    Bytes of tensor data written.
  """
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, hf_qwen.CONFIG_FILE), "w") as f:
    json.dump(hf, f, indent=2)
  rng = np.random.default_rng(seed)
  shapes = hf_tensor_shapes(hf)
  shards: list[list[str]] = [[]]
  sizes = [0]
  for name, shape in shapes.items():
    size = 2 * int(np.prod(shape))
    if sizes[-1] and sizes[-1] + size > max_shard_bytes:
      shards.append([])
      sizes.append(0)
    shards[-1].append(name)
    sizes[-1] += size
  weight_map = {}
  for index, names in enumerate(shards):
    file = f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
    tensors = {}
    for name in names:
      if name.endswith("norm.weight"):
        value = np.ones(shapes[name], np.float32)
      else:
        value = 0.02 * rng.standard_normal(shapes[name], dtype=np.float32)
      tensors[name] = value.astype(ml_dtypes.bfloat16)
      weight_map[name] = file
    save_file(tensors, os.path.join(folder, file))
    del tensors
  with open(os.path.join(folder, hf_qwen.INDEX_FILE), "w") as f:
    json.dump({"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}, f)
  return sum(sizes)


def write_synthetic_tokenizer(path: str, size: int, num_special: int) -> None:
  """A byte-level BPE tokenizer.json with exactly `size` ids, the last `num_special` special.

  The ids past the byte alphabet are placeholder pieces: only the id count matters here.
  """
  alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
  vocab = {piece: i for i, piece in enumerate(alphabet)}
  for i in range(len(vocab), size - num_special):
    vocab[f"<piece_{i}>"] = i
  tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = tokenizers.decoders.ByteLevel()
  tokenizer.add_special_tokens([f"<|special_{i}|>" for i in range(num_special)])
  tokenizer.save(path)


@gin.configurable(denylist=["out_dir", "load_before"])
def run_sft_from_hf(
  *,
  quick: bool = False,
  out_dir: str = common.RESULTS_DIR,
  repeats: int = 5,
  batch: int = 8,
  length: int = 512,
  dtype: str = "bfloat16",
  seed: int = 0,
  load_before=None,
) -> dict:
  """Writes, converts, saves, restores and trains; writes the results.

  Args:
    quick: tiny shape and batch (smoke test).
    out_dir: where <name>.json / .md go.
    repeats: timed train steps (median reported).
    batch: sequences per train step.
    length: tokens per sequence (prompt + L SID tokens).
    dtype: the decoder's compute dtype.
    seed: weights / data seed.
    load_before: load average at start (default: read now).

  Returns:
    The written JSON record.
  """
  load_before = load_before or common.load_average()
  hf = dict(QWEN25_05B, **(QUICK if quick else {}))
  tokenizer_size = QUICK_TOKENIZER_SIZE if quick else QWEN25_TOKENIZER_SIZE
  if quick:
    batch, length = 8, 24
  rows = []

  def phase(name: str, start: float, detail: str) -> float:
    seconds = time.perf_counter() - start
    rows.append(
      {"phase": name, "seconds": seconds, "peak_rss_mib": common.peak_rss_mib(), "detail": detail}
    )
    print(f"{name}: {seconds:.1f} s; {detail}", flush=True)
    return seconds

  with tempfile.TemporaryDirectory() as scratch:
    folder = os.path.join(scratch, "qwen")
    start = time.perf_counter()
    # Several shards also at the quick size, so the index path is exercised.
    written = write_random_checkpoint(folder, hf, seed, (64 << 10) if quick else (400 << 20))
    write_synthetic_tokenizer(
      os.path.join(folder, "tokenizer.json"), tokenizer_size, QWEN25_SPECIAL_TOKENS
    )
    shards = len(set(hf_qwen.checkpoint_files(folder).values()))
    phase("write random HF checkpoint", start, f"{written / 2**20:.0f} MiB bf16 in {shards} shards")

    vocab = hf_tokenizer_vocab.HfTokenizerVocab.load(folder)
    layout = TokenLayout(
      text_vocab_size=vocab.vocab_size, sid_level_sizes=common.scaled_level_sizes(quick)
    )
    mesh, rules = partitioning.make_mesh(), partitioning.logical_rules()
    rss_before = common.peak_rss_mib()
    start = time.perf_counter()
    config, params = hf_qwen.init_generator_from_hf(
      folder, layout, mesh=mesh, rules=rules, dtype=dtype, max_len=max(length, 128)
    )
    jax.block_until_ready(params)
    num_params = decoder.count_params(config)
    convert_s = phase("convert", start, f"{num_params:,} parameters, vocab {layout.vocab_size:,}")
    convert_rss_growth = common.peak_rss_mib() - rss_before

    init_dir = os.path.join(scratch, "hf_init")
    start = time.perf_counter()
    hf_qwen.save_init_checkpoint(params, init_dir)
    phase("save init checkpoint", start, "orbax, float32")
    del params

    task = sft_task.SftTask(config, layout.num_sid_levels)
    host_batch = sft_batch(np.random.default_rng(seed), layout, batch, length)
    trainer = trainer_lib.Trainer(
      task,
      os.path.join(scratch, "run"),
      config=trainer_lib.TrainerConfig(
        num_steps=repeats + 3, progress_bar=False, init_checkpoint=init_dir
      ),
      mesh=mesh,
      rules=rules,
    )
    try:
      start = time.perf_counter()
      state, _ = trainer.init_state(host_batch)
      jax.block_until_ready(state.params)
      phase("restore into the trainer", start, "TrainerConfig.init_checkpoint")
      device_batch = trainer.put_batch(host_batch)
      rng = jax.random.key(seed)
      holder = {"state": state}
      del state

      def step():
        holder["state"], metrics = trainer.train_step(holder["state"], device_batch, rng)
        return metrics

      start = time.perf_counter()
      first_loss = float(step()["loss"])
      phase("first train step", start, f"compile + step, loss {first_loss:.3f}")
      timed = common.time_call(step, warmup=1, repeats=repeats)
      last_loss = float(step()["loss"])
      holder.clear()
    finally:
      trainer.close()
  step_s = timed["median_s"]
  rows.append(
    {
      "phase": "train step (median)",
      "seconds": step_s,
      "peak_rss_mib": common.peak_rss_mib(),
      "detail": f"{batch} x {length} tokens, {dtype}, {batch * length / step_s:.0f} tokens/s",
      "step_times_s": timed["times_s"],
    }
  )
  summary = {
    "convert_s": convert_s,
    "convert_rss_growth_mib": convert_rss_growth,
    "checkpoint_mib": written / 2**20,
    "step_ms": 1e3 * step_s,
    "tokens_per_s": batch * length / step_s,
    "first_loss": first_loss,
    "loss_after_steps": last_loss,
    "params": num_params,
    "device_kind": jax.devices()[0].device_kind,
  }
  settings = {
    "quick": quick,
    "hf_config": hf,
    "tokenizer_size": tokenizer_size,
    "sid_level_sizes": layout.sid_level_sizes,
    "batch": batch,
    "length": length,
    "dtype": dtype,
    "repeats": repeats,
    "mesh": dict(mesh.shape),
  }
  notes = [
    "Random weights of the checkpoint's real shape: conversion, checkpoint and step times do "
    "not depend on the values.",
    "convert_rss_growth_mib: growth of the process's peak resident memory during conversion; "
    "with an accelerator it stays near one tensor's size (parameters go to device memory "
    "tensor by tensor), on a CPU the device memory is host memory.",
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
    common.Flag("batch", 8),
    common.Flag("length", 512),
    common.Flag("dtype", "bfloat16", choices=("float32", "bfloat16")),
  )
  return common.run_main(run_sft_from_hf, __doc__, argv, flags)


if __name__ == "__main__":
  main()
