"""The work directory of a run (DESIGN.md): where every stage's artefacts live, and
how a stage loads what the stages before it wrote.

    WORKDIR/data/                catalog.npz, logs.npz (+ world latents or amazon.json)
    WORKDIR/vocab/text.model     SentencePiece text vocabulary, shared by every generator
    WORKDIR/sid/<tokenizer>/     item_sid.npy, sid_items.npz, diagnostics.json, tokenizer
    WORKDIR/sft/<tok>/<stage>/   generator.json + orbax checkpoints of one SFT stage
    WORKDIR/rl/<tok>/<name>/     RL checkpoints and metrics.json
    WORKDIR/eval/                metrics.json, results.md, plots, table4.md
"""

from __future__ import annotations

import os

import gin
import numpy as np

from gr_jax.data import schema
from gr_jax.data.text import hf_vocab
from gr_jax.data.text import vocab as text_vocab
from gr_jax.data.world import simulator
from gr_jax.models import generator as generator_lib
from gr_jax.sid import tables
from gr_jax.train import checkpoints

# Written last by each data source: a data directory holding one is complete.
AMAZON_MANIFEST = "amazon.json"


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
  return any(os.path.exists(os.path.join(out, m)) for m in (simulator.MANIFEST, AMAZON_MANIFEST))


def load_data(workdir: str) -> tuple[schema.Catalog, schema.SearchLogs]:
  """The run's catalog and logs, as written by the data job.

  Raises:
    FileNotFoundError: no dataset in this work directory.
  """
  directory = data_dir(workdir)
  catalog_path = os.path.join(directory, "catalog.npz")
  if not os.path.exists(catalog_path):
    raise FileNotFoundError(
      f"{catalog_path}: no dataset in this work directory; run the data job first "
      "(gin_configs/runs/data.gin)"
    )
  catalog = schema.load_catalog(catalog_path)
  logs = schema.load_logs(os.path.join(directory, "logs.npz"))
  if catalog.features is not None:
    catalog.features = np.asarray(catalog.features, np.float32)
  return catalog, logs


def load_world(workdir: str) -> simulator.World | None:
  """The simulated world behind the run's data, with its latent truth; None for real data."""
  if not os.path.exists(os.path.join(data_dir(workdir), simulator.MANIFEST)):
    return None
  return simulator.load_world(data_dir(workdir))


def load_sid(workdir: str, tokenizer: str) -> tables.SidArtefacts:
  """Tokenizer `tokenizer`'s SID artefacts (tables, diagnostics, tokenizer variables)."""
  return tables.load_sid_artefacts(sid_dir(workdir, tokenizer))


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
  """What a generator's outputs depend on: its checkpoint steps and its SID table's size."""
  checkpoint_dir = os.path.join(sft_dir(workdir, tokenizer, stage), "checkpoints")
  steps = sorted(os.listdir(checkpoint_dir)) if os.path.isdir(checkpoint_dir) else []
  item_sid = os.path.join(sid_dir(workdir, tokenizer), "item_sid.npy")
  size = os.path.getsize(item_sid) if os.path.exists(item_sid) else -1
  mtime = os.stat(item_sid).st_mtime_ns if os.path.exists(item_sid) else -1
  return f"{tokenizer}/{stage}: checkpoints {steps}, item_sid {size} bytes @ {mtime}"


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
