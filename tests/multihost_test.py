"""Multi-host: jax.distributed set-up from the environment; 2 processes x 4 devices = 1 x 8.

The two-process test runs on localhost with 4 virtual CPU devices per process
(cross-process collectives over gloo), preempts one process only and relaunches.
"""

import os
import re
import signal
import socket
import subprocess
import time

import jax
import numpy as np
import pytest
from conftest import PYTHON, REPO_ROOT, python_env

from gr_jax import distributed, errors
from gr_jax.train import checkpoints, example_task, optim, partitioning, trainer

EXAMPLE_GIN = os.path.join(REPO_ROOT, "gin_configs", "runs", "example_regression.gin")
BINDINGS = (
  "TrainerConfig.num_steps = 300",
  "TrainerConfig.checkpoint_every = 1000",
  "TrainerConfig.log_every = 10",
  "TrainerConfig.progress_bar = False",
  "mesh_shape.data = 4",
  "mesh_shape.model = 2",
)


def test_spec_from_env_explicit():
  spec = distributed.spec_from_env(
    {
      "GR_JAX_COORDINATOR": "10.0.0.1:1234",
      "GR_JAX_NUM_PROCESSES": "4",
      "GR_JAX_PROCESS_ID": "3",
      "GR_JAX_LOCAL_DEVICE_IDS": "0,1",
    }
  )
  assert spec == distributed.DistributedSpec("env", "10.0.0.1:1234", 4, 3, (0, 1))


def test_spec_from_env_auto_slurm_and_off():
  assert distributed.spec_from_env({}) is None
  assert distributed.spec_from_env({"GR_JAX_DISTRIBUTED": "auto"}).source == "auto"
  slurm = {"SLURM_NTASKS": "16", "SLURM_PROCID": "5"}
  assert distributed.spec_from_env(slurm) == distributed.DistributedSpec("slurm")
  assert distributed.spec_from_env({**slurm, "GR_JAX_DISTRIBUTED": "off"}) is None
  # A one-task SLURM job is a single process.
  assert distributed.spec_from_env({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None
  # Nothing to do: maybe_initialize must not touch the (already running) backend.
  assert distributed.maybe_initialize({}) is None


@pytest.mark.parametrize(
  "env, message",
  [
    ({"GR_JAX_COORDINATOR": "h:1"}, "GR_JAX_NUM_PROCESSES, GR_JAX_PROCESS_ID missing"),
    (
      {"GR_JAX_COORDINATOR": "h:1", "GR_JAX_NUM_PROCESSES": "2", "GR_JAX_PROCESS_ID": "2"},
      "GR_JAX_PROCESS_ID=2 must be below GR_JAX_NUM_PROCESSES=2",
    ),
    (
      {"GR_JAX_COORDINATOR": "h", "GR_JAX_NUM_PROCESSES": "2", "GR_JAX_PROCESS_ID": "0"},
      "GR_JAX_COORDINATOR='h': expected 'host:port'",
    ),
    (
      {"GR_JAX_COORDINATOR": "h:1", "GR_JAX_NUM_PROCESSES": "two", "GR_JAX_PROCESS_ID": "0"},
      "GR_JAX_NUM_PROCESSES='two': expected an integer",
    ),
    ({"GR_JAX_DISTRIBUTED": "yes"}, "GR_JAX_DISTRIBUTED='yes': expected 'auto' or 'off'"),
    ({"GR_JAX_DISTRIBUTED": "auto", "GR_JAX_LOCAL_DEVICE_IDS": "0;1"}, "comma-separated"),
  ],
)
def test_spec_from_env_errors(env, message):
  with pytest.raises(errors.DistributedConfigError, match=message):
    distributed.spec_from_env(env)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(workdir, devices, extra_env=None):
  env = python_env()
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env.update(extra_env or {})
  command = [PYTHON, "-m", "gr_jax.main", f"--gin_file={EXAMPLE_GIN}", f"--workdir={workdir}"]
  command += [f"--gin_bindings={b}" for b in BINDINGS]
  return subprocess.Popen(
    command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
  )


def _launch_workers(workdir):
  port = _free_port()
  return [
    _launch(
      workdir,
      4,
      {
        "GR_JAX_COORDINATOR": f"127.0.0.1:{port}",
        "GR_JAX_NUM_PROCESSES": "2",
        "GR_JAX_PROCESS_ID": str(process_id),
      },
    )
    for process_id in range(2)
  ]


def _wait_for_line(process, text, timeout=240):
  """Reads the process's output until a line holds `text`; returns what it read."""
  lines, deadline = [], time.time() + timeout
  while time.time() < deadline:
    line = process.stdout.readline().decode()
    if not line and process.poll() is not None:
      break
    lines.append(line)
    if text in line:
      return "".join(lines)
  raise AssertionError(f"no '{text}' in the output:\n{''.join(lines)[-4000:]}")


@pytest.mark.slow
def test_two_processes_preempted_and_resumed_train_like_one(tmp_path):
  """2 processes x 4 devices, SIGTERM to process 0 only, relaunch = 1 process x 8."""
  workers = _launch_workers(tmp_path / "multi")
  head = _wait_for_line(workers[0], "] step 50:")
  workers[0].send_signal(signal.SIGTERM)
  outputs = [head + workers[0].communicate(timeout=240)[0].decode()]
  outputs.append(workers[1].communicate(timeout=240)[0].decode())
  for process, out in zip(workers, outputs):
    assert process.returncode == 0, out[-4000:]
  assert "process 0 of 2, 4 local / 8 global devices" in outputs[0]
  assert "process 1 of 2, 4 local / 8 global devices" in outputs[1]
  # Both processes stopped after the same step and saved it together.
  stopped = [int(re.search(r"SIGTERM: saving step (\d+)", out).group(1)) for out in outputs]
  assert stopped[0] == stopped[1] and 50 <= stopped[0] < 300
  _, saved_step = checkpoints.restore_params(str(tmp_path / "multi" / "checkpoints"))
  assert saved_step == stopped[0]

  workers = _launch_workers(tmp_path / "multi")
  outputs = [p.communicate(timeout=240)[0].decode() for p in workers]
  for process, out in zip(workers, outputs):
    assert process.returncode == 0, out[-4000:]
    assert f"step {stopped[0]}" in out and "resuming from" in out

  multi, multi_step = checkpoints.restore_params(str(tmp_path / "multi" / "checkpoints"))
  assert multi_step == 300
  want = _single_process_params(tmp_path / "single")
  for a, b in zip(jax.tree.leaves(multi["params"]), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _single_process_params(workdir):
  """The same run (BINDINGS over runs/example_regression.gin) in this process, 8 devices."""
  assert jax.device_count() == 8 and jax.process_count() == 1
  config = trainer.TrainerConfig(
    num_steps=300, checkpoint_every=1000, log_every=10, progress_bar=False
  )
  schedule = optim.make_schedule(total_steps=300, learning_rate=3e-3, warmup_steps=10)
  runner = trainer.Trainer(
    example_task.RegressionTask(),
    str(workdir),
    config=config,
    mesh=partitioning.make_mesh((4, 1, 2)),
    schedule=schedule,
  )
  result = runner.fit(example_task.regression_batches())
  runner.close()
  return jax.device_get(result.state.params)
