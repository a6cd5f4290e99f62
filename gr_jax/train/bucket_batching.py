"""Step-indexed batches of left-padded sequences, grouped by length.

Sequences of very different lengths padded to one width waste most of a step on
padding. Here every example goes to the narrowest bucket width that holds it; a
batch draws its rows from one bucket and is cut to that width (the arrays are
left-padded, so the last `width` columns keep every real token). Each bucket
compiles one train step.

As in `batching.epoch_batches`, batch `step` is a pure function of (seed, step): an
epoch permutes each bucket's examples, splits them into batches, and permutes the
batch order. A bucket's last batch is topped up with repeats of its own examples whose
`weight_key` rows are zeroed, so every example counts once per epoch.
"""

from __future__ import annotations

import functools

import numpy as np

from gr_jax import errors


def bucket_batches(
  arrays: dict[str, np.ndarray],
  lengths: np.ndarray,
  widths: tuple[int, ...],
  batch_size: int,
  weight_key: str,
  seed: int = 0,
):
  """Returns (batch_fn(step) -> dict of [batch_size, width] arrays, steps per epoch).

  Args:
    arrays: [E, W] left-padded example arrays (every array is cut to the bucket width).
    lengths: [E] columns each example needs (its real tokens).
    widths: bucket widths, ascending; the last must hold the longest example and be <= W.
    batch_size: examples per batch.
    weight_key: the array whose rows are zeroed for top-up repeats (e.g. loss weights).
    seed: permutation seed.

  Raises:
    ValueError: mismatched arrays, widths out of order or too narrow.
    errors.EmptyDatasetError: no examples.
  """
  lengths = np.asarray(lengths, np.int64)
  shapes = {name: a.shape for name, a in arrays.items()}
  if weight_key not in arrays or len({s[:2] for s in shapes.values()}) != 1:
    raise ValueError(f"bucket_batches: arrays must share [E, W] and hold '{weight_key}': {shapes}")
  num_examples, full_width = next(iter(shapes.values()))[:2]
  if num_examples == 0:
    raise errors.EmptyDatasetError("no training examples: the train split yields no sequences")
  widths = tuple(int(w) for w in widths)
  if list(widths) != sorted(set(widths)) or widths[-1] > full_width:
    raise ValueError(f"bucket_batches: widths {widths} must ascend and be <= {full_width}")
  if lengths.max() > widths[-1]:
    raise ValueError(f"bucket_batches: an example needs {lengths.max()} > {widths[-1]} columns")
  bucket = np.searchsorted(np.asarray(widths), lengths)  # [E] narrowest width that fits
  members = [np.flatnonzero(bucket == b) for b in range(len(widths))]
  batches_per_bucket = [-(-len(m) // batch_size) for m in members]
  steps_per_epoch = sum(batches_per_bucket)

  @functools.lru_cache(maxsize=2)
  def epoch_plan(epoch: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """[(width, rows [batch_size], is_repeat [batch_size])] of one epoch, in step order."""
    rng = np.random.default_rng([seed, epoch])
    plan = []
    for width, rows, count in zip(widths, members, batches_per_bucket):
      if not count:
        continue
      order = rng.permutation(rows)
      slots = count * batch_size
      padded = np.resize(order, slots)  # repeats the bucket's own examples at the end
      repeat = np.arange(slots) >= len(order)
      for b in range(count):
        part = slice(b * batch_size, (b + 1) * batch_size)
        plan.append((width, padded[part], repeat[part]))
    return [plan[i] for i in rng.permutation(len(plan))]

  def batch_fn(step: int) -> dict[str, np.ndarray]:
    epoch, index = divmod(int(step), steps_per_epoch)
    width, rows, repeat = epoch_plan(epoch)[index]
    batch = {name: a[rows][:, full_width - width :] for name, a in arrays.items()}
    batch[weight_key] = np.where(repeat[:, None], 0, batch[weight_key]).astype(
      arrays[weight_key].dtype
    )
    return batch

  return batch_fn, steps_per_epoch
