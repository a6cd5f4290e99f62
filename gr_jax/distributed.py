"""Multi-host start-up: `jax.distributed.initialize` when the environment asks for it.

Every entry point calls `maybe_initialize()` before anything touches a JAX backend.
The launchers (launch/tpu_vm.sh, launch/slurm.sh) say how many processes there are
through the environment, so that no other code cares how many hosts run:

  GR_JAX_COORDINATOR=host:port GR_JAX_NUM_PROCESSES=N GR_JAX_PROCESS_ID=i
      explicit set-up (any cluster, or several processes on one machine);
      GR_JAX_LOCAL_DEVICE_IDS=0,1 optionally restricts the process to those devices.
  GR_JAX_DISTRIBUTED=auto
      let JAX detect the cluster (Cloud TPU pod slices, SLURM, Open MPI, GKE).
  GR_JAX_DISTRIBUTED=off
      never initialise (e.g. a single-task job inside a SLURM allocation).

With none of these, a SLURM job step of more than one task (srun -n N>1) is
detected from SLURM_NTASKS and initialised automatically; anything else runs as
a single process and nothing is called.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import jax
from absl import logging

from gr_jax import errors

ENV_COORDINATOR = "GR_JAX_COORDINATOR"
ENV_NUM_PROCESSES = "GR_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "GR_JAX_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "GR_JAX_LOCAL_DEVICE_IDS"
ENV_MODE = "GR_JAX_DISTRIBUTED"

_EXPLICIT = (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID)


@dataclasses.dataclass(frozen=True)
class DistributedSpec:
  """How to call `jax.distributed.initialize` (None fields: JAX detects them).

  Attributes:
    source: what asked for it ('env', 'auto', 'slurm').
    coordinator_address: 'host:port' of process 0's coordinator service.
    num_processes: processes in the job.
    process_id: this process, in [0, num_processes).
    local_device_ids: devices this process may use (None: all it sees).
  """

  source: str
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None


def spec_from_env(environ: Mapping[str, str] | None = None) -> DistributedSpec | None:
  """Reads the multi-host set-up from the environment (see the module docstring).

  Args:
    environ: the environment to read (default: os.environ).

  Returns:
    The spec, or None for a single-process run.

  Raises:
    errors.DistributedConfigError: a partial or malformed explicit set-up, or an unknown mode.
  """
  env = os.environ if environ is None else environ
  mode = env.get(ENV_MODE, "").strip().lower()
  if mode not in ("", "auto", "off"):
    raise errors.DistributedConfigError(f"{ENV_MODE}={env[ENV_MODE]!r}: expected 'auto' or 'off'")
  if mode == "off":
    return None
  given = [name for name in _EXPLICIT if env.get(name)]
  if given:
    missing = [name for name in _EXPLICIT if name not in given]
    if missing:
      raise errors.DistributedConfigError(
        f"multi-host set-up: {', '.join(given)} given but {', '.join(missing)} missing"
      )
    num_processes = _int_env(env, ENV_NUM_PROCESSES, minimum=1)
    process_id = _int_env(env, ENV_PROCESS_ID, minimum=0)
    if process_id >= num_processes:
      raise errors.DistributedConfigError(
        f"{ENV_PROCESS_ID}={process_id} must be below {ENV_NUM_PROCESSES}={num_processes}"
      )
    coordinator = env[ENV_COORDINATOR].strip()
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
      raise errors.DistributedConfigError(
        f"{ENV_COORDINATOR}={coordinator!r}: expected 'host:port'"
      )
    return DistributedSpec(
      "env", coordinator, num_processes, process_id, _device_ids(env.get(ENV_LOCAL_DEVICE_IDS))
    )
  if mode == "auto":
    return DistributedSpec("auto", local_device_ids=_device_ids(env.get(ENV_LOCAL_DEVICE_IDS)))
  if int(env.get("SLURM_NTASKS", "1") or "1") > 1 and "SLURM_PROCID" in env:
    return DistributedSpec("slurm")
  return None


def maybe_initialize(environ: Mapping[str, str] | None = None) -> DistributedSpec | None:
  """Initialises the JAX distributed runtime when the environment asks for it.

  Must run before any JAX computation or device query.

  Args:
    environ: the environment to read (default: os.environ).

  Returns:
    The spec used, or None when the run is single-process (nothing was called).

  Raises:
    errors.DistributedConfigError: see `spec_from_env`.
  """
  spec = spec_from_env(environ)
  if spec is None:
    return None
  jax.distributed.initialize(
    coordinator_address=spec.coordinator_address,
    num_processes=spec.num_processes,
    process_id=spec.process_id,
    local_device_ids=list(spec.local_device_ids) if spec.local_device_ids else None,
  )
  logging.info(
    "jax.distributed (%s): process %d of %d, %d local / %d global devices",
    spec.source,
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return spec


def _int_env(env: Mapping[str, str], name: str, minimum: int) -> int:
  try:
    value = int(env[name])
  except ValueError as e:
    raise errors.DistributedConfigError(f"{name}={env[name]!r}: expected an integer") from e
  if value < minimum:
    raise errors.DistributedConfigError(f"{name}={value}: must be at least {minimum}")
  return value


def _device_ids(text: str | None) -> tuple[int, ...] | None:
  if not text:
    return None
  try:
    return tuple(int(part) for part in text.split(","))
  except ValueError as e:
    raise errors.DistributedConfigError(
      f"{ENV_LOCAL_DEVICE_IDS}={text!r}: expected comma-separated integers"
    ) from e
