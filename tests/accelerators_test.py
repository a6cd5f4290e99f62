"""Accelerator installs: the lock files, the lock each GR_JAX_ACCELERATOR picks, the stamp."""

import importlib.metadata
import os
import shutil
import subprocess

import pytest
from conftest import REPO_ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCKS = {
  "cpu": "requirements.lock",
  "cuda12": "requirements-cuda12.lock",
  "tpu": "requirements-tpu.lock",
}
ACCELERATOR_PACKAGES = ("jax-cuda", "libtpu", "nvidia-")


def _pins(path: str) -> dict[str, str]:
  """{canonical name: version} of a lock file, its `-r` includes followed."""
  pins = {}
  with open(path) as f:
    for line in f:
      line = line.split("#", 1)[0].strip()
      if line.startswith("-r "):
        included = _pins(os.path.join(os.path.dirname(path), line[3:].strip()))
        assert not included.keys() & pins.keys(), f"{path}: pinned twice"
        pins.update(included)
      elif line:
        name, version = line.split("==")
        assert canonicalize_name(name) not in pins, f"{path}: {name} pinned twice"
        pins[canonicalize_name(name)] = version
  return pins


def test_cpu_lock_holds_no_accelerator_package():
  pins = _pins(os.path.join(REPO_ROOT, LOCKS["cpu"]))
  assert not [n for n in pins if n.startswith(ACCELERATOR_PACKAGES)]
  # The jax whose metadata the accelerator locks are checked against is the locked one.
  assert importlib.metadata.version("jax") == pins["jax"] == pins["jaxlib"]


@pytest.mark.parametrize("accelerator", ["cuda12", "tpu"])
def test_accelerator_lock_is_the_cpu_lock_plus_what_jax_asks_for(accelerator):
  cpu = _pins(os.path.join(REPO_ROOT, LOCKS["cpu"]))
  pins = _pins(os.path.join(REPO_ROOT, LOCKS[accelerator]))
  added = {n: v for n, v in pins.items() if n not in cpu}
  assert {n: v for n, v in pins.items() if n in cpu} == cpu
  assert added and all(n.startswith(ACCELERATOR_PACKAGES) for n in added)
  # Every requirement of jax's own extra (`pip install 'jax[cuda12]'`) is pinned, satisfied.
  wanted = [Requirement(r) for r in importlib.metadata.requires("jax")]
  wanted = [r for r in wanted if r.marker and r.marker.evaluate({"extra": accelerator})]
  assert wanted
  for requirement in wanted:
    name = canonicalize_name(requirement.name)
    assert name in pins and requirement.specifier.contains(pins[name]), requirement
  if accelerator == "cuda12":  # the plugin and its PJRT library come from one jax release
    assert pins["jax-cuda12-pjrt"] == pins["jax-cuda12-plugin"] == pins["jax"]


def _choose(accelerator: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    ["bash", "-c", 'source launch/_lock.sh && lock_for_accelerator "$1"', "-", accelerator],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
  )


@pytest.mark.parametrize("accelerator", sorted(LOCKS))
def test_each_accelerator_picks_its_lock(accelerator):
  result = _choose(accelerator)
  assert result.returncode == 0 and result.stdout.strip() == LOCKS[accelerator]
  assert os.path.isfile(os.path.join(REPO_ROOT, LOCKS[accelerator]))


def test_unknown_accelerator_is_one_error_line():
  result = _choose("rocm")
  assert result.returncode == 2 and result.stdout == ""
  assert result.stderr.splitlines() == [
    "error: GR_JAX_ACCELERATOR='rocm' is not one of cpu, cuda12, tpu"
  ]


def test_venv_installs_the_chosen_lock_once_and_refuses_a_switch(tmp_path):
  # A copy of the install files, with a .venv whose python only records what pip is asked.
  repo = tmp_path / "repo"
  for name in ("launch/_venv.sh", "launch/_lock.sh", "setup.py", *LOCKS.values()):
    (repo / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(os.path.join(REPO_ROOT, name), repo / name)
  calls = tmp_path / "calls.txt"
  python = repo / ".venv" / "bin" / "python"
  python.parent.mkdir(parents=True)
  python.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
  python.chmod(0o755)

  def venv(accelerator):
    env = {**os.environ, "PYTHON_BIN": str(python), "GR_JAX_ACCELERATOR": accelerator}
    script = repo / "launch" / "_venv.sh"
    return subprocess.run(["bash", script], env=env, capture_output=True, text=True)

  assert venv("cuda12").returncode == 0
  installs = calls.read_text().splitlines()
  assert "-m pip install -q --no-deps -r requirements-cuda12.lock" in installs
  assert installs[-1] == "-m pip install -q --no-deps --no-build-isolation -e ."
  assert (repo / ".venv" / ".gr_jax_installed").read_text().startswith("cuda12 ")
  assert venv("cuda12").returncode == 0
  assert calls.read_text().splitlines() == installs  # installed: only the stamp is read
  switched = venv("cpu")
  assert switched.returncode == 2 and len(switched.stderr.splitlines()) == 1
  assert switched.stderr.startswith("error: .venv holds the cuda12 packages")
  unknown = venv("gpu")
  assert unknown.returncode == 2 and unknown.stderr.startswith("error: GR_JAX_ACCELERATOR='gpu'")
  assert calls.read_text().splitlines() == installs
