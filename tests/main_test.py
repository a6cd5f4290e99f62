"""The entry point turns user mistakes into one clear line (exit status 2)."""

import os
import subprocess

from conftest import PYTHON, REPO_ROOT, python_env


def _run(*args):
  proc = subprocess.run(
    [PYTHON, "-m", "gr_jax.main", *args],
    env=python_env(),
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  return proc.returncode, proc.stderr


def test_missing_gin_file(tmp_path):
  rc, err = _run("--gin_file=does/not/exist.gin", f"--workdir={tmp_path}")
  assert rc == 2
  assert "error: gin file 'does/not/exist.gin': cannot be read" in err
  assert "Traceback" not in err


def test_unknown_binding(tmp_path):
  rc, err = _run(
    "--gin_file=runs/example_regression.gin",
    "--gin_bindings=TrainerConfig.no_such_knob = 3",
    f"--workdir={tmp_path}",
  )
  assert rc == 2
  assert "error: gin binding 'TrainerConfig.no_such_knob = 3'" in err
  assert "no_such_knob" in err and "Traceback" not in err


def test_bad_gin_syntax(tmp_path):
  bad = tmp_path / "bad.gin"
  bad.write_text("run.job = @train_example\nTrainerConfig.num_steps = = 3\n")
  rc, err = _run(f"--gin_file={bad}", f"--workdir={tmp_path / 'w'}")
  assert rc == 2
  assert f"error: gin file '{bad}'" in err and "Traceback" not in err


def test_missing_required_value(tmp_path):
  cfg = tmp_path / "no_job.gin"
  cfg.write_text("TrainerConfig.num_steps = 3\n")
  rc, err = _run(f"--gin_file={cfg}", f"--workdir={tmp_path / 'w'}")
  assert rc == 2
  assert "error: gin: missing required value(s) ['job'] of 'run'" in err
  assert "Traceback" not in err


def test_missing_workdir_and_bad_flag(tmp_path):
  rc, err = _run("--gin_file=runs/example_regression.gin")
  assert rc == 2 and "error: flag --workdir is required" in err
  rc, err = _run("--no_such_flag=1", f"--workdir={tmp_path}")
  assert rc != 0 and "no_such_flag" in err and "Traceback" not in err


def test_example_run_writes_metrics_and_config(tmp_path):
  rc, err = _run(
    "--gin_file=runs/example_regression.gin",
    "--gin_bindings=TrainerConfig.num_steps = 20",
    f"--workdir={tmp_path}",
  )
  assert rc == 0, err[-2000:]
  assert os.path.exists(tmp_path / "metrics.json")
  assert "TrainerConfig.num_steps = 20" in (tmp_path / "operative_config.gin").read_text()
