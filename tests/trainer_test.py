"""The generic trainer: sharding, resume after kill -9, SIGTERM, checkpoint safety."""

import json
import os
import signal
import subprocess
import time

import gin
import jax
import numpy as np
import pytest
from conftest import PYTHON, REPO_ROOT, python_env

from gr_jax.train import checkpoints, example_task, partitioning, trainer

GIN = os.path.join(REPO_ROOT, "gin_configs", "runs", "example_regression.gin")


def _fit(workdir, mesh, num_steps=30, **cfg):
  config = trainer.TrainerConfig(
    num_steps=num_steps, log_every=10, progress_bar=False, checkpoint_every=1000, **cfg
  )
  runner = trainer.Trainer(example_task.RegressionTask(), str(workdir), config=config, mesh=mesh)
  result = runner.fit(example_task.regression_batches(batch_size=32))
  runner.close()
  return result


def test_sharded_training_matches_single_device(tmp_path):
  assert jax.device_count() == 8
  single = _fit(tmp_path / "single", partitioning.make_mesh((1, 1, 1)))
  sharded = _fit(tmp_path / "sharded", partitioning.make_mesh((4, 1, 2)))
  for a, b in zip(jax.tree.leaves(single.state.params), jax.tree.leaves(sharded.state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5)
  # The rules put 'embed' on fsdp (size 1 here) and 'mlp' on model: w1 [in, hidden]
  # is split over 'model' on its hidden axis, and so is Adam's moment of it.
  w1 = sharded.state.params["w1"]
  assert w1.sharding.spec == jax.sharding.PartitionSpec("fsdp", "model")
  assert len({s.data.shape for s in w1.addressable_shards}) == 1
  assert w1.addressable_shards[0].data.shape == (16, 32)
  mu = sharded.state.opt_state[1][0].mu["w1"]
  assert mu.sharding.spec == jax.sharding.PartitionSpec("fsdp", "model")
  assert sharded.last_metrics["loss"] < 1.0


def test_eval_hook_runs_once_per_evaluated_step_including_the_last(tmp_path):
  """eval_every dividing num_steps: the last step's periodic evaluation is the final one."""
  calls = []

  def eval_fn(state, step):
    calls.append(step)
    return {"step_seen": float(step)}

  config = trainer.TrainerConfig(
    num_steps=20, log_every=10, progress_bar=False, checkpoint_every=1000, eval_every=10
  )
  mesh = partitioning.make_mesh((1, 1, 1))
  runner = trainer.Trainer(example_task.RegressionTask(), str(tmp_path), config=config, mesh=mesh)
  result = runner.fit(example_task.regression_batches(batch_size=32), eval_fn=eval_fn)
  runner.close()
  assert calls == [10, 20]
  assert result.last_metrics["eval/step_seen"] == 20.0
  config = trainer.TrainerConfig(
    num_steps=25, log_every=10, progress_bar=False, checkpoint_every=1000, eval_every=10
  )
  calls.clear()
  runner = trainer.Trainer(
    example_task.RegressionTask(), str(tmp_path / "other"), config=config, mesh=mesh
  )
  runner.fit(example_task.regression_batches(batch_size=32), eval_fn=eval_fn)
  runner.close()
  assert calls == [10, 20, 25]


def test_partitioning_rejects_bad_mesh():
  with pytest.raises(ValueError, match="does not divide"):
    partitioning.mesh_shape(data=3, fsdp=1, model=1)
  with pytest.raises(ValueError, match="at most one axis"):
    partitioning.mesh_shape(data=-1, fsdp=-1, model=1)


def test_mesh_from_gin_shape_has_auto_axes_over_every_device():
  gin.clear_config()
  gin.parse_config("mesh_shape.fsdp = 2\nmesh_shape.model = 2")
  try:
    mesh = partitioning.make_mesh()
  finally:
    gin.clear_config()
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "model": 2}
  assert mesh.axis_names == partitioning.MESH_AXES
  # Auto axes: shardings follow the logical rules (jax.make_mesh defaults to Explicit).
  assert set(mesh.axis_types) == {jax.sharding.AxisType.Auto}
  assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices())
  small = partitioning.make_mesh((2, 1, 1))
  assert dict(small.shape) == {"data": 2, "fsdp": 1, "model": 1}
  assert set(small.devices.flat) <= set(jax.devices())


def _launch(workdir, *bindings):
  cmd = [PYTHON, "-m", "gr_jax.main", f"--gin_file={GIN}", f"--workdir={workdir}"]
  cmd += [f"--gin_bindings={b}" for b in bindings]
  return subprocess.Popen(
    cmd, env=python_env(), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
  )


def _finished_steps(ckpt_dir):
  if not os.path.isdir(ckpt_dir):
    return []
  return sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())


def _wait_for_step(ckpt_dir, min_step, proc, timeout=120):
  deadline = time.time() + timeout
  while time.time() < deadline:
    steps = _finished_steps(ckpt_dir)
    if steps and steps[-1] >= min_step:
      return steps[-1]
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    time.sleep(0.05)
  raise AssertionError("run did not reach the checkpoint in time")


def _final_params(workdir):
  tree, step = checkpoints.restore_params(os.path.join(workdir, "checkpoints"))
  return tree["params"], step


SLOW_RUN = ("TrainerConfig.num_steps = 1500", "TrainerConfig.checkpoint_every = 50")


@pytest.mark.slow
def test_kill9_then_resume_equals_uninterrupted(tmp_path):
  reference = tmp_path / "reference"
  proc = _launch(reference, *SLOW_RUN)
  assert proc.wait(timeout=300) == 0, proc.stdout.read().decode()[-3000:]

  interrupted = tmp_path / "interrupted"
  proc = _launch(interrupted, *SLOW_RUN)
  _wait_for_step(interrupted / "checkpoints", 300, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = _finished_steps(interrupted / "checkpoints")[-1]
  assert killed_at < 1500
  proc = _launch(interrupted, *SLOW_RUN)
  out = proc.communicate(timeout=300)[0].decode()
  assert proc.returncode == 0, out[-3000:]
  assert "resuming from" in out

  want, want_step = _final_params(reference)
  got, got_step = _final_params(interrupted)
  assert want_step == got_step == 1500
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_kill9_during_checkpoint_writes_never_breaks_latest(tmp_path):
  workdir = tmp_path / "run"
  ckpt_dir = workdir / "checkpoints"
  # Saving every step keeps a write in flight almost all the time.
  bindings = ("TrainerConfig.num_steps = 100000", "TrainerConfig.checkpoint_every = 1")
  rng = np.random.default_rng(0)
  for _ in range(3):
    proc = _launch(workdir, *bindings)
    start = max(_finished_steps(ckpt_dir) or [0])
    _wait_for_step(ckpt_dir, start + 3, proc)
    time.sleep(float(rng.uniform(0.0, 0.3)))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    tree, step = _final_params(workdir)
    assert step >= start + 3
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(tree))


@pytest.mark.slow
def test_sigterm_saves_a_restorable_checkpoint(tmp_path):
  workdir = tmp_path / "run"
  bindings = ("TrainerConfig.num_steps = 100000", "TrainerConfig.checkpoint_every = 100000")
  proc = _launch(workdir, *bindings)
  # Wait until the loop runs (TensorBoard dir appears once fit() starts), then preempt.
  deadline = time.time() + 120
  while not (workdir / "tb").exists() and time.time() < deadline:
    time.sleep(0.05)
  time.sleep(2.0)
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=120)[0].decode()
  assert proc.returncode == 0, out[-3000:]
  assert "SIGTERM" in out
  tree, step = _final_params(workdir)
  assert 0 < step < 100000
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(tree))
  assert json.loads((workdir / "metrics.json").read_text())["preempted"] is True


def test_init_checkpoint_starts_from_other_run(tmp_path):
  mesh = partitioning.make_mesh((8, 1, 1))
  first = _fit(tmp_path / "first", mesh, num_steps=20)
  # Zero steps: the state is exactly what decision 2 (init_checkpoint) loaded.
  second = _fit(
    tmp_path / "second", mesh, num_steps=0, init_checkpoint=str(tmp_path / "first" / "checkpoints")
  )
  fresh = _fit(tmp_path / "fresh", mesh, num_steps=0)
  a = np.asarray(first.state.params["w2"])
  np.testing.assert_array_equal(np.asarray(second.state.params["w2"]), a)
  assert not np.allclose(np.asarray(fresh.state.params["w2"]), a, atol=1e-4)
  assert int(second.state.step) == 0
