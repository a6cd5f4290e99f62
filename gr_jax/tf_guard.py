"""TensorFlow for the input pipelines only: loaded on first use, kept off accelerators.

seqio and TFDS run on TensorFlow, while JAX owns the GPUs / TPUs. Left alone, TensorFlow
reserves most of every GPU's memory the first time it runs an op, so gr_jax loads
TensorFlow, seqio and TFDS only through this module, which hides every non-CPU device
from TensorFlow before it initializes. Callers import them inside the functions that
read data through them: a job that reads no TF data never loads TensorFlow (seconds of
import saved, and no accelerator memory touched).
"""

from __future__ import annotations

import functools


@functools.cache
def tensorflow():
  """The `tensorflow` module, with only the CPU visible to it."""
  import tensorflow as tf

  cpus = tf.config.list_physical_devices("CPU")
  try:
    tf.config.set_visible_devices(cpus)
  except RuntimeError as e:  # TF already ran an op, with the accelerators visible
    raise RuntimeError(
      "TensorFlow was initialized before gr_jax.tf_guard could hide the accelerators from "
      "it: load tensorflow, seqio and tensorflow_datasets through gr_jax.tf_guard"
    ) from e
  return tf


def seqio():
  """The `seqio` module (TensorFlow loaded through `tensorflow()` first)."""
  tensorflow()
  import seqio

  return seqio


def tfds():
  """The `tensorflow_datasets` module (TensorFlow loaded through `tensorflow()` first)."""
  tensorflow()
  import tensorflow_datasets

  return tensorflow_datasets
