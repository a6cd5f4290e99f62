"""Step-indexed batches over in-memory example arrays.

Batch `step` is a pure function of (seed, step): epochs are seeded permutations,
and the batch takes the next `batch_size` positions of the concatenated epochs.
So a run resumed at step s sees exactly the batches an uninterrupted run sees,
with no iterator state to checkpoint.
"""

from __future__ import annotations

import numpy as np

from gr_jax import errors


def epoch_batches(arrays: dict[str, np.ndarray], batch_size: int, seed: int = 0):
  """Returns batch_fn(step) -> dict of [batch_size, ...] arrays.

  Args:
    arrays: example arrays sharing their leading axis E.
    batch_size: examples per batch (may exceed E: epochs then repeat inside a batch).
    seed: permutation seed.

  Raises:
    ValueError: mismatched leading axes.
    errors.EmptyDatasetError: no examples.
  """
  sizes = {name: len(a) for name, a in arrays.items()}
  if not sizes or len(set(sizes.values())) != 1:
    raise ValueError(f"epoch_batches: arrays must share one leading size, got {sizes}")
  num_examples = next(iter(sizes.values()))
  if num_examples == 0:
    raise errors.EmptyDatasetError(
      "no training examples: the data's train split yields no rows for this task "
      "(check data/ and its split sizes)"
    )

  def batch_fn(step: int) -> dict[str, np.ndarray]:
    position = step * batch_size + np.arange(batch_size, dtype=np.int64)  # [B]
    epoch, offset = np.divmod(position, num_examples)
    index = np.empty(batch_size, np.int64)
    for e in np.unique(epoch):  # at most a few epochs per batch
      permutation = np.random.default_rng([seed, int(e)]).permutation(num_examples)
      rows = epoch == e
      index[rows] = permutation[offset[rows]]
    return {name: a[index] for name, a in arrays.items()}

  return batch_fn
