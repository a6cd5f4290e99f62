"""Shared test set-up: 8 virtual CPU devices and quiet TensorFlow."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  ).strip()

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_env() -> dict:
  """Environment for subprocesses that run gr_jax entry points."""
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env["PYTHONUNBUFFERED"] = "1"
  return env


PYTHON = sys.executable
