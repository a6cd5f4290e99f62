"""Cloud TPU VM and SLURM launchers: the dry runs print the commands they would run."""

import os
import shlex
import shutil
import subprocess

import pytest
from conftest import REPO_ROOT

TPU_VM = os.path.join(REPO_ROOT, "launch", "tpu_vm.sh")
SLURM = os.path.join(REPO_ROOT, "launch", "slurm.sh")
JOB_ARGS = [
  "--gin_file=runs/sft.gin",
  "--gin_bindings=train_sft.stages = ('i2sid', 'q2sid')",
  "--gin_bindings=train_rl.name = 'k2 run'",
  "--workdir=/shared/work dir/run",
]


def _bash(*args, check=True):
  return subprocess.run(["bash", *args], capture_output=True, text=True, check=check)


def test_tpu_vm_dry_run_runs_the_job_on_every_worker():
  out = _bash(TPU_VM, "--tpu=pod-1", "--zone=us-central2-b", "--dry_run", "--", *JOB_ARGS).stdout
  lines = out.strip().splitlines()
  assert len(lines) == 1
  argv = shlex.split(lines[0])
  assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod-1"]
  assert "--zone=us-central2-b" in argv and "--worker=all" in argv
  assert not any(a.startswith("--project") for a in argv)
  remote = shlex.split([a for a in argv if a.startswith("--command=")][0][len("--command=") :])
  assert remote[:3] == ["cd", "gr_jax", "&&"]
  assert "GR_JAX_DISTRIBUTED=auto" in remote
  python_at = remote.index(".venv/bin/python")
  assert remote[python_at:] == [".venv/bin/python", "-m", "gr_jax.main", *JOB_ARGS]


def test_tpu_vm_dry_run_sync_copies_and_installs_first():
  out = _bash(
    TPU_VM,
    "--tpu=pod-1",
    "--zone=z",
    "--project=my-proj",
    "--remote_dir=code/gr",
    "--sync",
    "--dry_run",
    "--",
    "--workdir=/w",
  ).stdout
  commands = [shlex.split(line) for line in out.strip().splitlines()]
  assert [c[0] for c in commands] == ["tar", "gcloud", "gcloud", "gcloud"]
  assert "--exclude=.venv" in commands[0] and commands[0][commands[0].index("-C") + 1] == REPO_ROOT
  assert commands[1][:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
  assert "--worker=all" in commands[1] and "--project=my-proj" in commands[1]
  setup = [a for a in commands[2] if a.startswith("--command=")][0]
  assert "tar -xzf gr_jax.tar.gz -C code/gr" in setup
  assert "GR_JAX_ACCELERATOR=tpu bash code/gr/launch/_venv.sh" in setup
  assert "cd code/gr &&" in [a for a in commands[3] if a.startswith("--command=")][0]


def test_slurm_dry_run_prints_the_batch_script():
  out = _bash(
    SLURM,
    "--nodes=2",
    "--gpus_per_node=4",
    "--partition=a100",
    "--time=01:30:00",
    "--requeue",
    "--log_dir=/logs",
    "--dry_run",
    "--",
    *JOB_ARGS,
  ).stdout
  lines = out.splitlines()
  assert lines[0] == "#!/usr/bin/env bash"
  directives = [line for line in lines if line.startswith("#SBATCH")]
  for expected in (
    "--nodes=2",
    "--ntasks-per-node=4",
    "--gpus-per-node=4",
    "--partition=a100",
    "--time=01:30:00",
    "--requeue",
    "--signal=TERM@300",
    "--output=/logs/%x-%j.out",
  ):
    assert f"#SBATCH {expected}" in directives
  assert not any("--account" in d for d in directives)
  assert "export GR_JAX_DISTRIBUTED=auto TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1" in lines
  srun = shlex.split([line for line in lines if line.startswith("srun ")][0])
  python = os.path.join(REPO_ROOT, ".venv", "bin", "python")
  assert srun == ["srun", "--kill-on-bad-exit=1", python, "-m", "gr_jax.main", *JOB_ARGS]
  # The checkout's .venv gets the CUDA 12 lock before the job is submitted.
  venv_sh = os.path.join(REPO_ROOT, "launch", "_venv.sh")
  assert shlex.split(lines[-2]) == ["env", "GR_JAX_ACCELERATOR=cuda12", "bash", venv_sh]
  assert lines[-1] == "sbatch /logs/gr_jax.sbatch"


def test_slurm_installs_the_chosen_lock_unless_given_a_python():
  def installs(*options):
    out = _bash(SLURM, *options, "--dry_run", "--", "--workdir=w").stdout
    return [shlex.split(line) for line in out.splitlines() if line.endswith("_venv.sh")]

  venv_sh = os.path.join(REPO_ROOT, "launch", "_venv.sh")
  assert installs("--accelerator=cpu") == [["env", "GR_JAX_ACCELERATOR=cpu", "bash", venv_sh]]
  assert installs("--python=/opt/env/bin/python") == []


def test_slurm_script_is_valid_bash():
  out = _bash(SLURM, "--dry_run", "--", *JOB_ARGS).stdout
  script = out[: out.rindex("sbatch ")]
  subprocess.run(["bash", "-n"], input=script, text=True, check=True)


@pytest.mark.parametrize(
  "script, args, message",
  [
    (SLURM, ["--nodes=0", "--", "--workdir=w"], "--nodes must be a positive integer"),
    (SLURM, ["--gpus=8", "--", "--workdir=w"], "unknown option '--gpus=8'"),
    (SLURM, ["--dry_run"], "no job arguments"),
    (SLURM, ["--accelerator=rocm", "--", "--workdir=w"], "--accelerator='rocm' is not one of"),
    (TPU_VM, ["--tpu=t", "--", "--workdir=w"], "--tpu and --zone are required"),
    (TPU_VM, ["--tpu=t", "--zone=z"], "no job arguments"),
  ],
)
def test_launchers_reject_bad_options(script, args, message):
  result = _bash(script, *args, check=False)
  assert result.returncode == 2
  assert message in result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_launchers_are_shellcheck_clean():
  subprocess.run(["shellcheck", TPU_VM, SLURM], check=True, capture_output=True)
