"""An installed (non-editable) gr_jax finds its gin configs without the checkout."""

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest
from conftest import REPO_ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """The wheel built from a copy of the sources, unpacked as pip would install it."""
  tmp = tmp_path_factory.mktemp("wheel")
  source = tmp / "source"
  for folder in ("gr_jax", "gin_configs"):
    shutil.copytree(
      os.path.join(REPO_ROOT, folder), source / folder, ignore=shutil.ignore_patterns("__pycache__")
    )
  for name in ("setup.py", "pyproject.toml"):
    shutil.copy(os.path.join(REPO_ROOT, name), source / name)
  subprocess.run(
    [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "."]
    + ["-w", str(tmp / "dist")],
    cwd=source,
    check=True,
    capture_output=True,
  )
  (wheel,) = (tmp / "dist").iterdir()
  site = tmp / "site"
  with zipfile.ZipFile(wheel) as archive:
    archive.extractall(site)
  return site


def test_wheel_carries_every_gin_config(installed):
  shipped = {
    os.path.relpath(os.path.join(folder, name), installed / "gr_jax" / "gin_configs")
    for folder, _, names in os.walk(installed / "gr_jax" / "gin_configs")
    for name in names
  }
  in_checkout = {
    os.path.relpath(os.path.join(folder, name), os.path.join(REPO_ROOT, "gin_configs"))
    for folder, _, names in os.walk(os.path.join(REPO_ROOT, "gin_configs"))
    for name in names
  }
  assert "runs/sft.gin" in shipped and shipped == in_checkout


def test_installed_package_parses_a_run_with_includes(installed, tmp_path):
  # Run from an empty directory, with the unpacked wheel (not the checkout) on the path.
  code = """
    import gin, gr_jax
    from gr_jax import gin_utils
    assert gr_jax.__file__.startswith({site!r}), gr_jax.__file__
    gin_utils.parse(["runs/amazon_evaluate.gin", "gin_configs/model/tiny.gin"], [])
    print(gin_utils.CONFIG_DIR)
  """
  env = {**os.environ, "PYTHONPATH": str(installed)}
  result = subprocess.run(
    [sys.executable, "-c", textwrap.dedent(code.format(site=str(installed)))],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == str(installed / "gr_jax" / "gin_configs")
