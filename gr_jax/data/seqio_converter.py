"""The seqio data source and feature converter of the SFT tasks (gr_jax/data/seqio_tasks.py).

A module of its own because the classes derive from seqio classes: importing it loads
seqio and TensorFlow (through gr_jax/tf_guard.py), so only the seqio paths import it.
"""

from __future__ import annotations

from collections.abc import Callable

from gr_jax import tf_guard
from gr_jax.data import schema
from gr_jax.models.token_layout import PAD_ID

tf = tf_guard.tensorflow()
seqio = tf_guard.seqio()


class InMemorySource(seqio.DataSource):
  """A split's examples built in memory by `dataset_fn(split)`, shuffled whole.

  With `shuffle`, the source applies a full, seeded shuffle that draws a new
  permutation each epoch (the Task's `repeat` comes after the source), so the Task
  needs no shuffle buffer of its own and every epoch holds every example once.
  """

  def __init__(self, dataset_fn: Callable[[str], tf.data.Dataset]):
    super().__init__(splits=schema.SPLITS, performs_internal_shuffling=True)
    self._dataset_fn = dataset_fn

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False

  def list_shards(self, split: str) -> list[str]:
    return [split]

  def get_dataset(
    self, split="train", shuffle=True, seed=None, shard_info=None, **unused
  ) -> tf.data.Dataset:
    del unused  # sequence_length, use_cached, num_epochs: the Task applies them
    if shard_info and shard_info.num_shards > 1:
      raise ValueError("InMemorySource does not shard; every process reads the whole split")
    ds = self._dataset_fn(split)
    if shuffle:
      buffer = tf.maximum(ds.cardinality(), 1)  # an empty split still builds
      ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    return ds


class PromptSidFeatureConverter(seqio.FeatureConverter):
  """Task features {inputs: prompt, targets: SID tokens} -> {tokens, loss_weights}.

  task_feature_lengths = {'inputs': prompt_len, 'targets': L}. The output is the
  layout of `seqio_tasks.layout_examples` (see that module's docstring for the shift
  convention). Packing is not supported: every example is one retrieval.
  """

  TASK_FEATURES = {
    "inputs": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
    "targets": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
  }
  MODEL_FEATURES = {
    "tokens": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
    "loss_weights": seqio.FeatureConverter.FeatureSpec(dtype=tf.float32),
  }
  PACKING_FEATURE_DTYPES = {}

  def __init__(self, **kwargs):
    kwargs["pack"] = False
    super().__init__(**kwargs)

  def _convert_features(self, ds, task_feature_lengths):
    prompt_len = task_feature_lengths["inputs"]
    num_levels = task_feature_lengths["targets"]

    def convert(example):
      prompt = example["inputs"][-prompt_len:]
      padding = tf.fill([prompt_len - tf.shape(prompt)[0]], tf.constant(PAD_ID, tf.int32))
      tokens = tf.concat([padding, prompt, example["targets"]], 0)
      loss_weights = tf.concat(
        [tf.zeros([prompt_len], tf.float32), tf.ones([num_levels], tf.float32)], 0
      )
      return {"tokens": tokens, "loss_weights": loss_weights}

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

  def get_model_feature_lengths(self, task_feature_lengths):
    length = task_feature_lengths["inputs"] + task_feature_lengths["targets"]
    return {"tokens": length, "loss_weights": length}
