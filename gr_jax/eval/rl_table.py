"""Table 4 with intervals: RL variants against their SFT start and against vanilla GRPO.

Every RL run keeps the per-request values of its final policy and of its SFT start
on the same test requests (POLICY_VALUES, SFT_VALUES in the run directory). Runs
named `<variant>_s<seed>` pool into one row per variant (the seeds may come from one
work directory, varying only the RL seed, or from one directory per pipeline seed):
mean ± std over seeds, the request interval of the seed-averaged values, and paired
relative differences against SFT and against GRPO (K=0) with each seed's own difference
(a win needs the interval above 0 and every seed to agree; gr_jax/eval/seeds.py).
"""

from __future__ import annotations

import os
import re

import numpy as np

from gr_jax import errors
from gr_jax.eval import report, seeds, stats

POLICY_VALUES = "per_request_test.npz"
SFT_VALUES = "per_request_sft.npz"
VALID_POLICY_VALUES = "per_request_valid.npz"
VALID_SFT_VALUES = "per_request_valid_sft.npz"
COLUMNS = (("clk", 1), ("clk", 10), ("exp", 1), ("exp", 10), ("onclk", 1), ("onclk", 10))
GRPO = "grpo_k0"


def _load(path: str) -> dict[str, np.ndarray]:
  with np.load(path) as values:
    return {key: values[key] for key in values.files}


def variant_and_seed(run_dir: str) -> tuple[str, int]:
  """('<variant>', seed) of a run directory named `<variant>_s<seed>` (seed 0 without it)."""
  name = os.path.basename(run_dir.rstrip("/"))
  match = re.fullmatch(r"(.*)_s(\d+)", name)
  return (match.group(1), int(match.group(2))) if match else (name, 0)


def load_runs(run_dirs: list[str]) -> tuple[dict[str, dict[int, dict]], dict[int, dict]]:
  """({variant: {seed: per-request values}}, {seed: values of that seed's SFT start}).

  Runs of one seed share an SFT start: one work directory's generator, or the generator
  of that seed of the whole pipeline when the runs come from several seed directories.
  """
  variants: dict[str, dict[int, dict]] = {}
  sft: dict[int, dict] = {}
  for run_dir in sorted(run_dirs):
    path = os.path.join(run_dir, POLICY_VALUES)
    if not os.path.exists(path):
      continue
    variant, seed = variant_and_seed(run_dir)
    if seed in variants.get(variant, {}):
      raise errors.ArtefactError(
        f"{run_dir}: a second run of {variant!r} with seed {seed}; name runs <variant>_s<seed>"
      )
    variants.setdefault(variant, {})[seed] = _load(path)
    if seed not in sft and os.path.exists(os.path.join(run_dir, SFT_VALUES)):
      sft[seed] = _load(os.path.join(run_dir, SFT_VALUES))
  return variants, sft


def _distinct_starts(sft: dict[int, dict]) -> list[dict]:
  """The SFT starts of the seeds, once each: one row when every seed began from the same."""
  starts = [sft[seed] for seed in sorted(sft)]
  first = starts[0]
  same = all(
    start.keys() == first.keys()
    and all(np.array_equal(start[k], first[k], equal_nan=True) for k in first)
    for start in starts[1:]
  )
  return [first] if same else starts


def _stack(runs: list[dict], key: str) -> np.ndarray | None:
  if not runs or any(key not in run for run in runs):
    return None
  return np.stack([run[key] for run in runs])  # [seeds, B]


def _cell(entry: dict) -> str:
  spread = f" ± {entry['seed_std']:.4f}" if len(entry["per_seed"]) > 1 else ""
  return f"{entry['seed_mean']:.4f}{spread} [{entry['ci'][0]:.4f}, {entry['ci'][1]:.4f}]"


def _gain(comparison: dict | None) -> str:
  if comparison is None:
    return "n/a"
  interval = stats.Interval(comparison["value"], comparison["low"], comparison["high"])
  return f"{stats.format_relative(interval)} {comparison['verdict']}"


def paired_gains(policy: dict[str, np.ndarray], sft: dict[str, np.ndarray]) -> dict:
  """{'<metric>@<beam>': {value, low, high, verdict}}: the policy minus its SFT start, paired
  over the same requests (absolute difference of the means), for every Table 4 column."""
  gains = {}
  for metric, beam in COLUMNS:
    column = f"{metric}@{beam}"
    if column not in policy or column not in sft:
      continue
    kept = np.isfinite(policy[column]) & np.isfinite(sft[column])
    interval = stats.paired_difference(policy[column][kept], sft[column][kept])
    gains[column] = {
      "value": interval.value,
      "low": interval.low,
      "high": interval.high,
      "verdict": stats.verdict(interval),
    }
  return gains


def _paired(runs: dict[int, dict], baseline: dict[int, dict], column: str) -> dict | None:
  """Gain of `runs` over `baseline`, seed by seed (None unless the baseline has every seed)."""
  if not runs or not set(runs) <= set(baseline):
    return None
  order = sorted(runs)
  system = _stack([runs[seed] for seed in order], column)
  base = _stack([baseline[seed] for seed in order], column)
  if system is None or base is None:
    return None
  return seeds.compare_seeds(system, base)


def table4(variants: dict[str, dict[int, dict]], sft: dict[int, dict], title: str) -> str:
  """Markdown: values per variant, then paired gains against SFT and against GRPO (K=0).

  Each seed's policy is paired with its own SFT start and its own GRPO run on the same
  requests; the SFT row lists each distinct start once.
  """
  columns = [f"{metric}@{beam}" for metric, beam in COLUMNS]
  systems = {"SFT": _distinct_starts(sft)} if sft else {}
  systems |= {name: [runs[seed] for seed in sorted(runs)] for name, runs in variants.items()}
  rows, against_sft, against_grpo = [], [], []
  for name, runs in systems.items():
    row, sft_row, grpo_row = {"method": name}, {"method": name}, {"method": name}
    for column in columns:
      values = _stack(runs, column)
      if values is None:
        row[column] = sft_row[column] = grpo_row[column] = "n/a"
        continue
      row[column] = _cell(seeds.seed_entry(values))
      if name != "SFT":
        sft_row[column] = _gain(_paired(variants[name], sft, column))
      if name not in ("SFT", GRPO):
        grpo_row[column] = _gain(_paired(variants[name], variants.get(GRPO, {}), column))
    row["seeds"] = len(runs)
    rows.append(row)
    if name != "SFT":
      against_sft.append(sft_row)
      if name != GRPO and GRPO in variants:
        against_grpo.append(grpo_row)
  sections = [report.markdown_table(rows, ["method", *columns, "seeds"], title=title)]
  if against_sft:
    sections.append(
      report.markdown_table(
        against_sft, ["method", *columns], title="paired relative difference against SFT"
      )
    )
  if against_grpo:
    sections.append(
      report.markdown_table(
        against_grpo,
        ["method", *columns],
        title="paired relative difference against GRPO (K=0), seed by seed",
      )
    )
  return "\n".join(sections)
