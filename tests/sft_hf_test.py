"""SFT from a converted Hugging Face Qwen2 checkpoint through the real job (init_from_hf).

Runs the data and tokenizer jobs at CI sizes, then a few SFT steps per stage starting from the
tiny checkpoint of tests/testdata, the way `python -m gr_jax.main` with runs/sft_qwen.gin does,
then the evaluation job on the result.
"""

import json
import os
import pathlib

import jax
import numpy as np
import pytest

from gr_jax import gin_utils
from gr_jax import workdir as workdir_lib
from gr_jax.data.text import hf_vocab as hf_tokenizer_vocab
from gr_jax.models import decoder, hf_qwen

CHECKPOINT = pathlib.Path(__file__).parent / "testdata" / "tiny_qwen2_tied"
TINY = [
  "prepare_data.preset = 'tiny'",
  "CODEBOOK_SIZES = (16, 8, 8)",
  "TrainerConfig.progress_bar = False",
  "TrainerConfig.log_every = 2",
  "TrainerConfig.async_checkpoint = False",
  "train_sft.prompt_len = 16",
  "train_sft.batch_size = 16",
  "train_sft.stages = ('i2sid', 'q2sid')",
  "train_sft.stage_steps = {'i2sid': 3, 'q2sid': 2}",
]


def _job(workdir, files, bindings=()):
  return gin_utils.run_in_process(workdir, files, [*TINY, *bindings])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("qwen_run")
  _job(workdir, ["runs/data.gin"])
  _job(
    workdir,
    ["runs/tokenizer.gin", "sid/rqvae.gin"],
    ["train_tokenizer.name = 'rqvae'", "TrainerConfig.num_steps = 2"],
  )
  return workdir


@pytest.mark.slow
def test_sft_starts_from_the_converted_checkpoint(workdir):
  metrics = _job(
    workdir,
    ["runs/sft_qwen.gin"],
    ["train_sft.tokenizer = 'rqvae'", f"train_sft.init_from_hf = '{CHECKPOINT}'"],
  )
  assert set(metrics) == {"i2sid", "q2sid"}
  assert all(np.isfinite(m["loss"]) for m in metrics.values())

  # Later jobs find the Qwen tokenizer without a knob.
  vocab = workdir_lib.text_vocabulary(str(workdir))
  assert isinstance(vocab, hf_tokenizer_vocab.HfTokenizerVocab) and vocab.vocab_size == 293
  assert not os.path.exists(workdir / "vocab" / "text.model")

  # The model has the checkpoint's shape and the layout's text range is the tokenizer.
  generator, params = workdir_lib.load_generator(str(workdir / "sft" / "rqvae" / "i2sid"))
  hf = json.loads((CHECKPOINT / "config.json").read_text())
  assert generator.layout.text_vocab_size == 293
  assert generator.model_config.num_layers == hf["num_hidden_layers"]
  assert generator.model_config.rope_theta == 1e6 and generator.model_config.max_len == 2048

  # The first stage started from the converted weights: 3 small steps stay close to them.
  _, start = hf_qwen.init_generator_from_hf(
    CHECKPOINT, generator.layout, max_len=generator.model_config.max_len
  )
  before = np.asarray(start["blocks_1"]["mlp"]["down"])
  after = np.asarray(params["blocks_1"]["mlp"]["down"])
  fresh = decoder.init_params(generator.model_config, jax.random.key(0))
  fresh = np.asarray(fresh["blocks_1"]["mlp"]["down"])
  assert np.abs(after - before).max() < 0.1 * np.abs(fresh - before).max()
  assert not np.array_equal(after, before)

  # Evaluation runs unchanged on the Qwen-started generator (constrained decoding included).
  results = _job(
    workdir,
    ["runs/evaluate.gin"],
    [
      "evaluate.tokenizers = ('rqvae',)",
      "evaluate.baseline = 'rqvae'",
      "evaluate.max_requests = 16",
      "evaluate.beam_sizes = (1, 4)",
      "evaluate.curve_beam_sizes = (1, 4)",
      "evaluate.truncation_items = 10",
    ],
  )
  semantic = results["tokenizers"]["rqvae"]["stages"]["semantic"]
  assert semantic[4]["valid_share"] == 1.0 and 0.0 <= semantic[4]["hitrate"] <= 1.0


def test_sft_qwen_gin_needs_the_checkpoint(tmp_path):
  with pytest.raises(ValueError, match="init_from_hf"):
    _job(tmp_path, ["runs/sft_qwen.gin"], ["train_sft.tokenizer = 'rqvae'"])


def test_refuses_a_work_dir_with_a_sentencepiece_vocab(tmp_path):
  (tmp_path / "vocab").mkdir()
  (tmp_path / "vocab" / "text.model").write_bytes(b"")
  with pytest.raises(ValueError, match="SentencePiece"):
    workdir_lib.install_hf_tokenizer(str(tmp_path), str(CHECKPOINT))
  assert not (tmp_path / "vocab" / "tokenizer.json").exists()
