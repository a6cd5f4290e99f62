"""Hugging Face Qwen2 / Qwen2.5 checkpoints -> the generator's Flax parameters.

A Hugging Face checkpoint folder holds config.json and the weights as one `model.safetensors`
or several shards listed by `model.safetensors.index.json`. `convert_checkpoint` reads it
tensor by tensor (one `safe_open` file at a time, one tensor in host memory at a time), turns
each into our layout and places it on the devices with the sharding of its logical axes, so the
host never holds the whole model, let alone twice.

Name map (HF `model.` prefix left out; i = layer):
  embed_tokens.weight [V, E]                  -> embedding [V, E]
  layers.i.input_layernorm.weight [E]         -> blocks_i/attention_norm/scale
  layers.i.self_attn.q_proj.weight [H*D, E]   -> blocks_i/attention/query [E, H, D]
  layers.i.self_attn.q_proj.bias [H*D]        -> blocks_i/attention/query_bias [H, D]
  layers.i.self_attn.{k,v}_proj.{weight,bias} -> blocks_i/attention/{key,value}[_bias] (K heads)
  layers.i.self_attn.o_proj.weight [E, H*D]   -> blocks_i/attention/out [H, D, E]
  layers.i.post_attention_layernorm.weight    -> blocks_i/mlp_norm/scale
  layers.i.mlp.{gate,up}_proj.weight [M, E]   -> blocks_i/mlp/{gate,up} [E, M]
  layers.i.mlp.down_proj.weight [E, M]        -> blocks_i/mlp/down [M, E]
  norm.weight                                 -> final_norm/scale
  lm_head.weight [V, E] (untied only)         -> lm_head [E, V]

RoPE needs no permutation: our `apply_rope` pairs feature d with d + D/2, which is Hugging
Face's `rotate_half` layout.

Vocabulary. Without a token layout the rows are copied as they are (the model then computes the
same logits as `transformers`; used to check the conversion). With one (`init_generator_from_hf`)
the rows are laid out as the generator's vocabulary, whose text range is the Qwen tokenizer:

  [0, NUM_SPECIAL)                          new rows (PAD, EOS, BOS, SEP, UNK)
  [text_offset, +text_vocab_size)           Qwen rows 0 .. text_vocab_size - 1, in order
  profile and SID ranges, vocab_multiple    new rows
  padding

Every new row is the mean of the copied text rows (for an untied lm_head, the mean of its own
copied rows), a start that gives new tokens an average logit instead of a random one. Qwen's
embedding rows beyond the tokenizer (151,936 rows for 151,665 tokens in Qwen2.5) are dropped.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from safetensors import safe_open

from gr_jax.models import decoder
from gr_jax.models.token_layout import TokenLayout
from gr_jax.train import checkpoints

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# config.json fields without a usable default.
REQUIRED_FIELDS = (
  "vocab_size",
  "hidden_size",
  "num_hidden_layers",
  "num_attention_heads",
  "intermediate_size",
)
# DecoderConfig fields a caller may set; the shape comes from config.json.
OVERRIDABLE_FIELDS = ("dtype", "remat", "max_len", "vocab_multiple", "init_std")


class UnsupportedQwenConfigError(ValueError):
  """config.json asks for something our decoder does not implement.

  Attributes:
    field: the config.json field.
    value: its value.
  """

  def __init__(self, field: str, value: Any, why: str):
    self.field = field
    self.value = value
    super().__init__(f"config.json: {field} = {value!r} is not supported: {why}")


class HfCheckpointError(ValueError):
  """The checkpoint folder is incomplete or inconsistent (files, tensor names, shapes)."""


# ---------------------------------------------------------------------------
# config.json
# ---------------------------------------------------------------------------


def read_hf_config(folder: str | os.PathLike) -> dict:
  """config.json of a checkpoint folder as a dict."""
  path = os.path.join(folder, CONFIG_FILE)
  if not os.path.isfile(path):
    raise HfCheckpointError(f"{folder}: no {CONFIG_FILE} (not a Hugging Face checkpoint folder)")
  with open(path) as f:
    return json.load(f)


def _rope_theta(hf: dict) -> float:
  """rope_theta from either config.json format, after rejecting RoPE scaling."""
  # transformers >= 5 writes `rope_parameters`; earlier versions `rope_theta` + `rope_scaling`.
  for field in ("rope_scaling", "rope_parameters"):
    params = hf.get(field)
    if params is None:
      continue
    if not isinstance(params, dict):
      raise UnsupportedQwenConfigError(field, params, "expected an object or null")
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
      raise UnsupportedQwenConfigError(
        field, params, f"RoPE scaling '{rope_type}' is not implemented (only plain RoPE)"
      )
    if "rope_theta" in params:
      return float(params["rope_theta"])
  return float(hf.get("rope_theta", 10_000.0))


def _require_fields(hf: dict) -> None:
  for field in REQUIRED_FIELDS:
    if field not in hf:
      raise HfCheckpointError(f"config.json: missing field {field}")


def decoder_config_from_hf(
  hf: dict, vocab_size: int | None = None, **overrides: Any
) -> decoder.DecoderConfig:
  """Our DecoderConfig for a Qwen2 config.json.

  Args:
    hf: the parsed config.json.
    vocab_size: vocabulary of the result (default: config.json's vocab_size).
    **overrides: fields of OVERRIDABLE_FIELDS (e.g. dtype='bfloat16'); max_len defaults to
      max_position_embeddings.

  Returns:
    The DecoderConfig.

  Raises:
    UnsupportedQwenConfigError: a field with a value we do not implement (named).
    ValueError: an override outside OVERRIDABLE_FIELDS.
  """
  unknown = sorted(set(overrides) - set(OVERRIDABLE_FIELDS))
  if unknown:
    raise ValueError(
      f"decoder_config_from_hf: {unknown} come from config.json and cannot be overridden "
      f"(allowed: {OVERRIDABLE_FIELDS})"
    )
  model_type = hf.get("model_type")
  if model_type != "qwen2":
    raise UnsupportedQwenConfigError("model_type", model_type, "only 'qwen2' (Qwen2, Qwen2.5)")
  if hf.get("hidden_act", "silu") != "silu":
    raise UnsupportedQwenConfigError("hidden_act", hf["hidden_act"], "the MLP is SwiGLU (silu)")
  if hf.get("use_sliding_window", False):
    raise UnsupportedQwenConfigError(
      "use_sliding_window", hf["use_sliding_window"], "attention is always full (causal)"
    )
  layer_types = hf.get("layer_types") or []
  if any(kind != "full_attention" for kind in layer_types):
    raise UnsupportedQwenConfigError(
      "layer_types", layer_types, "only 'full_attention' layers are implemented"
    )
  if hf.get("quantization_config") is not None:
    raise UnsupportedQwenConfigError(
      "quantization_config", hf["quantization_config"], "convert an unquantised checkpoint"
    )
  rope_theta = _rope_theta(hf)
  _require_fields(hf)
  heads = int(hf["num_attention_heads"])
  head_dim = hf.get("head_dim") or int(hf["hidden_size"]) // heads
  fields = dict(
    vocab_size=int(vocab_size if vocab_size is not None else hf["vocab_size"]),
    num_layers=int(hf["num_hidden_layers"]),
    embed_dim=int(hf["hidden_size"]),
    num_heads=heads,
    num_kv_heads=int(hf.get("num_key_value_heads") or heads),
    head_dim=int(head_dim),
    mlp_dim=int(hf["intermediate_size"]),
    max_len=int(hf.get("max_position_embeddings", 32_768)),
    rope_theta=rope_theta,
    # Qwen2Config's default is untied; the 0.5B / 1.5B / 3B checkpoints set it to true.
    tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    qkv_bias=True,
    norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
  )
  fields.update(overrides)
  return decoder.DecoderConfig(**fields)


# ---------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Target:
  """Where one HF tensor goes: our param path, the HF shape, and the layout change."""

  path: tuple[str, ...]
  hf_shape: tuple[int, ...]
  convert: Callable[[np.ndarray], np.ndarray]


def _tensor_plan(config: decoder.DecoderConfig, hf_vocab: int) -> dict[str, _Target]:
  """HF tensor name -> _Target, for every tensor the conversion needs."""
  c = config
  e, h, k, d, m = c.embed_dim, c.num_heads, c.num_kv_heads, c.head_dim, c.mlp_dim
  plan = {
    "model.embed_tokens.weight": _Target(("embedding",), (hf_vocab, e), lambda x: x),
    "model.norm.weight": _Target(("final_norm", "scale"), (e,), lambda x: x),
  }
  if not c.tie_embeddings:
    plan["lm_head.weight"] = _Target(("lm_head",), (hf_vocab, e), lambda x: x)
  for i in range(c.num_layers):
    hf, ours = f"model.layers.{i}.", f"blocks_{i}"
    attn = hf + "self_attn."
    plan.update(
      {
        hf + "input_layernorm.weight": _Target((ours, "attention_norm", "scale"), (e,), _same),
        hf + "post_attention_layernorm.weight": _Target((ours, "mlp_norm", "scale"), (e,), _same),
        attn + "q_proj.weight": _Target(
          (ours, "attention", "query"), (h * d, e), lambda x: x.T.reshape(e, h, d)
        ),
        attn + "k_proj.weight": _Target(
          (ours, "attention", "key"), (k * d, e), lambda x: x.T.reshape(e, k, d)
        ),
        attn + "v_proj.weight": _Target(
          (ours, "attention", "value"), (k * d, e), lambda x: x.T.reshape(e, k, d)
        ),
        attn + "q_proj.bias": _Target(
          (ours, "attention", "query_bias"), (h * d,), lambda x: x.reshape(h, d)
        ),
        attn + "k_proj.bias": _Target(
          (ours, "attention", "key_bias"), (k * d,), lambda x: x.reshape(k, d)
        ),
        attn + "v_proj.bias": _Target(
          (ours, "attention", "value_bias"), (k * d,), lambda x: x.reshape(k, d)
        ),
        attn + "o_proj.weight": _Target(
          (ours, "attention", "out"), (e, h * d), lambda x: x.T.reshape(h, d, e)
        ),
        hf + "mlp.gate_proj.weight": _Target((ours, "mlp", "gate"), (m, e), _transpose),
        hf + "mlp.up_proj.weight": _Target((ours, "mlp", "up"), (m, e), _transpose),
        hf + "mlp.down_proj.weight": _Target((ours, "mlp", "down"), (e, m), _transpose),
      }
    )
  return plan


def _same(x: np.ndarray) -> np.ndarray:
  return x


def _transpose(x: np.ndarray) -> np.ndarray:
  return x.T


# Tensors a Qwen2 checkpoint may hold that the conversion does not need.
def _ignorable(name: str, config: decoder.DecoderConfig) -> bool:
  # Tied checkpoints sometimes also store the (identical) lm_head; old exports the RoPE buffer.
  return (name == "lm_head.weight" and config.tie_embeddings) or name.endswith(
    "rotary_emb.inv_freq"
  )


def checkpoint_files(folder: str | os.PathLike) -> dict[str, str]:
  """HF tensor name -> path of the safetensors file holding it (sharded or single file)."""
  index_path = os.path.join(folder, INDEX_FILE)
  if os.path.isfile(index_path):
    with open(index_path) as f:
      weight_map = json.load(f).get("weight_map")
    if not isinstance(weight_map, dict):
      raise HfCheckpointError(f"{index_path}: no 'weight_map' object")
    files = {name: os.path.join(folder, file) for name, file in weight_map.items()}
    for path in sorted(set(files.values())):
      if not os.path.isfile(path):
        raise HfCheckpointError(f"{index_path} lists {os.path.basename(path)}, which is missing")
    return files
  single = os.path.join(folder, SINGLE_FILE)
  if not os.path.isfile(single):
    raise HfCheckpointError(f"{folder}: neither {INDEX_FILE} nor {SINGLE_FILE}")
  with safe_open(single, framework="np") as f:
    names = f.keys()  # a safetensors handle is not iterable
  return {name: single for name in names}


def _read_tensor(handle, name: str) -> np.ndarray:
  """One tensor from an open safetensors file into host memory (bfloat16 via ml_dtypes)."""
  return handle.get_tensor(name)


def _iter_tensors(files: dict[str, str], names: list[str]) -> Iterator[tuple[str, np.ndarray]]:
  """(name, host array) for `names`, one safetensors file open and one tensor read at a time."""
  by_file: dict[str, list[str]] = {}
  for name in names:
    by_file.setdefault(files[name], []).append(name)
  for path in sorted(by_file):
    with safe_open(path, framework="np") as handle:
      for name in by_file[path]:
        yield name, _read_tensor(handle, name)


def _vocab_rows(
  rows: np.ndarray, layout: TokenLayout | None, padded_vocab: int, hf_vocab: int
) -> np.ndarray:
  """[hf V, E] HF rows -> [padded V, E] rows of our vocabulary (see the module docstring)."""
  text_offset = 0 if layout is None else layout.text_offset
  text_size = hf_vocab if layout is None else layout.text_vocab_size
  copied = rows[:text_size]  # [text V, E]
  mean = copied.astype(np.float64).mean(axis=0).astype(np.float32)  # [E]
  out = np.empty((padded_vocab, rows.shape[1]), np.float32)  # [padded V, E]
  out[:] = mean
  out[text_offset : text_offset + text_size] = copied
  return out


def _place(value: np.ndarray, sharding: jax.sharding.Sharding | None) -> jax.Array:
  """Host array -> device array with `sharding` (default device when None)."""
  if sharding is None:
    return jax.device_put(value)
  # Each device takes its slice; works whether or not this process holds every device.
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def convert_checkpoint(
  folder: str | os.PathLike,
  *,
  layout: TokenLayout | None = None,
  mesh: jax.sharding.Mesh | None = None,
  rules=None,
  **overrides: Any,
) -> tuple[decoder.DecoderConfig, dict]:
  """Reads a Qwen2 / Qwen2.5 checkpoint folder into our decoder parameters.

  Args:
    folder: a Hugging Face checkpoint folder (config.json + *.safetensors).
    layout: the generator's token layout; None keeps Qwen's vocabulary as it is (see the
      module docstring).
    mesh: devices to place the parameters on, sharded by their logical axes under `rules`;
      None puts them on the default device.
    rules: logical-axis rules ((logical, mesh axes) pairs); required with `mesh`.
    **overrides: DecoderConfig fields of OVERRIDABLE_FIELDS.

  Returns:
    (DecoderConfig, params): float32 parameters with the tree of `decoder.init_params`.

  Raises:
    UnsupportedQwenConfigError: config.json asks for something we do not implement.
    HfCheckpointError: missing files or tensors, unexpected tensors, wrong shapes, or a
      layout whose text range does not fit the embedding rows.
  """
  folder = os.fspath(folder)
  hf = read_hf_config(folder)
  _require_fields(hf)
  hf_vocab = int(hf["vocab_size"])
  if layout is not None and layout.text_vocab_size > hf_vocab:
    raise HfCheckpointError(
      f"{folder}: the layout's text vocabulary has {layout.text_vocab_size} tokens but "
      f"config.json vocab_size (embedding rows) is {hf_vocab}: is tokenizer.json from another "
      "model?"
    )
  config = decoder_config_from_hf(
    hf, vocab_size=None if layout is None else layout.vocab_size, **overrides
  )
  plan = _tensor_plan(config, hf_vocab)
  files = checkpoint_files(folder)
  missing = sorted(set(plan) - set(files))
  if missing:
    raise HfCheckpointError(f"{folder}: tensors missing from the checkpoint: {missing[:5]}")
  unexpected = sorted(n for n in files if n not in plan and not _ignorable(n, config))
  if unexpected:
    raise HfCheckpointError(
      f"{folder}: tensors a Qwen2 model of this config.json does not have: {unexpected[:5]}"
    )
  shardings = None if mesh is None else decoder.param_shardings(config, mesh, rules)

  params: dict = {}
  for name, value in _iter_tensors(files, list(plan)):
    target = plan[name]
    if tuple(value.shape) != target.hf_shape:
      raise HfCheckpointError(
        f"{folder}: {name} has shape {tuple(value.shape)}, config.json implies {target.hf_shape}"
      )
    if target.path[0] in ("embedding", "lm_head"):
      host = _vocab_rows(value, layout, config.padded_vocab_size, hf_vocab)  # [V, E]
      if target.path[0] == "lm_head":
        host = host.T  # [E, V]
    else:
      host = target.convert(value)
    del value  # the HF tensor is gone before the next one is read
    host = np.ascontiguousarray(host, dtype=np.float32)
    sharding = shardings
    for key in target.path:
      sharding = None if sharding is None else sharding[key]
    node = params
    for key in target.path[:-1]:
      node = node.setdefault(key, {})
    node[target.path[-1]] = _place(host, sharding)
    del host
  return config, params


def init_generator_from_hf(
  folder: str | os.PathLike,
  layout: TokenLayout,
  *,
  mesh: jax.sharding.Mesh | None = None,
  rules=None,
  **overrides: Any,
) -> tuple[decoder.DecoderConfig, dict]:
  """The generator's (DecoderConfig, params) started from a Qwen2 checkpoint.

  The layout's text range must be the checkpoint's tokenizer (hf_tokenizer_vocab); profile
  and SID rows are new (see the module docstring).
  """
  return convert_checkpoint(folder, layout=layout, mesh=mesh, rules=rules, **overrides)


def save_init_checkpoint(params: dict, directory: str) -> str:
  """Writes `params` as a checkpoint `TrainerConfig.init_checkpoint` can start from.

  Returns:
    `directory`.
  """
  # Imported here: orbax is only needed by this writer, not by the conversion itself.
  checkpointer = checkpoints.Checkpointer(directory, max_to_keep=1, async_save=False)
  checkpointer.save(0, {"params": params}, force=True)
  checkpointer.close()
  return directory


def hf_init_checkpoint(
  directory: str,
  folder: str,
  layout: TokenLayout,
  model_config: decoder.DecoderConfig,
  *,
  mesh,
  rules,
) -> str:
  """Converts `folder` into the init checkpoint `directory` once; returns the directory.

  The first SFT stage starts from it (TrainerConfig.init_checkpoint); a rerun finds it
  converted and skips the conversion.
  """
  probe = checkpoints.Checkpointer(directory)
  converted = probe.latest_step() is not None
  probe.close()
  if not converted:
    overrides = {field: getattr(model_config, field) for field in OVERRIDABLE_FIELDS}
    _, params = init_generator_from_hf(folder, layout, mesh=mesh, rules=rules, **overrides)
    save_init_checkpoint(params, directory)
  return directory


def check_model_choice(model: str, init_from_hf: str | None) -> None:
  """Raises ValueError for model 'hf' without a checkpoint folder (before any data loads)."""
  if model == "hf" and not init_from_hf:
    raise ValueError("train_sft.model = 'hf' takes the model from a checkpoint: bind init_from_hf")


def generator_model_config(
  model: str, vocab_size: int, overrides: dict, init_from_hf: str | None = None
) -> decoder.DecoderConfig:
  """The generator's config: decoder preset `model`, or (model 'hf' or a checkpoint
  given) the shape of `init_from_hf`'s config.json.

  Raises:
    ValueError: model 'hf' without a checkpoint folder.
  """
  check_model_choice(model, init_from_hf)
  if init_from_hf:
    return decoder_config_from_hf(read_hf_config(init_from_hf), vocab_size, **overrides)
  return decoder.decoder_preset(model, vocab_size=vocab_size, **overrides)
