"""Paired comparison of sequential-recommendation systems on the same test users.

Every seqrec row (a generator's selected (rule, beam) row, SASRec's selected epoch)
keeps its test users' values in `<eval folder>/per_user_test.npz`: the user id, the
held-out item and Recall@K / NDCG@K of each user. Two systems evaluated on the same
users are compared by a paired bootstrap of the relative difference of each metric
(`stats.paired_relative_difference`), the way the built-in world's tables compare
tokenizers; a win or loss needs the interval to exclude 0.
"""

from __future__ import annotations

import os

import numpy as np

from gr_jax import errors
from gr_jax.data import schema
from gr_jax.eval import report, stats

PER_USER_FILE = "per_user_test.npz"
KEYS = ("user", "target")  # identify a request; every other array is a metric


class CompareError(errors.UserError):
  """Per-user values that cannot be paired; the message names the folder."""


def per_user_values(logs: schema.SearchLogs, split: str, targets, per_request: dict) -> dict:
  """{'user', 'target', metric: [R]} of one split's rows, in file order.

  Raises:
    ValueError: the values are not one per row of the split.
  """
  users = logs.user_id[logs.split == schema.SPLITS.index(split)]
  if len(users) != len(targets) or any(len(v) != len(users) for v in per_request.values()):
    raise ValueError(f"per-user values: {len(targets)} targets for {len(users)} {split} rows")
  return {"user": users, "target": np.asarray(targets), **per_request}


def write(out_dir: str, values: dict) -> str:
  """Writes out_dir/per_user_test.npz; returns its path."""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, PER_USER_FILE)
  np.savez(path, **values)
  return path


def load(folder: str) -> dict[str, np.ndarray]:
  """One system's per-user values, sorted by user.

  Raises:
    CompareError: no file, missing keys, or a user listed twice.
  """
  path = os.path.join(folder, PER_USER_FILE)
  if not os.path.exists(path):
    raise CompareError(f"{folder}: no {PER_USER_FILE} (rerun its evaluation with this version)")
  with np.load(path) as arrays:
    values = {key: arrays[key] for key in arrays.files}
  missing = [key for key in KEYS if key not in values]
  if missing:
    raise CompareError(f"{path}: missing {missing}")
  order = np.argsort(values["user"], kind="stable")
  if np.any(np.diff(values["user"][order]) == 0):
    raise CompareError(f"{path}: a user appears twice; one test request per user is expected")
  return {key: array[order] for key, array in values.items()}


def compare(folders: dict[str, str], baseline: str, *, resamples: int = stats.RESAMPLES) -> dict:
  """Every system against `baseline` on the users they share.

  Args:
    folders: {system name: eval folder holding per_user_test.npz}.
    baseline: the name the others are paired against.

  Returns:
    {'baseline', 'users', 'metrics', 'systems': {name: {metric: {'mean', 'ci',
    'vs_baseline': interval json + 'verdict' | None}}}}.

  Raises:
    CompareError: an unknown baseline, other users or other held-out items.
  """
  if baseline not in folders:
    raise CompareError(f"baseline '{baseline}' is not among the systems {sorted(folders)}")
  loaded = {name: load(folder) for name, folder in folders.items()}
  base = loaded[baseline]
  metric_names = sorted(set.intersection(*(set(v) - set(KEYS) for v in loaded.values())))
  systems: dict = {}
  for name, values in loaded.items():
    for key in KEYS:
      if not np.array_equal(values[key], base[key]):
        raise CompareError(
          f"{folders[name]}: other test {key}s than {folders[baseline]} (same data needed)"
        )
    systems[name] = {}
    for metric in metric_names:
      interval = stats.bootstrap_mean(values[metric], resamples=resamples)
      entry = {"mean": interval.value, "ci": [interval.low, interval.high], "vs_baseline": None}
      if name != baseline and base[metric].mean() > 0:
        difference = stats.paired_relative_difference(
          values[metric], base[metric], resamples=resamples
        )
        entry["vs_baseline"] = {**difference.to_json(), "verdict": stats.verdict(difference)}
      systems[name][metric] = entry
  return {
    "baseline": baseline,
    "users": int(len(base["user"])),
    "metrics": metric_names,
    "systems": systems,
  }


def render(compared: dict) -> str:
  """Markdown: each system's values with intervals, then its paired differences."""
  columns = ["system", *compared["metrics"]]
  values, differences = [], []
  for name, entries in compared["systems"].items():
    values.append(
      {
        "system": name,
        **{m: f"{e['mean']:.4f} [{e['ci'][0]:.4f}, {e['ci'][1]:.4f}]" for m, e in entries.items()},
      }
    )
    if name == compared["baseline"]:
      continue
    row = {"system": name}
    for metric, entry in entries.items():
      raw = entry["vs_baseline"]
      row[metric] = (
        "n/a"
        if raw is None
        else f"{stats.format_relative(stats.Interval(raw['value'], raw['low'], raw['high']))} "
        f"{raw['verdict']}"
      )
    differences.append(row)
  header = (
    f"Test, {compared['users']} users, full ranking; 95% bootstrap intervals over users; "
    f"differences paired over the same users against {compared['baseline']}.\n"
  )
  return "\n".join(
    [
      header,
      report.markdown_table(values, columns, title="Systems"),
      report.markdown_table(
        differences, columns, title=f"Relative difference against {compared['baseline']}"
      ),
    ]
  )
