"""TFDS builders of the data contracts and the reader that turns one into a run's dataset.

TensorFlow is loaded through gr_jax/tf_guard.py before any module here imports TFDS,
so it never sees the accelerators; jobs import this package only when they read TFDS.
"""

from gr_jax import tf_guard

tf_guard.tensorflow()
