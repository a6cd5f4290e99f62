"""The SFT input pipeline: seqio tasks and mixtures as step-indexed batches that resume exactly."""

import hashlib
import json

import jax.numpy as jnp
import numpy as np
import pytest

from gr_jax import errors, gin_utils
from gr_jax.data import seqio_tasks, sft_inputs
from gr_jax.data.text.vocab import TextVocab, train_text_vocab
from gr_jax.data.world import simulator
from gr_jax.models.token_layout import PAD_ID, TokenLayout
from gr_jax.train import trainer

BATCH_SIZE = 32
PROMPT_LEN = 16
SID_LEVEL_SIZES = (8, 4, 4)


@pytest.fixture(scope="module")
def world():
  return simulator.generate_world(simulator.world_preset("tiny"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return tmp_path_factory.mktemp("sft_inputs")


@pytest.fixture(scope="module")
def vocab(world, folder):
  texts = [*world.catalog.title, *world.logs.query]
  return TextVocab.load(train_text_vocab(texts, folder / "text.model", vocab_size=200))


@pytest.fixture(scope="module")
def item_sid(world, folder):
  """Random SIDs, written where the SFT job finds a tokenizer's (sid/<tok>/item_sid.npy)."""
  rng = np.random.default_rng(0)
  codes = rng.integers(0, SID_LEVEL_SIZES, (world.catalog.num_items, len(SID_LEVEL_SIZES)))
  np.save(folder / "item_sid.npy", codes.astype(np.int32))
  return codes.astype(np.int32)


@pytest.fixture(scope="module")
def inputs(world, folder, vocab, item_sid):
  """The world's SFT tasks, registered as the SFT job registers them."""
  del item_sid  # written to `folder`
  layout = TokenLayout(text_vocab_size=vocab.vocab_size, sid_level_sizes=SID_LEVEL_SIZES)
  made = sft_inputs.SftInputs(
    "test_sft", layout, BATCH_SIZE, seed=3, mixture_rates={"i2sid": 1.0, "uq2sid": 3.0}
  )
  made.register((world.catalog, world.logs), str(folder), vocab, PROMPT_LEN)
  return made


def _hash(batch) -> str:
  return hashlib.sha1(batch["tokens"].tobytes() + batch["loss_weights"].tobytes()).hexdigest()


class _Recorder:
  """Wraps a batch_fn; records a hash of each step's batch."""

  def __init__(self, batch_fn):
    self.batch_fn = batch_fn
    self.hashes = {}

  def __call__(self, step):
    batch = self.batch_fn(step)
    self.hashes.setdefault(step, set()).add(_hash(batch))
    return batch


class _TokenMeanTask:
  """One scalar fitted to the batch's mean token: the trainer steps, saves and resumes it."""

  def init(self, rng, batch):
    del rng, batch
    return {"params": {"w": jnp.zeros(())}}

  def loss(self, variables, batch, rng):
    del rng
    target = jnp.mean(batch["tokens"].astype(jnp.float32) * batch["loss_weights"])
    return (variables["params"]["w"] - target) ** 2, ({}, {})


def _fit(workdir, batches, num_steps):
  config = trainer.TrainerConfig(
    num_steps=num_steps, log_every=2, checkpoint_every=100, progress_bar=False
  )
  runner = trainer.Trainer(_TokenMeanTask(), str(workdir), config=config)
  try:
    return runner.fit(batches)
  finally:
    runner.close()


@pytest.mark.parametrize("stage", ["q2sid", sft_inputs.MIXTURE_STAGE])
def test_a_run_stopped_and_resumed_sees_the_batches_of_an_uninterrupted_run(
  inputs, stage, tmp_path
):
  total, stop = 9, 4
  with inputs.batches(stage) as batches:
    whole = _Recorder(batches)
    _fit(tmp_path / "whole", whole, total)
  with inputs.batches(stage) as batches:
    first = _Recorder(batches)
    _fit(tmp_path / "stopped", first, stop)
  with inputs.batches(stage) as batches:  # a fresh pipeline, as a relaunched process builds
    second = _Recorder(batches)
    result = _fit(tmp_path / "stopped", second, total)
  assert result.resumed_from == stop
  assert set(second.hashes) == {0, *range(stop, total)}  # step 0: the trainer's sample batch
  for step in range(total):
    assert len(whole.hashes[step]) == 1
    part = first if step < stop else second
    assert part.hashes[step] == whole.hashes[step], step
  assert len(set.union(*whole.hashes.values())) == total  # the batches do change


def test_batches_are_the_task_examples_shuffled_per_epoch(inputs, world, item_sid, vocab):
  tables = (world.catalog, world.logs)
  want = seqio_tasks.build_examples(
    "q2sid", *tables, "train", item_sid, vocab, inputs.layout, PROMPT_LEN
  )
  rows = {row.tobytes() for row in want["tokens"]}
  num_examples = len(want["tokens"])
  num_steps = -(-2 * num_examples // BATCH_SIZE)  # two epochs and a bit
  with inputs.batches("q2sid") as batches:
    tokens = np.concatenate([batches(step)["tokens"] for step in range(num_steps)])
  assert tokens.shape == (num_steps * BATCH_SIZE, PROMPT_LEN + len(SID_LEVEL_SIZES))
  assert {row.tobytes() for row in tokens} <= rows  # examples built by the task code only
  first_epoch = tokens[:num_examples]
  # A full shuffle: every example once per epoch, in an order that differs between epochs.
  assert sorted(r.tobytes() for r in first_epoch) == sorted(r.tobytes() for r in want["tokens"])
  assert not np.array_equal(first_epoch, want["tokens"])
  assert not np.array_equal(first_epoch, tokens[num_examples : 2 * num_examples])


def test_the_mixture_samples_its_tasks_by_rate(inputs):
  layout = inputs.layout
  with inputs.batches(sft_inputs.MIXTURE_STAGE) as batches:
    tokens = np.concatenate([batches(step)["tokens"][:, :PROMPT_LEN] for step in range(40)])
  first = tokens[np.arange(len(tokens)), np.argmax(tokens != PAD_ID, axis=1)]  # [E] prompt start
  uq2sid_share = np.mean((first >= layout.gender_offset) & (first < layout.age_offset))
  assert abs(uq2sid_share - 0.75) < 0.05  # rates 1 : 3


def test_settings_name_what_decides_the_batches(inputs):
  assert inputs.settings("i2sid") == {"batch": BATCH_SIZE, "seed": 3}
  assert inputs.settings("mixture")["mixture_rates"] == {"i2sid": 1.0, "uq2sid": 3.0}


@pytest.mark.parametrize(
  "stages, rates, named",
  [
    (("i2sid", "mixture"), None, "train_sft.mixture_rates is not set"),
    (("i2sid",), {"i2sid": 1}, "train_sft.stages has no 'mixture'"),
    (("mixture",), {"x2sid": 1}, "unknown task 'x2sid'"),
    (("mixture",), {"i2sid": 0}, "mixture_rates['i2sid']: rate 0 must be > 0"),
    (("q2sid", "q3sid"), None, "train_sft.stages: unknown stage 'q3sid'"),
  ],
)
def test_stage_mistakes_name_the_binding(stages, rates, named):
  with pytest.raises(errors.UserError, match=named.replace("[", r"\[").replace("]", r"\]")):
    sft_inputs.check_stages(stages, rates)


def test_an_empty_task_is_a_named_error(inputs):
  def empty():
    return seqio_tasks.get_task_dataset("test_sft_q2sid", "train", inputs.layout).take(0).batch(2)

  with pytest.raises(errors.EmptyDatasetError, match="test_sft_q2sid: no training examples"):
    sft_inputs.StepBatches(empty, "test_sft_q2sid")(0)


# ------------------------------------------------------------------ through the job
JOB = [
  "prepare_data.preset = 'tiny'",
  "CODEBOOK_SIZES = (16, 8, 8)",
  "TrainerConfig.progress_bar = False",
  "TrainerConfig.async_checkpoint = False",
  "TrainerConfig.log_every = 2",
  "text_vocabulary.vocab_size = 200",
  "train_sft.tokenizer = 'rqvae'",
  "train_sft.model = 'tiny'",
  "train_sft.prompt_len = 16",
  "train_sft.batch_size = 16",
]


@pytest.mark.parametrize(
  "bindings, named",
  [
    (["train_sft.stages = ('i2sid', 'mixture')"], "train_sft.mixture_rates is not set"),
    (
      ["train_sft.stages = ('mixture',)", "train_sft.mixture_rates = {'q2sid': -1}"],
      "train_sft.mixture_rates = .*entry 'q2sid': must be a number > 0",
    ),
  ],
)
def test_the_job_stops_on_mixture_mistakes_before_loading(tmp_path, bindings, named):
  with pytest.raises(errors.UserError, match=named):
    gin_utils.run_in_process(tmp_path, ["runs/sft.gin"], [*JOB, *bindings])


@pytest.mark.slow
def test_the_job_trains_a_mixture_stage_after_a_task_stage(tmp_path):
  gin_utils.run_in_process(tmp_path, ["runs/data.gin"], JOB)
  tokenizer = ["train_tokenizer.name = 'rqvae'", "TrainerConfig.num_steps = 2"]
  gin_utils.run_in_process(tmp_path, ["runs/tokenizer.gin", "sid/rqvae.gin"], [*JOB, *tokenizer])
  sft = [
    "train_sft.stages = ('i2sid', 'mixture')",
    "train_sft.mixture_rates = {'q2sid': 1, 'uq2sid': 2}",
    "train_sft.stage_steps = {'i2sid': 2, 'mixture': 4}",
  ]
  metrics = gin_utils.run_in_process(tmp_path, ["runs/sft.gin"], [*JOB, *sft])
  assert set(metrics) == {"i2sid", "mixture"}
  assert np.isfinite(metrics["mixture"]["loss"])
  record = json.loads((tmp_path / "sft" / "rqvae" / "mixture" / "stage.json").read_text())
  assert record["finished"] and record["config"]["mixture_rates"] == {"q2sid": 1, "uq2sid": 2}
  i2sid = json.loads((tmp_path / "sft" / "rqvae" / "i2sid" / "stage.json").read_text())
  assert "mixture_rates" not in i2sid["config"]
  assert record["inputs"]["parent"] == i2sid["id"]  # the mixture starts from i2sid
