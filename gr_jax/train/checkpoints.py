"""Orbax checkpointing of the train state.

Orbax writes each checkpoint into a temporary directory and renames it only when
complete, so a process killed mid-save (even with SIGKILL) leaves at worst an
unfinished temporary directory that `latest_step` never returns. We also delete
such leftovers at start-up.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp
from absl import logging


class Checkpointer:
  """Keeps the last `max_to_keep` train states under `directory`."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    os.makedirs(self.directory, exist_ok=True)
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True,
        create=True,
      ),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def delete(self, step: int) -> None:
    self._manager.delete(step)

  def save(self, step: int, state, *, force: bool = False) -> bool:
    saved = self._manager.save(step, args=ocp.args.StandardSave(state), force=force)
    if saved:
      logging.info("checkpoint: saving step %d to %s", step, self.directory)
    return saved

  def restore(self, step: int, abstract_state):
    """Restores `step` with the dtypes, shapes and shardings of `abstract_state`."""
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def restore_params(checkpoint_dir: str, step: int | None = None) -> tuple[dict, int]:
  """Reads params and model_state from another run's checkpoint (host arrays).

  Used to start a stage from the previous stage's weights: the optimizer state is
  not needed and may have another structure, so the tree is read as saved.

  Returns:
    ({'params': ..., 'model_state': ...}, step read).

  Raises:
    FileNotFoundError: no finished checkpoint under `checkpoint_dir`.
  """
  manager = ocp.CheckpointManager(
    os.path.abspath(checkpoint_dir),
    item_handlers=ocp.StandardCheckpointHandler(),
    options=ocp.CheckpointManagerOptions(read_only=True),
  )
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"init checkpoint: no finished checkpoint in '{checkpoint_dir}'")
  # Onto one local device, whatever mesh or process count saved it (orbax refuses the
  # saved shardings under another topology); the caller re-shards.
  metadata = manager.item_metadata(step)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
  restored = manager.restore(step, args=ocp.args.StandardRestore(target))
  manager.close()
  tree = {"params": restored["params"], "model_state": restored.get("model_state", {})}
  return jax.device_get(tree), step
