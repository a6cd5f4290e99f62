"""Preemption: SIGTERM mid-run then relaunch = the uninterrupted run, same examples in order.

The run is preempted for real (the process sends itself SIGTERM from inside the
batch function at a chosen step, which the trainer's handler turns into "save and
stop"); the relaunch is a fresh Trainer on the same work directory. The data is a
finite example set read in seeded epochs (gr_jax.train.batching, what the SFT, RL
and tokenizer jobs use), so the data position crosses epoch boundaries.
"""

import hashlib
import os
import signal

import jax
import numpy as np
import pytest

from gr_jax.train import batching, example_task, partitioning, trainer

# Each test trains in subprocesses and signals them: end to end, tens of seconds.
pytestmark = pytest.mark.slow

NUM_EXAMPLES = 40  # batch 16: an epoch ends inside batches 2, 5, 7, ...
BATCH_SIZE = 16
NUM_STEPS = 24


def _examples(seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(NUM_EXAMPLES, 16)).astype(np.float32)
  teacher = rng.normal(size=(16, 8)).astype(np.float32)
  return {"x": x, "y": np.tanh(x @ teacher)}


class RecordingBatches:
  """Step-indexed batches that record which examples each call returned.

  `preempt_at`: send this process SIGTERM while building that step's batch.
  """

  def __init__(self, data_seed=0, preempt_at=None):
    examples = _examples()
    self._batch_fn = batching.epoch_batches(examples, BATCH_SIZE, seed=data_seed)
    self.preempt_at = preempt_at
    self.calls = []  # one list per fit: [(step, example hashes)]

  def new_fit(self):
    self.calls.append([])

  def __call__(self, step):
    batch = self._batch_fn(step)
    hashes = tuple(hashlib.sha1(row.tobytes()).hexdigest()[:12] for row in batch["x"])
    self.calls[-1].append((step, hashes))
    if step == self.preempt_at:
      self.preempt_at = None
      os.kill(os.getpid(), signal.SIGTERM)
    return batch


def _fit(workdir, batches, **config):
  cfg = trainer.TrainerConfig(
    num_steps=NUM_STEPS, log_every=4, progress_bar=False, **{"checkpoint_every": 10, **config}
  )
  runner = trainer.Trainer(
    example_task.RegressionTask(), str(workdir), config=cfg, mesh=partitioning.make_mesh((4, 1, 2))
  )
  batches.new_fit()
  result = runner.fit(batches)
  runner.close()
  return result


def _trained(calls):
  """The batches a fit trained on: every call but the first (the init sample)."""
  return calls[1:]


def _assert_same_params(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def _preempt_and_resume(workdir, preempt_at):
  batches = RecordingBatches(preempt_at=preempt_at)
  first = _fit(workdir, batches)
  second = _fit(workdir, batches)
  return batches, first, second


def test_sigterm_then_relaunch_equals_uninterrupted(tmp_path):
  reference_batches = RecordingBatches()
  reference = _fit(tmp_path / "reference", reference_batches)
  assert not reference.preempted
  assert [s for s, _ in _trained(reference_batches.calls[0])] == list(range(NUM_STEPS))

  # SIGTERM while building batch 12: step 12 is trained, a checkpoint of step 13
  # is saved (the periodic one was step 10), and the relaunch starts at 13.
  batches, first, second = _preempt_and_resume(tmp_path / "preempted", preempt_at=12)
  assert first.preempted and int(first.state.step) == 13
  assert second.resumed_from == 13 and not second.preempted
  assert [s for s, _ in _trained(batches.calls[0])] == list(range(13))
  assert [s for s, _ in _trained(batches.calls[1])] == list(range(13, NUM_STEPS))
  seen = _trained(batches.calls[0]) + _trained(batches.calls[1])
  assert seen == _trained(reference_batches.calls[0])
  _assert_same_params(second.state.params, reference.state.params)

  # The comparison can fail: another data order ends elsewhere.
  shuffled = _fit(tmp_path / "shuffled", RecordingBatches(data_seed=1))
  with pytest.raises(AssertionError):
    _assert_same_params(shuffled.state.params, reference.state.params)


def test_sigterm_during_a_checkpoint_step_resumes(tmp_path):
  # SIGTERM while building batch 9: after step 9 the periodic checkpoint of step 10
  # is written and the preemption checkpoint must not try to write step 10 again.
  reference = _fit(tmp_path / "reference", RecordingBatches())
  batches, first, second = _preempt_and_resume(tmp_path / "preempted", preempt_at=9)
  assert first.preempted and int(first.state.step) == 10
  assert second.resumed_from == 10
  seen = _trained(batches.calls[0]) + _trained(batches.calls[1])
  assert [s for s, _ in seen] == list(range(NUM_STEPS))
  _assert_same_params(second.state.params, reference.state.params)
