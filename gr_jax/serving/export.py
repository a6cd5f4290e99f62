"""The decode as serialized StableHLO (`jax.export`), loadable without gin or the model code.

`export_decode` writes one directory:

    export.json              batch size, prompt length, beam sizes, layout, task, version
    decode_k<beam>.jaxexport jax.export of prefill + constrained beam search, one per beam
                             size, inputs (params, trie leaves, prompts [B, T] int32,
                             allowed_first [B, C_0] bool), outputs (sids, scores, valid)
    params.msgpack           generator parameters (flax.serialization)
    trie.npz                 the trie's arrays, in the exported program's input order

`ExportedRetriever` loads it and answers `decode` like `Retriever` (on the default device,
no mesh); `load_exported_service` puts it behind the request API with the catalog, users,
text vocabulary and SID tables of a work directory, whose SIDs must be the exported trie's.
"""

from __future__ import annotations

import json
import os

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from gr_jax import workdir as workdir_lib
from gr_jax.models.token_layout import PAD_ID, TokenLayout
from gr_jax.serving import retriever as retriever_lib
from gr_jax.serving import service as service_lib

META_FILE = "export.json"
PARAMS_FILE = "params.msgpack"
TRIE_FILE = "trie.npz"


def _program_file(beam_size: int) -> str:
  return f"decode_k{beam_size}.jaxexport"


def export_decode(
  retriever: retriever_lib.Retriever,
  out_dir: str,
  *,
  prompt_len: int,
  beam_sizes,
  task: str,
  tokenizer: str,
  version: str = "",
) -> str:
  """Writes the exported decode of `retriever` (see the module docstring); returns out_dir."""
  os.makedirs(out_dir, exist_ok=True)
  params = jax.device_get(retriever.params)
  trie_leaves, trie_def = jax.tree.flatten(jax.device_get(retriever.trie))
  layout, config, batch = retriever.layout, retriever.model_config, retriever.batch_size
  spec = lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype)
  args = (
    jax.tree.map(spec, params),
    [spec(leaf) for leaf in trie_leaves],
    jax.ShapeDtypeStruct((batch, prompt_len), jnp.int32),
    jax.ShapeDtypeStruct((batch, layout.sid_level_sizes[0]), jnp.bool_),
  )
  beam_sizes = sorted({int(b) for b in beam_sizes})
  for beam in beam_sizes:

    def decode(params, leaves, prompts, allowed_first, beam=beam):
      trie = jax.tree.unflatten(trie_def, leaves)
      return retriever_lib.decode_prompts(
        params, trie, prompts, allowed_first, config, layout, beam
      )

    exported = jax.export.export(jax.jit(decode))(*args)
    with open(os.path.join(out_dir, _program_file(beam)), "wb") as f:
      f.write(exported.serialize())
  with open(os.path.join(out_dir, PARAMS_FILE), "wb") as f:
    f.write(flax.serialization.msgpack_serialize(jax.tree.map(np.asarray, params)))
  np.savez(
    os.path.join(out_dir, TRIE_FILE),
    **{f"leaf_{i:03d}": np.asarray(leaf) for i, leaf in enumerate(trie_leaves)},
  )
  meta = {
    "batch_size": batch,
    "prompt_len": int(prompt_len),
    "beam_sizes": beam_sizes,
    "layout": json.loads(layout.to_json()),
    "task": task,
    "tokenizer": tokenizer,
    "num_sids": int(retriever.sid_tables.num_sids),
    "version": version,
  }
  with open(os.path.join(out_dir, META_FILE), "w") as f:
    json.dump(meta, f, indent=2)
  return out_dir


class ExportedRetriever:
  """`Retriever.decode` from an export directory (no gin, no model code).

  Args:
    export_dir: what `export_decode` wrote.
    sid_tables: the SID -> items table (its SIDs must be the exported trie's).
    efficiency_score: [N] item scores.
  """

  def __init__(self, export_dir: str, sid_tables, efficiency_score):
    with open(os.path.join(export_dir, META_FILE)) as f:
      self.meta = json.load(f)
    if int(sid_tables.num_sids) != self.meta["num_sids"]:
      raise ValueError(
        f"{export_dir}: exported with {self.meta['num_sids']} SIDs, the work directory has "
        f"{sid_tables.num_sids}: export again after assigning items"
      )
    self.layout = TokenLayout(**self.meta["layout"])
    self.batch_size = int(self.meta["batch_size"])
    self.prompt_len = int(self.meta["prompt_len"])
    self.sid_tables = sid_tables
    self.efficiency_score = np.asarray(efficiency_score, np.float32)
    with open(os.path.join(export_dir, PARAMS_FILE), "rb") as f:
      self.params = jax.device_put(flax.serialization.msgpack_restore(f.read()))
    with np.load(os.path.join(export_dir, TRIE_FILE)) as data:
      self.trie_leaves = [jax.device_put(data[name]) for name in sorted(data.files)]
    self.programs = {}
    for beam in self.meta["beam_sizes"]:
      with open(os.path.join(export_dir, _program_file(beam)), "rb") as f:
        self.programs[int(beam)] = jax.export.deserialize(bytearray(f.read()))

  def decode(self, prompts: np.ndarray, beam_size: int, allowed_first: np.ndarray | None = None):
    """[R, T] prompts -> (sids [R, K, L], scores [R, K], valid [R, K]) on host."""
    if beam_size not in self.programs:
      raise ValueError(f"beam_size {beam_size} was not exported ({sorted(self.programs)})")
    prompts = np.asarray(prompts, np.int32)
    if prompts.shape[1] != self.prompt_len:
      raise ValueError(f"prompts: length {prompts.shape[1]}, exported for {self.prompt_len}")
    first_size = self.layout.sid_level_sizes[0]
    if allowed_first is None:
      allowed_first = np.ones((len(prompts), first_size), bool)
    outputs = []
    for start in range(0, len(prompts), self.batch_size):
      chunk = prompts[start : start + self.batch_size]
      padded = np.full((self.batch_size, self.prompt_len), PAD_ID, np.int32)
      padded[: len(chunk)] = chunk
      mask = np.ones((self.batch_size, first_size), bool)
      mask[: len(chunk)] = allowed_first[start : start + self.batch_size]
      result = self.programs[beam_size].call(self.params, self.trie_leaves, padded, mask)
      outputs.append([np.asarray(x)[: len(chunk)] for x in jax.device_get(result)])
    return tuple(np.concatenate(parts) for parts in zip(*outputs))


def load_exported_service(workdir: str, export_dir: str) -> service_lib.RetrievalService:
  """The request API over an exported decode and a work directory's catalog and SIDs."""
  with open(os.path.join(export_dir, META_FILE)) as f:
    meta = json.load(f)
  catalog, _ = workdir_lib.load_data(workdir)
  sid_tables = workdir_lib.load_sid(workdir, meta["tokenizer"], catalog.num_items).tables
  retriever = ExportedRetriever(export_dir, sid_tables, catalog.efficiency_score)
  return service_lib.build_service(
    workdir,
    retriever,
    task=meta["task"],
    prompt_len=meta["prompt_len"],
    beam_sizes=meta["beam_sizes"],
    version=f"exported:{meta['version']}",
  )


def export_stage(
  workdir: str, tokenizer: str, stage: str, out_dir: str, *, beam_sizes, batch_size: int
) -> str:
  """Exports SFT stage `stage` of `tokenizer` in a work directory (one call)."""
  service = service_lib.load_service(
    workdir, tokenizer, stage, beam_sizes=beam_sizes, batch_size=batch_size
  )
  return export_decode(
    service.retriever,
    out_dir,
    prompt_len=service.prompt_builder.prompt_len,
    beam_sizes=service.beam_sizes,
    task=stage,
    tokenizer=tokenizer,
    version=service.version,
  )
