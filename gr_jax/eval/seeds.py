"""Results over seeds of the whole pipeline: seed spread beside the request interval.

Each seed is one work directory evaluated on the same requests (same world, same
sample). For every method, metric and beam this reports:

- the mean over seeds and the standard deviation over seeds (training variance);
- a 95% bootstrap interval over requests of the seed-averaged per-request values
  (request sampling);
- against the baseline: the paired relative difference of the seed-averaged values
  with its interval, and each seed's own difference. A win (loss) needs the
  interval above (below) 0 and every seed's difference of the same sign; anything
  else is a tie.
"""

from __future__ import annotations

import os

import numpy as np

from gr_jax import errors, io_utils
from gr_jax.eval import protocol, report, stats, tables


class SeedsError(errors.UserError):
  """The seed work directories cannot be compared; the message names the directory."""


def load_seed(workdir: str, split: str) -> tuple[dict, dict[str, np.ndarray]]:
  """(metrics.json, per-request arrays) of one evaluated work directory."""
  folder = os.path.join(workdir, "eval", split)
  for name in ("metrics.json", "per_request.npz"):
    if not os.path.exists(os.path.join(folder, name)):
      raise SeedsError(f"{folder}: no {name} (run the evaluate job with split='{split}')")
  with np.load(os.path.join(folder, "per_request.npz")) as arrays:
    values = {key: arrays[key] for key in arrays.files}
  return io_utils.read_json(os.path.join(folder, "metrics.json")), values


def _check_same_requests(workdirs, loaded) -> None:
  rows = loaded[0][1]["request_rows"]
  for workdir, (_, values) in zip(workdirs[1:], loaded[1:]):
    if not np.array_equal(values["request_rows"], rows):
      raise SeedsError(
        f"{workdir}: evaluated on other requests than {workdirs[0]} (same world, "
        "evaluate.max_requests and evaluate.seed are needed)"
      )


def _verdict(interval: stats.Interval, per_seed: list[float]) -> str:
  verdict = stats.verdict(interval)
  if verdict == "win" and min(per_seed) > 0:
    return "win"
  if verdict == "loss" and max(per_seed) < 0:
    return "loss"
  return "tie"


def seed_entry(per_seed: np.ndarray, *, resamples: int = stats.RESAMPLES) -> dict:
  """Mean and std over seeds, and the request interval of the seed-averaged values.

  Args:
    per_seed: [S, B] per-request values of each seed (NaN: no target of this kind).
  """
  averaged = per_seed.mean(0)  # [B], NaN where a request has no target of this kind
  means = [float(np.nanmean(row)) for row in per_seed]
  seed_mean, seed_std = stats.seed_spread(means)
  interval = stats.bootstrap_mean(averaged[np.isfinite(averaged)], resamples=resamples)
  return {
    "seed_mean": seed_mean,
    "seed_std": seed_std,
    "per_seed": means,
    "ci": [interval.low, interval.high],
    "vs_baseline": None,
  }


def compare_seeds(
  system: np.ndarray, baseline: np.ndarray, *, resamples: int = stats.RESAMPLES
) -> dict | None:
  """Paired relative difference of seed-averaged values, each seed's own, and the verdict.

  Args:
    system: [S, B] per-request values per seed.
    baseline: [S, B] (or [1, B]: one baseline for every seed) on the same requests.

  Returns:
    The interval json plus 'per_seed' and 'verdict', or None when the baseline's mean is 0.
  """
  baseline = np.broadcast_to(baseline, system.shape)
  both = np.isfinite(system.mean(0)) & np.isfinite(baseline.mean(0))
  if not both.any() or np.mean(baseline.mean(0)[both]) <= 0:
    return None
  relative = stats.paired_relative_difference(
    system.mean(0)[both], baseline.mean(0)[both], resamples=resamples
  )
  seed_diffs = [float(np.mean(s[both]) / np.mean(b[both]) - 1.0) for s, b in zip(system, baseline)]
  return {**relative.to_json(), "per_seed": seed_diffs, "verdict": _verdict(relative, seed_diffs)}


# Operating points chosen on valid: (table in 'selected_on_valid', metric it is read at).
CHOSEN_TABLES = (("half_beams", "clk"), ("truncation", "topk"))


def _chosen_beams(selection: dict, table: str, method: str, baseline: str):
  """(method's beam, baseline's beam) one seed's valid run chose for `table`."""
  base_beam = (
    selection["reference_beam"]
    if table == "half_beams"
    else selection[table].get(baseline, {}).get("beam")
  )
  return selection[table].get(method, {}).get("beam"), base_beam


def chosen_operating_points(
  workdirs, loaded, baseline: str, *, resamples: int = stats.RESAMPLES
) -> dict:
  """Each seed's valid-chosen beams read over seeds, paired against the baseline.

  A seed's valid run chooses its own beams (half the beams: the smallest beam
  reaching the baseline's reference-beam hitrate; Table 2: the baseline's smallest
  binding beam and the method's smallest beam reaching its top-K hitrate). The
  method at each seed's chosen beam is compared with the baseline at that seed's
  beam, seed-averaged like every other row.

  Returns:
    {table: {method: {'beams', 'baseline_beams', and when every seed reached an
    operating point: seed_entry fields with 'vs_baseline', and 'baseline' (the
    baseline's seed_entry at its beams)}}}; {} unless every seed has a selection.
  """
  selections = [metrics.get("selected_on_valid") for metrics, _ in loaded]
  if not all(selections):
    return {}
  out: dict = {}
  for table, metric in CHOSEN_TABLES:
    methods = set.intersection(*(set(s[table]) for s in selections)) - {baseline}
    for method in sorted(methods):
      pairs = [_chosen_beams(s, table, method, baseline) for s in selections]
      beams, base_beams = [b for b, _ in pairs], [b for _, b in pairs]
      entry: dict = {"beams": beams, "baseline_beams": base_beams}
      if table == "truncation":  # the share of requests whose union passes the cut
        entry["share_over_truncation"] = [
          s[table][method].get("share_over_truncation") for s in selections
        ]
        entry["baseline_share_over_truncation"] = [
          s[table].get(baseline, {}).get("share_over_truncation") for s in selections
        ]
      out.setdefault(table, {})[method] = entry
      if None in beams or None in base_beams:
        continue  # some seed never reached the baseline: no operating point to read
      keys = [
        (f"{method}/semantic/{metric}@{b}", f"{baseline}/semantic/{metric}@{bb}")
        for b, bb in zip(beams, base_beams)
      ]
      for workdir, (_, values), key_pair in zip(workdirs, loaded, keys):
        missing = [k for k in key_pair if k not in values]
        if missing:
          raise SeedsError(f"{workdir}: no per-request values for {missing} (evaluate on test)")
      system = np.stack([v[k] for (_, v), (k, _) in zip(loaded, keys)])  # [S, B]
      base = np.stack([v[k] for (_, v), (_, k) in zip(loaded, keys)])  # [S, B]
      entry.update(seed_entry(system, resamples=resamples))
      entry["vs_baseline"] = compare_seeds(system, base, resamples=resamples)
      entry["baseline"] = seed_entry(base, resamples=resamples)
  return out


def combine(
  workdirs, split: str = "test", *, baseline: str | None = None, resamples: int = stats.RESAMPLES
) -> dict:
  """Seed statistics of every (method, kind, metric@beam) the seeds share.

  Gains are paired against `baseline` (default: the evaluations' own baseline; e.g.
  'cq_sid' reads the ablations against the full method).

  Returns:
    {'split', 'seeds', 'requests', 'baseline', 'beam_sizes', 'rows': {method:
    {kind: {'<metric>@<beam>': {'seed_mean', 'seed_std', 'per_seed', 'ci',
    'vs_baseline': {...} | None}}}}, 'selected_on_valid': [per seed], 'chosen':
    chosen_operating_points(...) (empty against another baseline than the evaluations')}.
  """
  workdirs = list(workdirs)
  if not workdirs:
    raise SeedsError("no seed work directories given")
  loaded = [load_seed(w, split) for w in workdirs]
  _check_same_requests(workdirs, loaded)
  first = loaded[0][0]
  baseline = baseline or first["baseline"]
  if not any(key.startswith(f"{baseline}/") for key in loaded[0][1]):
    raise SeedsError(f"baseline '{baseline}' is not among the evaluated methods")
  shared = set.intersection(*(set(v) - {"request_rows"} for _, v in loaded))
  rows: dict = {}
  for key in sorted(shared):
    method, kind, metric_at = key.split("/")
    if metric_at.split("@")[0] not in protocol.METRICS:
      continue
    per_seed = np.stack([v[key] for _, v in loaded])  # [seeds, B]
    entry = seed_entry(per_seed, resamples=resamples)
    base_key = f"{baseline}/{kind}/{metric_at}"
    if method != baseline and base_key in shared:
      base_seeds = np.stack([v[base_key] for _, v in loaded])  # [seeds, B]
      entry["vs_baseline"] = compare_seeds(per_seed, base_seeds, resamples=resamples)
    rows.setdefault(method, {}).setdefault(kind, {})[metric_at] = entry
  return {
    "split": split,
    "seeds": len(workdirs),
    "workdirs": workdirs,
    "requests": int(len(loaded[0][1]["request_rows"])),
    "baseline": baseline,
    "beam_sizes": first["beam_sizes"],
    "truncation_items": first["truncation_items"],
    "truncation_beam_sizes": first.get("truncation_beam_sizes", []),
    "rows": rows,
    "selected_on_valid": [m.get("selected_on_valid") for m, _ in loaded],
    # Valid chose beams against the evaluations' own baseline; another baseline has none.
    "chosen": chosen_operating_points(workdirs, loaded, baseline, resamples=resamples)
    if baseline == first["baseline"]
    else {},
  }


def _cell(entry: dict | None) -> str:
  if entry is None:
    return "n/a"
  return (
    f"{entry['seed_mean']:.4f} ± {entry['seed_std']:.4f} "
    f"[{entry['ci'][0]:.4f}, {entry['ci'][1]:.4f}]"
  )


def _gain_cell(entry: dict | None) -> str:
  if entry is None or entry["vs_baseline"] is None:
    return "n/a"
  raw = entry["vs_baseline"]
  text = stats.format_relative(stats.Interval(raw["value"], raw["low"], raw["high"]))
  seeds = ", ".join(f"{100 * d:+.1f}" for d in raw["per_seed"])
  return f"{text} (seeds {seeds}) {raw['verdict']}"


def _table(combined: dict, kind: str, metric: str, beams, title: str) -> list[str]:
  methods = [m for m, kinds in combined["rows"].items() if kind in kinds]
  # Beams no method has in every seed (e.g. Table 2 beams the seeds chose differently).
  beams = [b for b in beams if any(f"{metric}@{b}" in combined["rows"][m][kind] for m in methods)]
  if not beams:
    return []
  columns = ["method"] + [f"{metric}@{b}" for b in beams]
  values, gains = [], []
  for method in methods:
    cells = combined["rows"][method][kind]
    values.append(
      {"method": method, **{f"{metric}@{b}": _cell(cells.get(f"{metric}@{b}")) for b in beams}}
    )
    if method != combined["baseline"]:
      entries = [cells.get(f"{metric}@{b}") for b in beams]
      verdicts = [e["vs_baseline"]["verdict"] for e in entries if e and e["vs_baseline"]]
      gains.append(
        {
          "method": method,
          **{f"{metric}@{b}": _gain_cell(e) for b, e in zip(beams, entries)},
          "wins / ties / losses": " / ".join(
            str(verdicts.count(v)) for v in ("win", "tie", "loss")
          ),
        }
      )
  sections = [report.markdown_table(values, columns, title=title)]
  if gains:
    sections.append(
      report.markdown_table(
        gains,
        columns + ["wins / ties / losses"],
        title=f"{kind} {metric}: relative difference against {combined['baseline']}",
      )
    )
  return sections


def render(combined: dict) -> str:
  """Markdown: Tables 1-3 over seeds, and each seed's beams chosen on valid."""
  header = (
    f"Split: {combined['split']}, {combined['requests']} requests, {combined['seeds']} seeds "
    "of the whole pipeline (world fixed). Cells: mean over seeds ± standard deviation over "
    "seeds [95% bootstrap interval over requests of the seed-averaged values]. Differences: "
    "paired over the same requests, seed-averaged, with each seed's own difference; a win or "
    "loss needs the interval to exclude 0 and every seed to agree.\n"
  )
  sections = [header]
  beams = combined["beam_sizes"]
  for kind, table in tables.KINDS:
    sections += _table(combined, kind, "clk", beams, f"{table} analogue: {kind} hitrate")
  for metric, label in tables.ONLINE_METRICS:
    for kind, _ in tables.KINDS:
      sections += _table(combined, kind, metric, beams, f"{kind}: {label}")
  if combined["truncation_beam_sizes"]:
    sections += _table(
      combined,
      "semantic",
      "topk",
      combined["truncation_beam_sizes"],
      f"Table 2 analogue: top-{combined['truncation_items']} hitrate (union ranked by efficiency)",
    )
  lines = ["### Beams chosen on valid, read on test, per seed", ""]
  for workdir, selected in zip(combined["workdirs"], combined["selected_on_valid"]):
    if not selected:
      lines.append(f"- {workdir}: no valid selection")
      continue
    ref = selected["reference_beam"]
    for name, entry in selected["half_beams"].items():
      if name == combined["baseline"]:
        continue
      lines.append(
        f"- {os.path.basename(workdir)}: {name} reaches {combined['baseline']}'s "
        f"beam-{ref} hitrate at beam {entry.get('beam')}: "
        f"{tables.relative_text(entry.get('vs_baseline'))}"
      )
    for name, entry in selected["truncation"].items():
      lines.append(
        f"- {os.path.basename(workdir)}: Table 2 operating point of {name}: beam "
        f"{entry.get('beam')}"
        + (f", top-K hitrate {entry['topk_hitrate']:.4f}" if "topk_hitrate" in entry else "")
        + (
          f", {tables.relative_text(entry.get('vs_baseline'))}" if entry.get("vs_baseline") else ""
        )
      )
  sections.append("\n".join(lines) + "\n")
  sections += _chosen_table(combined)
  return "\n".join(sections)


CHOSEN_LABELS = {"half_beams": "half the beams (hitrate)", "truncation": "Table 2 (top-K hitrate)"}


def _chosen_table(combined: dict) -> list[str]:
  rows = []
  for table, methods in combined.get("chosen", {}).items():
    for method, entry in methods.items():
      beams = "/".join(str(b) for b in entry["beams"])
      base_beams = "/".join(str(b) for b in entry["baseline_beams"])
      reached = "vs_baseline" in entry
      rows.append(
        {
          "operating point": CHOSEN_LABELS[table],
          "method (beam per seed)": f"{method} ({beams})",
          "value": _cell(entry) if reached else "not reached in every seed",
          f"{combined['baseline']} (beam per seed)": (
            f"{_cell(entry['baseline'])} ({base_beams})" if reached else f"({base_beams})"
          ),
          "difference": _gain_cell(entry) if reached else "n/a",
        }
      )
  if not rows:
    return []
  columns = list(rows[0])
  title = "Operating points chosen on valid, read on test over seeds (each seed at its own beams)"
  return [report.markdown_table(rows, columns, title=title)]
