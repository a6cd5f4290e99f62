"""Makes the tiny Hugging Face Qwen2 checkpoints under tests/testdata/ (run once, by hand).

Not run by the tests, and not importable from the project environment: it needs `torch` and
`transformers`, which the project does not depend on. Recipe:

  python3.11 -m venv /tmp/hfenv
  /tmp/hfenv/bin/pip install torch==2.13.0 transformers safetensors numpy tokenizers
  /tmp/hfenv/bin/python tests/testdata/make_tiny_qwen2.py

It writes, for `tiny_qwen2_tied` (2 layers, width 64, sharded into several safetensors files
with an index) and `tiny_qwen2_untied` (1 layer, width 32, one file, separate lm_head):
config.json, *.safetensors, tokenizer.json (a byte-level BPE trained here with `tokenizers`,
Qwen-like: GPT-2 byte alphabet, Qwen's special tokens, embedding rows padded beyond the
tokenizer's size as in the real checkpoints) and reference.npz: `input_ids` [B, T] (row 1
left-padded), `attention_mask` [B, T], `position_ids` [B, T] (real tokens before each one, the
convention of gr_jax's decoder) and `logits` [B, T, V] float32 from transformers' Qwen2ForCausalLM.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import numpy as np
import tokenizers
import torch
import transformers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

HERE = pathlib.Path(__file__).resolve().parent
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2's pre-tokenizer split pattern.
SPLIT_PATTERN = (
  r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
  r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CORPUS = [
  "wireless noise cancelling headphones with a long battery life",
  "organic green tea, 100 bags; loose leaf jasmine tea",
  "stainless steel water bottle 750 ml, keeps drinks cold for 24 hours",
  "children's picture book about dinosaurs and the stars",
  "Laufschuhe für Damen, leicht und atmungsaktiv",
  "running shoes for men size 44",
  "mechanical keyboard with brown switches and RGB lighting",
  "USB-C charger 65W, fast charging for laptops and phones",
] * 4


def train_tokenizer(vocab_size: int) -> tokenizers.Tokenizer:
  tokenizer = tokenizers.Tokenizer(models.BPE(byte_fallback=False))
  tokenizer.normalizer = normalizers.NFC()
  tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
    [
      pre_tokenizers.Split(tokenizers.Regex(SPLIT_PATTERN), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ]
  )
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=vocab_size,
    special_tokens=[],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tokenizer.train_from_iterator(CORPUS, trainer)
  # Added after training, so that they come last as in Qwen's tokenizer.
  tokenizer.add_special_tokens(SPECIAL_TOKENS)
  return tokenizer


def make(name: str, tie: bool, layers: int, hidden: int, heads: int, kv_heads: int, shard: str):
  out = HERE / name
  shutil.rmtree(out, ignore_errors=True)
  out.mkdir(parents=True)
  tokenizer = train_tokenizer(vocab_size=290)
  tokenizer.save(str(out / "tokenizer.json"))
  tokenizer_size = tokenizer.get_vocab_size(with_added_tokens=True)
  config = transformers.Qwen2Config(
    vocab_size=tokenizer_size + 13,  # padded beyond the tokenizer, as Qwen2.5's 151,936 rows
    hidden_size=hidden,
    intermediate_size=2 * hidden,
    num_hidden_layers=layers,
    num_attention_heads=heads,
    num_key_value_heads=kv_heads,
    max_position_embeddings=256,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=tie,
    use_sliding_window=False,
    bos_token_id=tokenizer.token_to_id("<|endoftext|>"),
    eos_token_id=tokenizer.token_to_id("<|im_end|>"),
  )
  torch.manual_seed(0)
  model = transformers.Qwen2ForCausalLM(config).eval()
  with torch.no_grad():
    # Random, non-zero biases and norm scales, so that a dropped or misplaced one shows.
    for param_name, param in model.named_parameters():
      if param_name.endswith(("bias", "norm.weight", "layernorm.weight")):
        param.copy_(torch.randn_like(param) * 0.5 + (1.0 if "norm" in param_name else 0.0))
  model.save_pretrained(out, safe_serialization=True, max_shard_size=shard)

  texts = ["organic tea for runners", "keyboard"]
  encoded = [tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
  length = max(len(ids) for ids in encoded) + 2
  input_ids = np.zeros((len(texts), length), np.int64)
  attention_mask = np.zeros((len(texts), length), np.int64)
  # Row 0 fills the width (ids shifted by one so that none is 0: gr_jax's PAD_ID), row 1 is
  # left-padded.
  input_ids[0] = 1 + np.arange(length) * 7 % (tokenizer_size - 1)
  attention_mask[0] = 1
  input_ids[1, length - len(encoded[1]) :] = encoded[1]
  attention_mask[1, length - len(encoded[1]) :] = 1
  position_ids = np.maximum(np.cumsum(attention_mask, axis=1) - 1, 0)
  with torch.no_grad():
    logits = model(
      input_ids=torch.from_numpy(input_ids),
      attention_mask=torch.from_numpy(attention_mask),
      position_ids=torch.from_numpy(position_ids),
    ).logits
  np.savez(
    out / "reference.npz",
    input_ids=input_ids.astype(np.int32),
    attention_mask=attention_mask.astype(np.int32),
    position_ids=position_ids.astype(np.int32),
    logits=logits.float().numpy(),
  )
  files = sorted(os.listdir(out))
  print(name, files, json.dumps({"transformers": transformers.__version__}))


if __name__ == "__main__":
  make("tiny_qwen2_tied", tie=True, layers=2, hidden=64, heads=4, kv_heads=2, shard="60KB")
  make("tiny_qwen2_untied", tie=False, layers=1, hidden=32, heads=4, kv_heads=2, shard="10MB")
