"""Sweep runner: spec parsing, resumable parallel trials, SIGTERM + resume, aggregation."""

import glob
import json
import os
import shlex
import signal
import subprocess
import textwrap
import time

import pytest
from conftest import PYTHON, REPO_ROOT, python_env

from gr_jax import sweep

EXAMPLE_GIN = os.path.join(REPO_ROOT, "gin_configs", "runs", "example_regression.gin")
SWEEP_CLI = os.path.join(REPO_ROOT, "launch", "sweep.py")


def _write(path, text):
  path.write_text(textwrap.dedent(text))
  return str(path)


def test_spec_expands_seeds_and_substitutes(tmp_path):
  path = _write(
    tmp_path / "s.toml",
    f"""
    [sweep]
    gin_files = ["{EXAMPLE_GIN}"]
    gin_bindings = ["train_rl.name = '{{trial}}'"]
    seeds = [3, 5]
    seed_bindings = ["train_rl.seed = {{seed}}"]

    [[trial]]
    name = "k0"
    gin_files = ["rl/grpo_k0.gin"]
    gin_bindings = ["EgGrpoConfig.kl_weight = 0.5"]

    [[trial]]
    name = "k2"
    """,
  )
  spec = sweep.load_spec(path)
  assert [t.name for t in spec.trials] == ["k0_seed3", "k0_seed5", "k2_seed3", "k2_seed5"]
  first = spec.trials[0]
  assert (first.base, first.seed) == ("k0", 3)
  assert first.gin_files == (EXAMPLE_GIN, "rl/grpo_k0.gin")
  assert first.gin_bindings == (
    "train_rl.name = 'k0'",
    "EgGrpoConfig.kl_weight = 0.5",
    "train_rl.seed = 3",
  )
  assert spec.trials[3].gin_bindings == ("train_rl.name = 'k2'", "train_rl.seed = 5")
  assert spec.metrics == "metrics.json"
  command = sweep.trial_command(first, "/w/k0_seed3", python="py")
  assert command == [
    "py",
    "-m",
    "gr_jax.main",
    "--workdir=/w/k0_seed3",
    f"--gin_file={EXAMPLE_GIN}",
    "--gin_file=rl/grpo_k0.gin",
    "--gin_bindings=train_rl.name = 'k0'",
    "--gin_bindings=EgGrpoConfig.kl_weight = 0.5",
    "--gin_bindings=train_rl.seed = 3",
  ]


@pytest.mark.parametrize(
  "body, message",
  [
    ('[sweep]\ncolour = 1\n[[trial]]\nname = "a"\n', r"\[sweep\]: unknown fields \['colour'\]"),
    ('[[trial]]\nname = "a"\n[[trial]]\nname = "a"\n', "trial 'a': trial name 'a' is used twice"),
    ('[[trial]]\nname = "a"\ngin_files = ["nope.gin"]\n', "trial 'a': gin file 'nope.gin'"),
    ('[sweep]\nseeds = [1]\n[[trial]]\nname = "a"\n', "'seeds' needs 'seed_bindings'"),
    ('[[trial]]\nname = "a/b"\n', r"trial #1: 'name' must be"),
    ('[[trial]]\nname = "a"\ngin_bindings = "x = 1"\n', "'gin_bindings' must be a list"),
    ('[sweep]\nselect = 1\n[[trial]]\nname = "a"\n', "'select' must be a metric name"),
    ("[sweep]\n", r"no \[\[trial\]\] entries"),
    ("[[trial]\n", "not valid TOML"),
  ],
)
def test_spec_errors_name_the_culprit(tmp_path, body, message):
  path = _write(tmp_path / "bad.toml", body)
  with pytest.raises(sweep.SweepError, match=message) as error:
    sweep.load_spec(path)
  assert path in str(error.value)


def test_shipped_sweeps_load():
  files = sorted(glob.glob(os.path.join(REPO_ROOT, "gin_configs", "sweeps", "*.toml")))
  names = {os.path.basename(f): sweep.load_spec(f) for f in files}
  tokenizers = names["tokenizers.toml"]
  assert [t.name for t in tokenizers.trials] == [
    "cq_sid",
    "rqvae",
    "cq_sid_wo_cate",
    "cq_sid_wo_qi",
  ]
  assert "train_tokenizer.name = 'rqvae'" in tokenizers.trials[1].gin_bindings
  grpo = names["eg_grpo_k.toml"]
  assert len(grpo.trials) == 12
  k4 = [t for t in grpo.trials if t.name == "eg_grpo_k4_seed2"][0]
  assert k4.gin_files == ("runs/eg_grpo.gin", "rl/operating_point.gin", "rl/eg_grpo_k4.gin")
  assert "train_rl.name = 'eg_grpo_k4'" in k4.gin_bindings
  assert "train_rl.seed = 2" in k4.gin_bindings
  operating_point = names["rl_operating_point.toml"]
  # Selection reads the valid split only (test is measured, never selected on).
  assert operating_point.select.startswith("valid_vs_sft.")
  assert all(c.startswith(("valid", "train.")) for c in operating_point.columns)
  lr = [t for t in operating_point.trials if t.name == "lr1e-3"][0]
  assert lr.gin_bindings[-1] == "train_rl.learning_rate = 1e-3"


_PARSE_TRIALS = """
import sys
import gin
from gr_jax import gin_utils, sweep

for path in sys.argv[1:]:
  for trial in sweep.load_spec(path).trials:
    gin_utils.parse(trial.gin_files, trial.gin_bindings)
    print(trial.name, gin.query_parameter("run.job").selector, flush=True)
    gin.clear_config()
"""


@pytest.mark.slow
def test_shipped_sweep_trials_parse_as_gin():
  files = sorted(glob.glob(os.path.join(REPO_ROOT, "gin_configs", "sweeps", "*.toml")))
  result = subprocess.run(
    [PYTHON, "-c", _PARSE_TRIALS, *files],
    env=python_env(),
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  parsed = dict(line.split() for line in result.stdout.splitlines())
  assert parsed["cq_sid_wo_qi"] == "train_tokenizer"
  assert parsed["grpo_k0_seed0"] == "train_rl"
  assert parsed["group16"] == "train_rl"
  assert len(parsed) == 4 + 12 + 13


def test_aggregate_reads_done_trials_only(tmp_path):
  path = _write(
    tmp_path / "s.toml",
    f"""
    [sweep]
    gin_files = ["{EXAMPLE_GIN}"]
    metrics = "out/*/metrics.json"
    columns = ["eval.10.clk", "loss"]
    seeds = [0, 1]
    seed_bindings = ["TrainerConfig.seed = {{seed}}"]

    [[trial]]
    name = "a"

    [[trial]]
    name = "b"
    """,
  )
  spec = sweep.load_spec(path)
  sweep_dir = tmp_path / "sweep"
  values = {"a_seed0": (0.25, 1.0), "a_seed1": (0.75, 3.0), "b_seed0": (0.5, 2.0)}
  for name, (clk, loss) in values.items():
    metrics_file = sweep_dir / name / "out" / "x" / "metrics.json"
    metrics_file.parent.mkdir(parents=True)
    metrics_file.write_text(json.dumps({"eval": {"10": {"clk": clk}}, "loss": loss, "tag": "t"}))
    (sweep_dir / name / sweep.DONE_FILE).write_text(json.dumps({"metrics": "out/x/metrics.json"}))
  # b_seed1 has a metrics file but no DONE marker (a preempted run): not aggregated.
  (sweep_dir / "b_seed1" / "out" / "x").mkdir(parents=True)
  (sweep_dir / "b_seed1" / "out" / "x" / "metrics.json").write_text('{"loss": 9.0}')

  payload = sweep.aggregate(spec, str(sweep_dir))
  rows = {row["name"]: row for row in payload["trials"]}
  assert rows["a_seed1"]["metrics"] == {"eval.10.clk": 0.75, "loss": 3.0}
  assert rows["b_seed1"]["status"] == "not started"
  assert rows["b_seed1"]["metrics"] == {}
  summary = {entry["base"]: entry for entry in payload["summary"]}
  assert summary["a"]["runs"] == 2 and summary["b"]["runs"] == 1
  assert summary["a"]["mean"] == {"eval.10.clk": 0.5, "loss": 2.0}
  # Sample std of (1, 3) = sqrt(2); of (0.25, 0.75) = sqrt(0.125).
  assert summary["a"]["std"]["loss"] == pytest.approx(2**0.5)
  assert summary["a"]["std"]["eval.10.clk"] == pytest.approx(0.125**0.5)
  assert json.loads((sweep_dir / sweep.RESULTS_JSON).read_text()) == payload
  markdown = (sweep_dir / sweep.RESULTS_MD).read_text()
  assert "| a_seed1 | done | 0.7500 | 3.0000 |" in markdown
  assert "| a | 2 | 0.5000 ± 0.3536 | 2.0000 ± 1.4142 |" in markdown
  assert (sweep_dir / sweep.RESULTS_PNG).stat().st_size > 1000


def test_aggregate_names_the_trial_selected_on_a_metric(tmp_path):
  path = _write(
    tmp_path / "s.toml",
    f"""
    [sweep]
    gin_files = ["{EXAMPLE_GIN}"]
    columns = ["loss"]
    select = "valid.gain"
    seeds = [0, 1]
    seed_bindings = ["TrainerConfig.seed = {{seed}}"]

    [[trial]]
    name = "a"

    [[trial]]
    name = "b"
    """,
  )
  sweep_dir = tmp_path / "sweep"
  # a: gains 0.1, 0.3 (mean 0.2); b: 0.5, -0.2 (mean 0.15, the best single run).
  values = {"a_seed0": 0.1, "a_seed1": 0.3, "b_seed0": 0.5, "b_seed1": -0.2}
  for name, gain in values.items():
    (sweep_dir / name).mkdir(parents=True)
    (sweep_dir / name / "metrics.json").write_text(json.dumps({"valid": {"gain": gain}}))
    (sweep_dir / name / sweep.DONE_FILE).write_text(json.dumps({"metrics": "metrics.json"}))
  payload = sweep.aggregate(sweep.load_spec(path), str(sweep_dir))
  assert payload["selected"] == "a"
  assert "Selected on valid.gain (highest): a" in (sweep_dir / sweep.RESULTS_MD).read_text()
  (sweep_dir / "a_seed0" / sweep.DONE_FILE).unlink()
  (sweep_dir / "a_seed1" / sweep.DONE_FILE).unlink()
  assert sweep.aggregate(sweep.load_spec(path), str(sweep_dir))["selected"] == "b"


def test_inputs_are_linked_and_required(tmp_path):
  path = _write(
    tmp_path / "s.toml",
    f"""
    [sweep]
    gin_files = ["{EXAMPLE_GIN}"]
    inputs = ["data", "sid/cq_sid"]

    [[trial]]
    name = "a"
    """,
  )
  spec = sweep.load_spec(path)
  with pytest.raises(sweep.SweepError, match="--inputs_dir"):
    sweep.run_sweep(spec, str(tmp_path / "sweep"))
  inputs = tmp_path / "run"
  (inputs / "data").mkdir(parents=True)
  with pytest.raises(sweep.SweepError, match="sid/cq_sid'.*does not exist"):
    sweep.run_sweep(spec, str(tmp_path / "sweep"), inputs_dir=str(inputs))


def test_failed_trial_is_reported_and_retried(tmp_path):
  path = _write(
    tmp_path / "s.toml",
    f"""
    [sweep]
    gin_files = ["{EXAMPLE_GIN}"]

    [[trial]]
    name = "a"
    """,
  )
  spec = sweep.load_spec(path)
  sweep_dir = tmp_path / "sweep"
  # An interpreter that exits 1 at once stands for a crashing trial.
  (result,) = sweep.run_sweep(spec, str(sweep_dir), python="false", poll_seconds=0.01)
  assert (result.status, result.returncode) == ("failed", 1)
  assert not (sweep_dir / "a" / sweep.DONE_FILE).exists()
  assert "=== " in (sweep_dir / "a" / sweep.LOG_FILE).read_text()
  payload = json.loads((sweep_dir / sweep.RESULTS_JSON).read_text())
  assert payload["trials"][0]["status"] == "failed"
  sweep.run_sweep(spec, str(sweep_dir), python="false", poll_seconds=0.01)
  assert (sweep_dir / "a" / sweep.LOG_FILE).read_text().count("=== ") == 2
  # The trial directory remembers its config: another one is refused.
  with open(path, "a") as f:
    f.write('gin_bindings = ["RegressionTask.hidden_dim = 8"]\n')
  changed = sweep.load_spec(path)
  assert changed.trials[0].gin_bindings == ("RegressionTask.hidden_dim = 8",)
  with pytest.raises(sweep.SweepError, match="trial 'a': .* was started with another config"):
    sweep.run_sweep(changed, str(sweep_dir), python="false")


def _sweep_cli(spec_path, sweep_dir, *extra):
  command = [PYTHON, SWEEP_CLI, f"--sweep={spec_path}", f"--sweep_dir={sweep_dir}", *extra]
  return subprocess.Popen(
    command, env=python_env(), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
  )


def _checkpoint_steps(trial_dir):
  directory = trial_dir / "checkpoints"
  if not directory.is_dir():
    return []
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


@pytest.mark.slow
def test_parallel_sweep_is_preemptible_and_resumes(tmp_path):
  spec_path = _write(
    tmp_path / "example.toml",
    f"""
    [sweep]
    gin_files = ["{EXAMPLE_GIN}"]
    gin_bindings = ["TrainerConfig.progress_bar = False", "TrainerConfig.log_every = 10"]
    columns = ["loss", "mse"]

    [[trial]]
    name = "short"
    gin_bindings = ["TrainerConfig.num_steps = 20"]

    [[trial]]
    name = "wide"
    gin_bindings = ["TrainerConfig.num_steps = 30", "RegressionTask.hidden_dim = 32"]

    [[trial]]
    name = "long"
    gin_bindings = ["TrainerConfig.num_steps = 600", "TrainerConfig.checkpoint_every = 10000"]
    """,
  )
  sweep_dir = tmp_path / "sweep"
  dry = subprocess.run(
    [PYTHON, SWEEP_CLI, f"--sweep={spec_path}", f"--sweep_dir={sweep_dir}", "--dry_run"],
    env=python_env(),
    capture_output=True,
    text=True,
    check=True,
  )
  commands = [shlex.split(line) for line in dry.stdout.splitlines() if not line.startswith("#")]
  assert commands[1][-1] == "--gin_bindings=RegressionTask.hidden_dim = 32"

  # Run 1: 'short' and 'wide' start; 'long' starts when one of them is done. Preempt
  # the sweep once 'long' has trained 50 steps (it has no periodic checkpoint: the one
  # it resumes from is written on SIGTERM).
  proc = _sweep_cli(spec_path, sweep_dir, "--parallel=2")
  long_dir = sweep_dir / "long"
  long_log = long_dir / sweep.LOG_FILE
  deadline = time.time() + 240
  while time.time() < deadline:
    if long_log.exists() and "step 50:" in long_log.read_text():
      break
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    time.sleep(0.1)
  else:
    raise AssertionError("sweep did not reach the preemption point in time")
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=180)[0].decode()
  assert proc.returncode == 0, out[-3000:]
  assert not (long_dir / sweep.DONE_FILE).exists()
  assert json.loads((long_dir / sweep.ATTEMPT_FILE).read_text())["status"] == "preempted"
  assert json.loads((long_dir / "metrics.json").read_text())["preempted"] is True
  stopped_at = _checkpoint_steps(long_dir)[-1]
  assert 50 <= stopped_at < 600
  finished = {
    name: (sweep_dir / name / sweep.DONE_FILE).stat().st_mtime_ns
    for name in ("short", "wide")
    if (sweep_dir / name / sweep.DONE_FILE).exists()
  }
  assert finished

  # Run 2: done trials are skipped, the others resume from their checkpoints.
  proc = _sweep_cli(spec_path, sweep_dir, "--parallel=2")
  out = proc.communicate(timeout=240)[0].decode()
  assert proc.returncode == 0, out[-3000:]
  for name, mtime in finished.items():
    assert f"trial {name}: done before; skipped" in out
    assert (sweep_dir / name / sweep.DONE_FILE).stat().st_mtime_ns == mtime
    assert (sweep_dir / name / sweep.LOG_FILE).read_text().count("=== ") == 1
  log = long_log.read_text()
  assert log.count("=== ") == 2
  assert f"resuming from {long_dir / 'checkpoints'} step {stopped_at}" in log
  assert _checkpoint_steps(long_dir)[-1] == 600

  results = json.loads((sweep_dir / sweep.RESULTS_JSON).read_text())
  markdown = (sweep_dir / sweep.RESULTS_MD).read_text()
  losses = set()
  for row in results["trials"]:
    metrics = json.loads((sweep_dir / row["name"] / "metrics.json").read_text())
    assert row["status"] == "done"
    assert metrics["preempted"] is False
    assert row["metrics"]["loss"] == metrics["loss"]
    assert row["metrics"]["mse"] == metrics["mse"]
    assert f"| {row['name']} | done | {metrics['loss']:.4f} | {metrics['mse']:.4f} |" in markdown
    losses.add(metrics["loss"])
  assert len(losses) == 3
  assert (sweep_dir / sweep.RESULTS_PNG).exists()
