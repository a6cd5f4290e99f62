"""Every gin binding a user writes takes effect or stops the run with a named error."""

import os
import re
import subprocess

import gin
import pytest
from absl import logging as absl_logging
from conftest import PYTHON, REPO_ROOT, python_env

from gr_jax import errors, gin_utils, main, validation
from gr_jax.data.world import simulator
from gr_jax.models import decoder

EXAMPLE = ["runs/example_regression.gin"]
TINY_RUN = ["TrainerConfig.num_steps = 2", "TrainerConfig.progress_bar = False"]


@pytest.fixture(autouse=True)
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.mark.parametrize(
  "binding, instead",
  [
    ("WorldConfig.title_noise = 0.5", "prepare_data.overrides"),
    ("DecoderConfig.num_layers = 24", "train_sft.model_overrides"),
  ],
)
def test_preset_built_configs_take_no_bindings(binding, instead):
  with pytest.raises(errors.GinConfigError, match=f"takes no gin bindings: .*{instead}"):
    gin_utils.parse(["runs/data.gin"], [binding])


@pytest.mark.parametrize("name", simulator.PRESET_NAMES)
def test_world_file_chooses_its_preset_after_the_run_file(name):
  gin_utils.parse(["runs/data.gin", f"data/world_{name}.gin"], [])
  assert gin.query_parameter("prepare_data.source") == "world"
  assert gin.query_parameter("prepare_data.preset") == name


@pytest.mark.parametrize("name", sorted(decoder.PRESETS))
def test_model_file_chooses_the_generator_after_the_run_file(name):
  gin_utils.parse(["runs/sft.gin", f"model/{name}.gin"], [])
  assert gin.query_parameter("train_sft.model") == name
  decoder.decoder_preset(name, vocab_size=100)  # a preset that exists


def test_binding_the_job_overrides_is_an_error_after_the_run(tmp_path):
  # The trainer passes make_schedule's total_steps itself (TrainerConfig.num_steps).
  with pytest.raises(errors.GinConfigError, match=r"make_schedule.total_steps had no effect"):
    gin_utils.run_in_process(tmp_path, EXAMPLE, [*TINY_RUN, "make_schedule.total_steps = 7"])


def test_binding_of_a_configurable_the_job_never_calls_is_named(tmp_path, monkeypatch):
  warnings = []
  monkeypatch.setattr(absl_logging, "warning", lambda msg, *args: warnings.append(msg % args))
  gin_utils.run_in_process(tmp_path, EXAMPLE, [*TINY_RUN, "evaluate.max_requests = 5"])
  assert any("did not use: evaluate.max_requests" in w for w in warnings), warnings


def test_job_set_value_is_refused_before_the_run():
  gin_utils.parse(
    ["runs/sft.gin"], ["train_sft.tokenizer = 'cq_sid'", "TrainerConfig.num_steps = 5"]
  )
  with pytest.raises(
    errors.GinConfigError, match=r"TrainerConfig.num_steps: .*train_sft.stage_steps"
  ):
    validation.check_combinations()


def test_gin_dot_flags_become_bindings():
  argv = ["main", "--gin.TrainerConfig.num_steps=3", "--gin.train_sft.model='tiny'", "--workdir=w"]
  assert main.rewrite_gin_args(argv) == [
    "main",
    "--gin_bindings=TrainerConfig.num_steps = 3",
    "--gin_bindings=train_sft.model = 'tiny'",
    "--workdir=w",
  ]


def test_normal_run_with_an_include_and_a_gin_dot_flag_logs_no_errors(tmp_path):
  run_file = tmp_path / "run.gin"
  run_file.write_text("include 'runs/example_regression.gin'\nTrainerConfig.progress_bar = False\n")
  work = tmp_path / "work"
  proc = subprocess.run(
    [PYTHON, "-m", "gr_jax.main", f"--gin_file={run_file}", f"--workdir={work}"]
    + ["--gin.TrainerConfig.num_steps=2"],
    env=python_env(),
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  error_lines = [ln for ln in proc.stderr.splitlines() if re.match(r"(E\d{4} |ERROR|error:)", ln)]
  assert not error_lines, error_lines
  operative = (work / "operative_config.gin").read_text()
  assert "TrainerConfig.num_steps = 2" in operative
  assert os.path.exists(work / "checkpoints")
