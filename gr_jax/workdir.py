"""The work directory of a run (DESIGN.md): where every stage's artefacts live, and
how a stage loads what the stages before it wrote.

    WORKDIR/data/                catalog.npz, logs.npz (+ world latents, amazon.json or tfds.json),
                                 catalog_additions.npz (items added later, data/additions.py)
    WORKDIR/vocab/text.model     SentencePiece text vocabulary, shared by every generator
    WORKDIR/sid/<tokenizer>/     item_sid.npy, sid_items.npz, diagnostics.json, tokenizer
    WORKDIR/sft/<tok>/<stage>/   generator.json + orbax checkpoints of one SFT stage
    WORKDIR/rl/<tok>/<name>/     RL checkpoints and metrics.json
    WORKDIR/eval/                metrics.json, results.md, plots, table4.md

Each stage folder (data/, sid/<tok>/, sid_train/<tok>/, sft/<tok>/<stage>/, rl/...)
also holds stage.json, the record of the settings and inputs that made it
(gr_jax/fingerprint.py).
"""

from __future__ import annotations

import os
import shutil
import zipfile

import gin
import numpy as np

from gr_jax import errors, fingerprint, io_utils
from gr_jax.data import additions, schema
from gr_jax.data.text import hf_vocab
from gr_jax.data.text import vocab as text_vocab
from gr_jax.data.world import simulator
from gr_jax.models import generator as generator_lib
from gr_jax.sid import tables
from gr_jax.train import checkpoints

# Written last by each data source: a data directory holding one is complete.
AMAZON_MANIFEST = "amazon.json"
TFDS_MANIFEST = "tfds.json"
SEQ_STAGE = "seq"  # the SFT stage folder of sequence training (jobs/seq_sft.py)


def data_dir(workdir: str) -> str:
  """catalog.npz, logs.npz (+ the world's latents) of the run's dataset."""
  return os.path.join(workdir, "data")


def vocab_path(workdir: str) -> str:
  """The SentencePiece text vocabulary shared by every tokenizer's generator."""
  return os.path.join(workdir, "vocab", "text.model")


def hf_tokenizer_path(workdir: str) -> str:
  """The pretrained model's tokenizer.json, when SFT starts from a Hugging Face checkpoint."""
  return os.path.join(workdir, "vocab", "tokenizer.json")


def sid_dir(workdir: str, tokenizer: str) -> str:
  """item_sid.npy, sid_items.npz, diagnostics.json, tokenizer variables."""
  return os.path.join(workdir, "sid", tokenizer)


def sid_train_dir(workdir: str, tokenizer: str) -> str:
  return os.path.join(workdir, "sid_train", tokenizer)


def sft_dir(workdir: str, tokenizer: str, stage: str) -> str:
  return os.path.join(workdir, "sft", tokenizer, stage)


def rl_dir(workdir: str, tokenizer: str, name: str) -> str:
  return os.path.join(workdir, "rl", tokenizer, name)


def eval_dir(workdir: str) -> str:
  return os.path.join(workdir, "eval")


def has_data(workdir: str) -> bool:
  """Whether a data source finished writing the run's dataset."""
  out = data_dir(workdir)
  manifests = (simulator.MANIFEST, AMAZON_MANIFEST, TFDS_MANIFEST)
  return any(os.path.exists(os.path.join(out, m)) for m in manifests)


def load_data(workdir: str) -> tuple[schema.Catalog, schema.SearchLogs]:
  """The run's catalog (the data job's items, then any added by item assignment) and logs.

  Raises:
    FileNotFoundError: no dataset in this work directory.
    errors.ArtefactError: a damaged file, or added items of another dataset.
  """
  directory = data_dir(workdir)
  catalog_path = os.path.join(directory, "catalog.npz")
  if not os.path.exists(catalog_path):
    raise FileNotFoundError(
      f"{catalog_path}: no dataset in this work directory; run the data job first "
      "(gin_configs/runs/data.gin)"
    )
  catalog = _read_artefact(schema.load_catalog, catalog_path)
  logs = _read_artefact(schema.load_logs, os.path.join(directory, "logs.npz"))
  added = catalog_additions(workdir)
  if added is not None:
    catalog = additions.concatenate(catalog, added.rows)
  if catalog.features is not None:
    catalog.features = np.asarray(catalog.features, np.float32)
  return catalog, logs


def catalog_additions(workdir: str) -> additions.Additions | None:
  """The items added to the run's catalog after the data job (None when there are none)."""
  return additions.load(data_dir(workdir), data_fingerprint(workdir))


def new_items_slot(workdir: str, tokenizer: str, new_items: str, held: int) -> tuple[int, bool]:
  """(first item id of the items in `new_items`, whether `tokenizer` already holds them).

  Items of a file added before keep their ids; others come after the whole catalog.
  `held` is the number of items the tokenizer's SID table covers.

  Raises:
    errors.UserError: the tokenizer lacks earlier additions, which must be assigned first.
  """
  catalog_items = load_data(workdir)[0].num_items
  added = catalog_additions(workdir)
  known = added.find(fingerprint.file_fingerprint(new_items)) if added else None
  first_id = known.first_id if known else catalog_items
  if known and held == known.first_id + known.count:
    return first_id, True
  if held != first_id:
    missing = [f.source for f in (added.files if added else []) if f.first_id >= held]
    raise errors.UserError(
      f"assign_items: tokenizer '{tokenizer}' holds SIDs for {held} items, but the items of "
      f"{new_items} take ids from {first_id}: assign the catalog's earlier additions to it "
      f"first, in order: {missing}"
    )
  return first_id, False


def add_items(workdir: str, rows: schema.Catalog, new_items: str) -> additions.AddedFile:
  """Appends the items of `new_items` to the run's catalog (once; later calls reuse them)."""
  dataset = data_fingerprint(workdir)
  added = additions.load(data_dir(workdir), dataset)
  base_items = load_data(workdir)[0].num_items - (added.rows.num_items if added else 0)
  entry, _ = additions.add(
    data_dir(workdir), dataset, base_items, rows, fingerprint.file_fingerprint(new_items), new_items
  )
  return entry


def load_world(workdir: str) -> simulator.World | None:
  """The simulated world behind the run's data, with its latent truth; None for real data."""
  if not os.path.exists(os.path.join(data_dir(workdir), simulator.MANIFEST)):
    return None
  return simulator.load_world(data_dir(workdir))


# What numpy / zipfile / msgpack raise on a truncated, corrupt or foreign file.
_UNREADABLE = (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile)


def _read_artefact(loader, path: str):
  """loader(path), with a corrupt or truncated file named in an errors.ArtefactError."""
  try:
    return loader(path)
  except _UNREADABLE as e:
    raise errors.ArtefactError(
      f"{path}: unreadable, truncated or corrupt ({type(e).__name__}: {str(e)[:120]}); "
      "make it again (rerun its job with --gin_bindings='run.redo = True')"
    ) from e


def load_sid(workdir: str, tokenizer: str, num_items: int | None = None) -> tables.SidArtefacts:
  """Tokenizer `tokenizer`'s SID artefacts (tables, diagnostics, tokenizer variables).

  Checks that the tokenizer finished and was made from this work directory's data,
  and, given `num_items`, that it assigns exactly that many items.

  Raises:
    errors.ArtefactError: unfinished, unreadable, or sized for another catalog.
    errors.StageMismatchError: made from other data.
  """
  directory = sid_dir(workdir, tokenizer)
  if not os.path.exists(os.path.join(directory, "diagnostics.json")):
    raise errors.ArtefactError(
      f"tokenizer '{tokenizer}': no SID artefacts in {directory}; run the tokenizer job first"
    )
  fingerprint.require(
    f"tokenizer '{tokenizer}'", directory, {"data": data_fingerprint(workdir)}, legacy_finished=True
  )
  artefacts = _read_artefact(tables.load_sid_artefacts, directory)
  rows = artefacts.tables.item_sid.shape[0]
  if num_items is not None and rows < num_items and catalog_additions(workdir) is not None:
    raise errors.ArtefactError(
      f"{directory}/item_sid.npy: {rows} items, but the catalog has {num_items} with the "
      f"items added since; assign them to tokenizer '{tokenizer}' (runs/assign_items.gin, "
      f"assign_items.name = '{tokenizer}', each file of data/{additions.ADDITIONS_FILE} in order)"
    )
  if num_items is not None and rows != num_items:
    raise errors.ArtefactError(
      f"{directory}/item_sid.npy: {rows} items, but data/catalog.npz has {num_items}; "
      "these SIDs belong to another catalog (retrain the tokenizer)"
    )
  return artefacts


def data_fingerprint(workdir: str) -> str:
  """Fingerprint of catalog.npz + logs.npz (gr_jax/fingerprint.py says what is hashed)."""
  directory = data_dir(workdir)
  return fingerprint.files_fingerprint(
    [os.path.join(directory, "catalog.npz"), os.path.join(directory, "logs.npz")]
  )


def sid_fingerprint(workdir: str, tokenizer: str) -> str:
  """Identity of tokenizer `tokenizer`: the id of its training run when recorded (item
  assignment keeps it: new items get existing SIDs, so generators stay valid), else a
  fingerprint of its tables."""
  directory = sid_dir(workdir, tokenizer)
  record = fingerprint.read_record(directory)
  if record and record.get("finished") and record.get("id"):
    return f"tokenizer:{record['id']}"
  return fingerprint.files_fingerprint(
    [os.path.join(directory, "item_sid.npy"), os.path.join(directory, "sid_items.npz")]
  )


def stage_id(folder: str | None) -> str | None:
  """The id of the stage recorded in `folder` (a parent checkpoint's identity), if any."""
  if not folder:
    return None
  record = fingerprint.read_record(os.path.dirname(os.path.abspath(folder)))
  return record.get("id") if record else None


def tokenizer_stage(workdir: str, name: str, settings: dict) -> tuple[fingerprint.Stage, bool]:
  """(record of tokenizer `name`'s stage, whether it finished with these very settings).

  The record of a finished tokenizer sits beside its artefacts in sid/<name>/; while it
  trains, in sid_train/<name>/ (sid/<name>/ is replaced atomically at the end).

  Raises:
    errors.StageMismatchError: made with other settings or data (and no redo).
  """
  out_dir, train_dir = sid_dir(workdir, name), sid_train_dir(workdir, name)
  finished = os.path.exists(os.path.join(out_dir, "diagnostics.json"))
  inputs = {"data": data_fingerprint(workdir)}
  stage = fingerprint.Stage(
    f"tokenizer '{name}'", out_dir if finished else train_dir, settings, inputs
  )

  def clear():
    for folder in (out_dir, train_dir, train_dir + "_two_tower"):
      shutil.rmtree(folder, ignore_errors=True)

  return stage, stage.reuse(legacy_finished=finished, clear=clear)


def sft_stage(
  workdir: str, tokenizer: str, stage: str, settings: dict, parent_checkpoint: str | None
) -> fingerprint.Stage:
  """The record of SFT stage `stage`: its settings, the data, the SIDs and its parent."""
  inputs = {
    "data": data_fingerprint(workdir),
    "sid": sid_fingerprint(workdir, tokenizer),
    "parent": stage_id(parent_checkpoint),
  }
  folder = sft_dir(workdir, tokenizer, stage)
  return fingerprint.Stage(f"SFT stage {tokenizer}/{stage}", folder, settings, inputs)


def rl_stage(
  workdir: str, tokenizer: str, name: str, init_stage: str, settings: dict
) -> fingerprint.Stage:
  """The record of RL run `name`: its settings, the data, the SIDs and the SFT stage."""
  inputs = {
    "data": data_fingerprint(workdir),
    "sid": sid_fingerprint(workdir, tokenizer),
    "parent": stage_id(os.path.join(sft_dir(workdir, tokenizer, init_stage), "checkpoints")),
  }
  folder = rl_dir(workdir, tokenizer, name)
  return fingerprint.Stage(f"RL run {tokenizer}/{name}", folder, settings, inputs)


def keep_tokenizer_record(record: dict | None, folder: str, new_items: str) -> None:
  """Writes a tokenizer's record into `folder` after an item update (no-op without one)."""
  if record is None:
    return
  inputs = dict(record.get("inputs", {}))
  inputs["new_items"] = [*inputs.get("new_items", []), fingerprint.file_fingerprint(new_items)]
  io_utils.write_json(os.path.join(folder, fingerprint.STAGE_FILE), {**record, "inputs": inputs})


def require_generator(workdir: str, tokenizer: str, stage: str) -> None:
  """Checks that SFT stage `stage` of `tokenizer` finished on today's data and SIDs.

  Raises:
    errors.ArtefactError: the stage did not finish (killed, preempted).
    errors.StageMismatchError: it was trained on other data or SIDs.
  """
  folder = sft_dir(workdir, tokenizer, stage)
  fingerprint.require(
    f"SFT stage {tokenizer}/{stage}",
    folder,
    generator_inputs(workdir, tokenizer),
    # Sequence training writes generator.json only once the selected weights are saved.
    legacy_finished=os.path.exists(os.path.join(folder, "metrics.json"))
    or (stage == SEQ_STAGE and has_generator(folder)),
  )


def generator_inputs(workdir: str, tokenizer: str) -> dict:
  """What a generator is trained from: the data and the tokenizer's SIDs."""
  return {"data": data_fingerprint(workdir), "sid": sid_fingerprint(workdir, tokenizer)}


@gin.configurable
def text_vocabulary(workdir: str, vocab_size: int = 2000):
  """The run's text vocabulary (a TextVocab or an HfTokenizerVocab).

  The pretrained model's tokenizer when SFT started from a Hugging Face checkpoint (it is then
  in vocab/tokenizer.json, so later stages pick it up without a knob); else the SentencePiece
  vocabulary, trained on titles + train queries once.
  """
  hf_path = hf_tokenizer_path(workdir)
  if os.path.exists(hf_path):
    return hf_vocab.HfTokenizerVocab.load(hf_path)
  path = vocab_path(workdir)
  if not os.path.exists(path):
    catalog, logs = load_data(workdir)
    train_queries = logs.query[logs.split == 0]
    texts = [str(t) for t in catalog.title] + [str(q) for q in train_queries]
    text_vocab.train_text_vocab(texts, path, vocab_size=vocab_size)
  return text_vocab.TextVocab.load(path)


def install_hf_tokenizer(workdir: str, folder: str) -> None:
  """Makes a checkpoint's tokenizer the run's text vocabulary (refuses a mixed work dir)."""
  if os.path.exists(vocab_path(workdir)) and not os.path.exists(hf_tokenizer_path(workdir)):
    raise ValueError(
      f"train_sft.init_from_hf: {workdir} already has a SentencePiece text vocabulary "
      f"({vocab_path(workdir)}) that other generators use; start from a work directory "
      "without vocab/ (data/ and sid/ can be copied)"
    )
  hf_vocab.install_tokenizer(folder, hf_tokenizer_path(workdir))


def stage_key(workdir: str, tokenizer: str, stage: str) -> str:
  """What a generator's outputs depend on: its stage record, checkpoints and SID artefacts."""
  folder = sft_dir(workdir, tokenizer, stage)
  checkpoint_dir = os.path.join(folder, "checkpoints")
  steps = sorted(os.listdir(checkpoint_dir)) if os.path.isdir(checkpoint_dir) else []
  return (
    f"{tokenizer}/{stage}: stage {stage_id(folder)}, checkpoints {steps}, "
    f"sid {sid_fingerprint(workdir, tokenizer)}"
  )


def save_generator(stage_dir: str, generator: generator_lib.Generator) -> None:
  """Writes generator.json beside a stage's checkpoints, so that loaders rebuild the model."""
  os.makedirs(stage_dir, exist_ok=True)
  with open(os.path.join(stage_dir, generator_lib.GENERATOR_FILE), "w") as f:
    f.write(generator.to_json())


def has_generator(stage_dir: str) -> bool:
  return os.path.exists(os.path.join(stage_dir, generator_lib.GENERATOR_FILE))


def load_generator(stage_dir: str) -> tuple[generator_lib.Generator, dict]:
  """(Generator, params as host arrays) of a finished stage directory.

  Raises:
    FileNotFoundError: no trained generator in `stage_dir`.
  """
  spec_path = os.path.join(stage_dir, generator_lib.GENERATOR_FILE)
  if not os.path.exists(spec_path):
    raise FileNotFoundError(f"{spec_path}: no trained generator here (run the SFT job first)")
  with open(spec_path) as f:
    generator = generator_lib.Generator.from_json(f.read())
  tree, _ = checkpoints.restore_params(os.path.join(stage_dir, "checkpoints"))
  return generator, tree["params"]
