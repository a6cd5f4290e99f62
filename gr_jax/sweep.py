r"""Ablation sweeps: trials of `python -m gr_jax.main`, resumable, aggregated into one table.

A sweep file (TOML, gin_configs/sweeps/*.toml) lists trials; each trial is a name,
gin files and gin bindings, applied after the sweep's shared base:

    [sweep]
    gin_files = ["runs/tokenizer.gin"]         # base, before every trial's files
    gin_bindings = ["TrainerConfig.num_steps = 1500"]
    inputs = ["data", "vocab"]                 # linked from --inputs_dir into each trial
    metrics = "sid/*/diagnostics.json"         # glob in the trial workdir, one match
    columns = ["recon_mse", "retrieval_top10"] # results table columns (flattened keys)
    plot = "retrieval_top10"                   # metric of the PNG bar chart
    select = "retrieval_top10"                 # optional: the trial with the highest
                                               # (seed-mean) value is named the selected one
    seeds = [0, 1, 2]                          # optional: each trial once per seed,
    seed_bindings = ["train_rl.seed = {seed}"] # with these bindings appended

    [[trial]]
    name = "cq_sid"
    gin_files = ["sid/cq_sid.gin"]
    gin_bindings = ["train_tokenizer.name = 'cq_sid'"]

Every trial has its own work directory `<sweep_dir>/<trial>` (`<trial>_seed<s>` with
seeds). `{trial}` and `{seed}` in bindings are replaced by the trial's name and seed.
A trial is done when its process exited 0 and wrote its metrics file without
being preempted; the runner then writes `<trial>/DONE`. Re-running a sweep skips
done trials and relaunches the others, which resume from their own checkpoints
(the trainer's decision order). SIGTERM / SIGINT to the runner is passed on to the
running trials as SIGTERM, so they checkpoint and stop; the next run resumes them.

Results: `<sweep_dir>/results.json`, `results.md` (one row per trial, plus mean +- std
over seeds) and `results.png`, read from every done trial's metrics file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import math
import os
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence

from absl import logging

from gr_jax import gin_utils, io_utils
from gr_jax.eval import report

DONE_FILE = "DONE"
TRIAL_FILE = "trial.json"
ATTEMPT_FILE = "last_attempt.json"
LOG_FILE = "log.txt"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
RESULTS_PNG = "results.png"

_SWEEP_KEYS = {
  "description",
  "gin_files",
  "gin_bindings",
  "inputs",
  "metrics",
  "columns",
  "plot",
  "seeds",
  "seed_bindings",
  "select",
}
_TRIAL_KEYS = {"name", "gin_files", "gin_bindings"}


class SweepError(ValueError):
  """A sweep file or sweep directory is wrong; the message names the file, trial and field."""


@dataclasses.dataclass(frozen=True)
class Trial:
  """One run of the sweep.

  Attributes:
    name: work directory name under the sweep directory.
    base: the trial's name in the sweep file (equal to `name` without seeds).
    seed: the seed of this run, or None when the sweep has no seeds.
    gin_files: base files, then the trial's files.
    gin_bindings: base bindings, the trial's bindings, then the seed bindings.
  """

  name: str
  base: str
  seed: int | None
  gin_files: tuple[str, ...]
  gin_bindings: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class SweepSpec:
  """A parsed sweep file.

  Attributes:
    path: the sweep file.
    description: free text for the results header.
    trials: expanded trials (one per trial and seed), in file order.
    inputs: work-directory entries linked from the inputs directory into every trial.
    metrics: glob, relative to a trial's work directory, of its metrics JSON file.
    columns: flattened metric keys of the results table (empty: every numeric key
      shared by the done trials).
    plot: flattened metric key of the bar chart (empty: the first column).
    select: flattened metric key whose highest seed-mean names the selected trial
      (empty: no selection).
  """

  path: str
  description: str
  trials: tuple[Trial, ...]
  inputs: tuple[str, ...]
  metrics: str
  columns: tuple[str, ...]
  plot: str
  select: str = ""


@dataclasses.dataclass
class TrialResult:
  """What happened to one trial in this invocation.

  Attributes:
    trial: the trial.
    status: 'done' (finished now), 'skipped' (done before), 'preempted' (stopped by
      SIGTERM, resumable), 'failed' (non-zero exit or no metrics) or 'pending'
      (not started because the sweep was interrupted).
    returncode: the process's exit status (None if not run).
    seconds: wall time of the process.
  """

  trial: Trial
  status: str
  returncode: int | None = None
  seconds: float = 0.0


# ------------------------------------------------------------------- spec
def load_spec(path: str) -> SweepSpec:
  """Reads and checks a sweep file (format in the module docstring).

  Raises:
    SweepError: unreadable TOML, unknown or mistyped fields, duplicate trial names,
      gin files that do not exist, seeds without seed bindings.
  """
  try:
    with open(path, "rb") as f:
      raw = tomllib.load(f)
  except OSError as e:
    raise SweepError(f"sweep file '{path}': cannot be read ({e.strerror or e})") from e
  except tomllib.TOMLDecodeError as e:
    raise SweepError(f"sweep file '{path}': not valid TOML ({e})") from e
  unknown = set(raw) - {"sweep", "trial"}
  if unknown:
    raise SweepError(f"sweep file '{path}': unknown tables {sorted(unknown)}")
  base = raw.get("sweep", {})
  _check_keys(base, _SWEEP_KEYS, f"sweep file '{path}' [sweep]")
  where = f"sweep file '{path}' [sweep]"
  base_files = _str_list(base, "gin_files", where)
  base_bindings = _str_list(base, "gin_bindings", where)
  seed_bindings = _str_list(base, "seed_bindings", where)
  seeds = base.get("seeds", [])
  if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
    raise SweepError(f"{where}: 'seeds' must be a list of integers, got {seeds!r}")
  if seeds and not seed_bindings:
    raise SweepError(f"{where}: 'seeds' needs 'seed_bindings' (e.g. 'train_rl.seed = {{seed}}')")
  raw_trials = raw.get("trial", [])
  if not isinstance(raw_trials, list) or not raw_trials:
    raise SweepError(f"sweep file '{path}': no [[trial]] entries")
  trials, names = [], set()
  for index, entry in enumerate(raw_trials):
    where = f"sweep file '{path}' trial #{index + 1}"
    _check_keys(entry, _TRIAL_KEYS, where)
    name = entry.get("name")
    if not isinstance(name, str) or not name or not _safe_name(name):
      raise SweepError(f"{where}: 'name' must be a non-empty [A-Za-z0-9_.-] string, got {name!r}")
    where = f"sweep file '{path}' trial '{name}'"
    files = (*base_files, *_str_list(entry, "gin_files", where))
    for gin_file in files:
      if _resolve_gin(gin_file) is None:
        raise SweepError(f"{where}: gin file '{gin_file}' not found (nor under gin_configs/)")
    bindings = (*base_bindings, *_str_list(entry, "gin_bindings", where))
    for seed in seeds or [None]:
      run_name = name if seed is None else f"{name}_seed{seed}"
      if run_name in names:
        raise SweepError(f"{where}: trial name '{run_name}' is used twice")
      names.add(run_name)
      run_bindings = (*bindings, *(seed_bindings if seed is not None else ()))
      run_bindings = tuple(_substitute(b, name, seed) for b in run_bindings)
      trials.append(Trial(run_name, name, seed, tuple(files), run_bindings))
  where = f"sweep file '{path}' [sweep]"
  inputs = _str_list(base, "inputs", where)
  for entry in inputs:
    if os.path.isabs(entry) or ".." in entry.split("/"):
      raise SweepError(f"{where}: input '{entry}' must be a path inside a work directory")
  metrics = base.get("metrics", "metrics.json")
  if not isinstance(metrics, str) or not metrics:
    raise SweepError(f"{where}: 'metrics' must be a glob string, got {metrics!r}")
  columns = _str_list(base, "columns", where)
  plot = base.get("plot", columns[0] if columns else "")
  if not isinstance(plot, str):
    raise SweepError(f"{where}: 'plot' must be a metric name, got {plot!r}")
  select = base.get("select", "")
  if not isinstance(select, str):
    raise SweepError(f"{where}: 'select' must be a metric name, got {select!r}")
  description = base.get("description", "")
  return SweepSpec(path, str(description), tuple(trials), inputs, metrics, columns, plot, select)


def trial_command(trial: Trial, workdir: str, python: str = sys.executable) -> list[str]:
  """The `python -m gr_jax.main` command line of a trial."""
  command = [python, "-m", "gr_jax.main", f"--workdir={workdir}"]
  command += [f"--gin_file={f}" for f in trial.gin_files]
  command += [f"--gin_bindings={b}" for b in trial.gin_bindings]
  return command


def _check_keys(table, allowed: set[str], where: str) -> None:
  if not isinstance(table, dict):
    raise SweepError(f"{where}: expected a table, got {type(table).__name__}")
  unknown = set(table) - allowed
  if unknown:
    raise SweepError(f"{where}: unknown fields {sorted(unknown)} (allowed: {sorted(allowed)})")


def _str_list(table: Mapping, key: str, where: str) -> tuple[str, ...]:
  value = table.get(key, [])
  if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
    raise SweepError(f"{where}: '{key}' must be a list of strings, got {value!r}")
  return tuple(value)


def _safe_name(name: str) -> bool:
  return all(c.isalnum() or c in "_.-" for c in name) and name not in (".", "..")


def _substitute(binding: str, name: str, seed: int | None) -> str:
  binding = binding.replace("{trial}", name)
  return binding if seed is None else binding.replace("{seed}", str(seed))


def _resolve_gin(gin_file: str) -> str | None:
  """Where gr_jax.main will find the file (working directory, then gin_configs/)."""
  for root in ("", *gin_utils.DEFAULT_SEARCH_PATHS):
    candidate = os.path.join(root, gin_file)
    if os.path.exists(candidate):
      return candidate
  return None


# ----------------------------------------------------------------- trials
def is_done(sweep_dir: str, trial: Trial) -> bool:
  return os.path.exists(os.path.join(sweep_dir, trial.name, DONE_FILE))


def find_metrics(spec: SweepSpec, trial_dir: str) -> str | None:
  """The trial's metrics file, or None when it has none yet.

  Raises:
    SweepError: the glob matches several files.
  """
  matches = sorted(glob.glob(os.path.join(trial_dir, spec.metrics)))
  if len(matches) > 1:
    raise SweepError(
      f"sweep file '{spec.path}': metrics glob '{spec.metrics}' matches {len(matches)} files "
      f"in {trial_dir}: {matches}"
    )
  return matches[0] if matches else None


def _trial_record(trial: Trial) -> dict:
  return {"gin_files": list(trial.gin_files), "gin_bindings": list(trial.gin_bindings)}


def _check_trial_record(trial: Trial, trial_dir: str) -> None:
  """Raises SweepError when `trial_dir` was made by another config of this trial."""
  record_path = os.path.join(trial_dir, TRIAL_FILE)
  if not os.path.exists(record_path):
    return
  previous = io_utils.read_json(record_path)
  if previous != _trial_record(trial):
    raise SweepError(
      f"trial '{trial.name}': {trial_dir} was started with another config "
      f"({previous}); delete the directory or rename the trial"
    )


def _prepare_trial_dir(spec: SweepSpec, trial: Trial, trial_dir: str, inputs_dir: str | None):
  """Creates the work directory, records the trial's config and links the inputs."""
  os.makedirs(trial_dir, exist_ok=True)
  record_path = os.path.join(trial_dir, TRIAL_FILE)
  if not os.path.exists(record_path):
    io_utils.write_json(record_path, _trial_record(trial))
  if spec.inputs and not inputs_dir:
    raise SweepError(
      f"sweep file '{spec.path}': trials read inputs {list(spec.inputs)}; "
      "give the work directory that holds them (--inputs_dir)"
    )
  for entry in spec.inputs:
    source = os.path.abspath(os.path.join(inputs_dir, entry))
    if not os.path.exists(source):
      raise SweepError(f"sweep input '{entry}': {source} does not exist (prepare it first)")
    target = os.path.join(trial_dir, entry)
    if os.path.islink(target) and os.path.realpath(target) == os.path.realpath(source):
      continue
    if os.path.lexists(target):
      raise SweepError(f"trial '{trial.name}': {target} exists and is not a link to {source}")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.symlink(source, target)


def _finish_trial(
  spec: SweepSpec,
  trial: Trial,
  trial_dir: str,
  returncode: int,
  seconds: float,
  interrupted: bool,
):
  """Classifies a finished process; writes DONE for a complete trial.

  `interrupted`: the sweep was told to stop, so an incomplete trial was preempted
  (some jobs exit 0 without metrics when SIGTERM stops them).
  """
  metrics_path = find_metrics(spec, trial_dir)
  metrics = io_utils.read_json(metrics_path) if metrics_path else None
  preempted = isinstance(metrics, dict) and bool(metrics.get("preempted"))
  if returncode == 0 and metrics_path and not preempted:
    status = "done"
  elif preempted or interrupted or returncode == -signal.SIGTERM:
    status = "preempted"
  else:
    status = "failed"
  attempt = {"status": status, "returncode": returncode, "seconds": seconds}
  io_utils.write_json(os.path.join(trial_dir, ATTEMPT_FILE), attempt)
  if status == "done":
    # Written last: DONE means the metrics are final.
    io_utils.write_json(
      os.path.join(trial_dir, DONE_FILE),
      {**attempt, "metrics": os.path.relpath(metrics_path, trial_dir)},
    )
  return TrialResult(trial, status, returncode, seconds)


class _StopFlag:
  """SIGTERM / SIGINT -> a flag the scheduling loop polls (main thread only)."""

  def __init__(self):
    self.raised = False
    self._previous = {}

  def __enter__(self):
    for signum in (signal.SIGTERM, signal.SIGINT):
      # Outside the main thread signal.signal raises: the caller handles signals then.
      with contextlib.suppress(ValueError):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.raised = True

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def run_sweep(
  spec: SweepSpec,
  sweep_dir: str,
  *,
  parallel: int = 1,
  inputs_dir: str | None = None,
  only: Sequence[str] = (),
  python: str = sys.executable,
  env: Mapping[str, str] | None = None,
  poll_seconds: float = 0.2,
) -> list[TrialResult]:
  """Runs the sweep's trials that are not done, `parallel` at a time, then aggregates.

  Args:
    spec: the parsed sweep file.
    sweep_dir: where trial work directories and results go.
    parallel: trials running at once.
    inputs_dir: the work directory whose `spec.inputs` every trial links to.
    only: trial names (expanded or base) to run; empty = all.
    python: interpreter of the trial processes.
    env: environment of the trial processes (default: this one); the repository is
      prepended to PYTHONPATH.
    poll_seconds: how often to look at running trials.

  Returns:
    One TrialResult per selected trial, in sweep order.

  Raises:
    SweepError: a bad selection, a missing input or a trial directory made by another
      config.
  """
  if parallel < 1:
    raise SweepError(f"parallel must be at least 1, got {parallel}")
  trials = _select(spec, only)
  os.makedirs(sweep_dir, exist_ok=True)
  child_env = dict(os.environ if env is None else env)
  child_env["PYTHONPATH"] = os.pathsep.join(
    p for p in (gin_utils.REPO_ROOT, child_env.get("PYTHONPATH", "")) if p
  )
  results: dict[str, TrialResult] = {}
  queue = []
  for trial in trials:
    # Also for done trials: their results must come from the config asked for.
    _check_trial_record(trial, os.path.join(sweep_dir, trial.name))
    if is_done(sweep_dir, trial):
      logging.info("trial %s: done before; skipped", trial.name)
      results[trial.name] = TrialResult(trial, "skipped")
    else:
      _prepare_trial_dir(spec, trial, os.path.join(sweep_dir, trial.name), inputs_dir)
      queue.append(trial)
  running: dict[str, tuple[Trial, subprocess.Popen, float, object]] = {}
  signalled: set[str] = set()
  with _StopFlag() as stop:
    while (queue and not stop.raised) or running:
      while queue and len(running) < parallel and not stop.raised:
        trial = queue.pop(0)
        running[trial.name] = _launch(trial, sweep_dir, python, child_env)
      if stop.raised:
        # Once per trial: a second SIGTERM after the trainer restored the default
        # handler would kill it mid-checkpoint.
        for name, (_, process, _, _) in running.items():
          if name not in signalled and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            signalled.add(name)
      time.sleep(poll_seconds)
      for name, (trial, process, start, log) in list(running.items()):
        if process.poll() is None:
          continue
        log.close()
        seconds = time.perf_counter() - start
        result = _finish_trial(
          spec, trial, os.path.join(sweep_dir, name), process.returncode, seconds, stop.raised
        )
        logging.info(
          "trial %s: %s (exit %s, %.1f s)%s",
          name,
          result.status,
          process.returncode,
          seconds,
          "" if result.status == "done" else f"; log: {os.path.join(sweep_dir, name, LOG_FILE)}",
        )
        results[name] = result
        del running[name]
  for trial in queue:
    results[trial.name] = TrialResult(trial, "pending")
  aggregate(spec, sweep_dir)
  return [results[t.name] for t in trials]


def _select(spec: SweepSpec, only: Sequence[str]) -> list[Trial]:
  if not only:
    return list(spec.trials)
  known = {t.name for t in spec.trials} | {t.base for t in spec.trials}
  unknown = [name for name in only if name not in known]
  if unknown:
    raise SweepError(f"sweep file '{spec.path}': no trials named {unknown}")
  return [t for t in spec.trials if t.name in only or t.base in only]


def _launch(trial: Trial, sweep_dir: str, python: str, env: Mapping[str, str]):
  trial_dir = os.path.join(sweep_dir, trial.name)
  command = trial_command(trial, trial_dir, python)
  log = open(os.path.join(trial_dir, LOG_FILE), "a")  # noqa: SIM115 (closed when it ends)
  log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
  log.flush()
  logging.info("trial %s: started", trial.name)
  # The runner's working directory: relative gin files and work directories mean
  # the same to the trial as to the runner.
  process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
  return trial, process, time.perf_counter(), log


# ------------------------------------------------------------ aggregation
def flatten_metrics(metrics: Mapping, prefix: str = "") -> dict[str, float]:
  """Nested metrics -> {'a.b.c': number}; non-numeric leaves are dropped."""
  flat = {}
  for key, value in metrics.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten_metrics(value, name + "."))
    elif isinstance(value, bool):
      continue
    elif isinstance(value, int | float):
      flat[name] = float(value)
  return flat


def aggregate(spec: SweepSpec, sweep_dir: str) -> dict:
  """Reads every done trial's metrics; writes results.json, results.md and results.png.

  Returns:
    The results.json payload: {'sweep', 'columns', 'trials': [{name, base, seed,
    status, metrics}], 'summary': [{base, seeds, mean, std}]}.
  """
  rows = []
  for trial in spec.trials:
    trial_dir = os.path.join(sweep_dir, trial.name)
    done = is_done(sweep_dir, trial)
    metrics = {}
    if done:
      record = io_utils.read_json(os.path.join(trial_dir, DONE_FILE))
      metrics = flatten_metrics(io_utils.read_json(os.path.join(trial_dir, record["metrics"])))
      status = "done"
    elif os.path.exists(os.path.join(trial_dir, ATTEMPT_FILE)):
      status = io_utils.read_json(os.path.join(trial_dir, ATTEMPT_FILE))["status"]
    else:
      status = "not started"
    rows.append(
      {
        "name": trial.name,
        "base": trial.base,
        "seed": trial.seed,
        "status": status,
        "metrics": metrics,
      }
    )
  columns = list(spec.columns) or _shared_numeric_keys(rows)
  summary = _summarise(rows, [*columns, spec.select] if spec.select else columns)
  payload = {"sweep": spec.path, "columns": columns, "trials": rows, "summary": summary}
  payload["selected"] = _selected(summary, spec.select)
  io_utils.write_json(os.path.join(sweep_dir, RESULTS_JSON), payload)
  markdown = _markdown(spec, rows, summary, columns)
  if payload["selected"]:
    markdown += f"\nSelected on {spec.select} (highest): {payload['selected']}\n"
  io_utils.write_text(os.path.join(sweep_dir, RESULTS_MD), markdown)
  plot_metric = spec.plot or (columns[0] if columns else "")
  if plot_metric and summary:
    _plot(os.path.join(sweep_dir, RESULTS_PNG), rows, summary, plot_metric, spec.path)
  return payload


def _selected(summary: list[dict], metric: str) -> str | None:
  """The base trial with the highest seed-mean of `metric` (None: no metric or no value)."""
  entries = [entry for entry in summary if metric and metric in entry["mean"]]
  if not entries:
    return None
  return max(entries, key=lambda entry: entry["mean"][metric])["base"]


def _shared_numeric_keys(rows: list[dict]) -> list[str]:
  done = [row["metrics"] for row in rows if row["status"] == "done"]
  if not done:
    return []
  return sorted(set.intersection(*(set(m) for m in done)))


def _summarise(rows: list[dict], columns: list[str]) -> list[dict]:
  """Mean and sample std over the seeds of each base trial (done trials only)."""
  summary, order = {}, []
  for row in rows:
    if row["status"] != "done":
      continue
    if row["base"] not in summary:
      summary[row["base"]] = []
      order.append(row["base"])
    summary[row["base"]].append(row["metrics"])
  out = []
  for base in order:
    runs = summary[base]
    mean, std = {}, {}
    for column in columns:
      values = [m[column] for m in runs if column in m]
      if not values:
        continue
      mean[column] = sum(values) / len(values)
      std[column] = (
        math.sqrt(sum((v - mean[column]) ** 2 for v in values) / (len(values) - 1))
        if len(values) > 1
        else 0.0
      )
    out.append({"base": base, "runs": len(runs), "mean": mean, "std": std})
  return out


def _markdown(spec: SweepSpec, rows: list[dict], summary: list[dict], columns: list[str]) -> str:
  header = f"# Sweep results: {os.path.basename(spec.path)}\n\n"
  if spec.description:
    header += spec.description.strip() + "\n\n"
  trial_rows = [{"trial": row["name"], "status": row["status"], **row["metrics"]} for row in rows]
  text = header + report.markdown_table(trial_rows, ["trial", "status", *columns], title="Trials")
  if any(row["seed"] is not None for row in rows) and summary:
    seed_rows = []
    for entry in summary:
      cells = {"trial": entry["base"], "runs": str(entry["runs"])}
      for column in entry["mean"]:
        cells[column] = f"{entry['mean'][column]:.4f} ± {entry['std'][column]:.4f}"
      seed_rows.append(cells)
    text += "\n" + report.markdown_table(
      seed_rows, ["trial", "runs", *columns], title="Mean ± std over seeds"
    )
  return text


def _plot(path: str, rows: list[dict], summary: list[dict], metric: str, title: str) -> None:
  """Bars: mean over seeds (error bar: std); dots: the single runs."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  entries = [e for e in summary if metric in e["mean"]]
  if not entries:
    return
  figure, axis = plt.subplots(figsize=(max(4, 1.2 * len(entries) + 2), 4), dpi=120)
  positions = range(len(entries))
  axis.bar(
    positions,
    [e["mean"][metric] for e in entries],
    yerr=[e["std"][metric] for e in entries],
    capsize=4,
    color="tab:blue",
    alpha=0.8,
  )
  for position, entry in zip(positions, entries):
    runs = [
      row["metrics"][metric]
      for row in rows
      if row["base"] == entry["base"] and metric in row["metrics"]
    ]
    axis.scatter([position] * len(runs), runs, color="black", s=12, zorder=3)
  axis.set_xticks(list(positions), [e["base"] for e in entries], rotation=20, ha="right")
  axis.set_ylabel(metric)
  axis.set_title(os.path.basename(title))
  axis.grid(True, axis="y", alpha=0.3)
  figure.tight_layout()
  tmp = path + ".tmp.png"
  figure.savefig(tmp)
  plt.close(figure)
  os.replace(tmp, path)
