"""The evaluate job's results as the paper's tables (markdown), with intervals and verdicts.

Input is the results dict the evaluate job writes to metrics.json (beam keys may be
ints, or strings after a JSON round trip).
"""

from __future__ import annotations

import os

import numpy as np

from gr_jax import io_utils
from gr_jax.eval import report, stats
from gr_jax.train import metric_writers

KINDS = (("semantic", "Table 1"), ("personalized", "Table 3"))


def at(mapping: dict, beam):
  """mapping[beam] whether the keys are ints or strings (None when absent)."""
  if beam in mapping:
    return mapping[beam]
  return mapping.get(str(beam))


def _interval(value: float, ci) -> stats.Interval:
  return stats.Interval(value, ci[0], ci[1])


def _cell(curve: dict, beam, metric: str) -> str:
  entry = at(curve, beam)
  if entry is None or metric not in entry:
    return "n/a"
  return stats.format_interval(_interval(entry[metric], entry["ci"][metric]))


def _relative(comparison: dict | None, beam, metric: str):
  row = at(comparison or {}, beam) or {}
  if metric not in row:
    return None
  raw = row[metric]
  return stats.Interval(raw["value"], raw["low"], raw["high"])


def _verdict_cell(intervals) -> str:
  counts = stats.count_verdicts([i for i in intervals if i is not None])
  return f"{counts['win']} / {counts['tie']} / {counts['loss']}"


ONLINE_METRICS = (
  ("onclk", "simulated online expected clicks per request"),
  ("onbuy", "simulated online expected purchases per request"),
)


def hitrate_tables(results: dict, metric: str = "hitrate", label: str | None = None) -> list[str]:
  """Tables 1 and 3: each method's `metric` with its interval, then paired gains."""
  baseline = results["baseline"]
  beams = results["beam_sizes"]
  sections = []
  for kind, table in KINDS:
    curves = {
      name: entry["stages"][kind]
      for name, entry in results["tokenizers"].items()
      if kind in entry["stages"]
    }
    if not curves:
      continue
    columns = ["method"] + [f"beam@{b}" for b in beams]
    rows = [
      {"method": name, **{f"beam@{b}": _cell(curve, b, metric) for b in beams}}
      for name, curve in curves.items()
    ]
    title = f"{table} analogue: {kind} {metric}" if label is None else f"{kind}: {label}"
    sections.append(report.markdown_table(rows, columns, title=title))
    gains = []
    for name in curves:
      comparison = results.get("comparisons", {}).get(name, {}).get(kind)
      if name == baseline or comparison is None:
        continue
      key = "clk" if metric == "hitrate" else metric
      intervals = [_relative(comparison, b, key) for b in beams]
      row = {"method": name, "wins / ties / losses": _verdict_cell(intervals)}
      for beam, interval in zip(beams, intervals):
        row[f"beam@{beam}"] = "n/a" if interval is None else stats.format_relative(interval)
      gains.append(row)
    if gains:
      sections.append(
        report.markdown_table(
          gains,
          columns + ["wins / ties / losses"],
          title=f"{kind} {metric}: paired relative difference against {baseline}",
        )
      )
  return sections


def _reach_cell(entry: dict | None) -> str:
  if entry is None:
    return "n/a"
  return f"{entry['expanded_items']:.0f} / {entry['share_over_truncation']:.0%}"


def truncation_table(results: dict) -> list[str]:
  """Table 2: truncated hitrate at each truncation beam, and how often the cut binds."""
  beams = results.get("truncation_beam_sizes") or []
  if not beams:
    return []
  k = results["truncation_items"]
  curves = {
    name: entry["stages"]["semantic"]
    for name, entry in results["tokenizers"].items()
    if "semantic" in entry["stages"]
  }
  # A test run scores only the operating points valid chose (shown below), not the grid.
  beams = [b for b in beams if any(at(curve, b) is not None for curve in curves.values())]
  if not beams:
    return []
  rows, binds = [], []
  for name, curve in curves.items():
    rows.append({"method": name, **{f"beam {b}": _cell(curve, b, "topk_hitrate") for b in beams}})
    binds.append({"method": name, **{f"beam {b}": _reach_cell(at(curve, b)) for b in beams}})
  columns = ["method"] + [f"beam {b}" for b in beams]
  return [
    report.markdown_table(
      rows, columns, title=f"Table 2 analogue: hitrate of the union ranked by efficiency, top-{k}"
    ),
    report.markdown_table(
      binds, columns, title=f"Items reached (mean) / share of requests with more than {k}"
    ),
  ]


def relative_text(raw: dict | None) -> str:
  if not raw:
    return "n/a"
  interval = stats.Interval(raw["value"], raw["low"], raw["high"])
  return f"{stats.format_relative(interval)} ({stats.verdict(interval)})"


def selection_section(results: dict) -> list[str]:
  """Beams chosen on valid (valid run) or their test reading (test run)."""
  baseline = results["baseline"]
  choices = results.get("choices")
  selected = results.get("selected_on_valid")
  if results["split"] == "valid" and choices:
    ref = choices["reference_beam"]
    lines = ["### Beams chosen on this split (read on test by the test run)", ""]
    for name, beam in choices["half_beams"].items():
      if name == baseline:
        continue
      lines.append(
        f"- {name} reaches {baseline}'s beam-{ref} hitrate at: "
        f"{'not reached' if beam is None else f'beam {beam}'}"
      )
    for name, beam in choices["truncation_beams"].items():
      lines.append(
        f"- Table 2 operating point of {name}: {'not reached' if beam is None else f'beam {beam}'}"
      )
    return ["\n".join(lines) + "\n"]
  if results["split"] != "test":
    return []
  if not selected:
    return [
      "### Beams chosen on valid\n\nNo valid run in this work directory "
      "(evaluate.split='valid' first): no beam is chosen on test.\n"
    ]
  ref = selected["reference_beam"]
  lines = ["### Beams chosen on valid, read on test", ""]
  for name, entry in selected["half_beams"].items():
    if name == baseline:
      continue
    if entry.get("beam") is None:
      lines.append(f"- {name}: did not reach {baseline}'s beam-{ref} hitrate on valid")
      continue
    lines.append(
      f"- {name} at beam {entry['beam']}: hitrate {entry['hitrate']:.4f}; against "
      f"{baseline} at beam {ref}: {relative_text(entry.get('vs_baseline'))}"
    )
  for name, entry in selected["truncation"].items():
    if entry.get("beam") is None:
      lines.append(f"- Table 2, {name}: did not reach {baseline}'s truncated hitrate on valid")
      continue
    vs = (
      "" if name == baseline else f"; against {baseline}: {relative_text(entry.get('vs_baseline'))}"
    )
    lines.append(
      f"- Table 2, {name} at beam {entry['beam']}: top-{results['truncation_items']} hitrate "
      f"{entry['topk_hitrate']:.4f}, union > {results['truncation_items']} items for "
      f"{entry['share_over_truncation']:.0%} of requests{vs}"
    )
  return ["\n".join(lines) + "\n"]


def _has_metric(results: dict, metric: str) -> bool:
  return any(
    metric in entry
    for method in results["tokenizers"].values()
    for curve in method["stages"].values()
    for entry in curve.values()
  )


def render(results: dict) -> str:
  """The whole results.md."""
  header = (
    f"Split: {results['split']}, {results['requests']} requests (seeded sample, seed "
    f"{results['sample_seed']}; targets = clicked items). Brackets: 95% bootstrap interval over "
    f"requests ({results['bootstrap_resamples']} resamples); differences are paired over the "
    "same requests and count as a win or a loss only when their interval excludes 0.\n"
  )
  sections = [header]
  sections += hitrate_tables(results)
  for metric, label in ONLINE_METRICS:
    if _has_metric(results, metric):
      sections += hitrate_tables(results, metric, label)
  sections += truncation_table(results)
  sections += selection_section(results)
  return "\n".join(sections)


def per_request_key(method: str, kind: str, key: str) -> str:
  return f"{method}/{kind}/{key}"


def write(out_dir: str, results: dict, values: dict, request_rows) -> str:
  """metrics.json, results.md, per_request.npz (for paired and seed comparisons), plots."""
  arrays = {"request_rows": np.asarray(request_rows)}
  for method, kinds in values.items():
    for kind, per_request in kinds.items():
      for key, array in per_request.items():
        arrays[per_request_key(method, kind, key)] = np.asarray(array)
  io_utils.write_npz(os.path.join(out_dir, "per_request.npz"), arrays)
  text = render(results)
  io_utils.write_json(os.path.join(out_dir, "metrics.json"), results)
  io_utils.write_text(os.path.join(out_dir, "results.md"), text)
  curves = {
    name: entry["stages"]["semantic"]
    for name, entry in results["tokenizers"].items()
    if "semantic" in entry["stages"]
  }
  beams = sorted(set(results["beam_sizes"]) | set(results["curve_beam_sizes"]))
  for key, label in (("hitrate", "hitrate"), ("topk_hitrate", "top-K truncated hitrate")):
    key_beams = (
      beams if key == "hitrate" else sorted(set(beams) | set(results["truncation_beam_sizes"]))
    )
    present = {
      name: [b for b in key_beams if at(curve, b) is not None] for name, curve in curves.items()
    }
    report.plot_curves(
      os.path.join(out_dir, f"{key}_vs_beam.png"),
      {n: (present[n], [at(c, b)[key] for b in present[n]]) for n, c in curves.items()},
      bands={
        n: (
          [at(c, b)["ci"][key][0] for b in present[n]],
          [at(c, b)["ci"][key][1] for b in present[n]],
        )
        for n, c in curves.items()
      },
      xlabel="beam size",
      ylabel=label,
      title=f"semantic {label} vs beam size ({results['split']}, 95% CI)",
    )
  write_summaries(os.path.join(out_dir, "tb"), results)
  return text


def write_summaries(logdir: str, results: dict) -> None:
  """Every scalar of `results` as TensorBoard curves over the beam size (the step axis).

  Tags: `<split>/<tokenizer>/<kind>/<metric>` for the values and
  `<split>/<tokenizer>_vs_<baseline>/<kind>/<metric>` for the paired relative gains.
  """
  split, baseline = results["split"], results["baseline"]
  writer = metric_writers.MetricWriter(logdir, console=False)
  for name, entry in results["tokenizers"].items():
    for kind, curve in entry["stages"].items():
      for beam, cell in curve.items():
        scalars = {k: v for k, v in cell.items() if isinstance(v, (int, float))}
        writer.write_scalars(int(beam), scalars, prefix=f"{split}/{name}/{kind}")
  for name, kinds in (results.get("comparisons") or {}).items():
    for kind, curve in kinds.items():
      for beam, cell in curve.items():
        scalars = {k: v["value"] for k, v in cell.items() if isinstance(v, dict) and "value" in v}
        writer.write_scalars(int(beam), scalars, prefix=f"{split}/{name}_vs_{baseline}/{kind}")
  writer.write_gin_config()
  writer.close()
