"""The work-directory layout every stage reads and writes (DESIGN.md)."""

from __future__ import annotations

import os


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
