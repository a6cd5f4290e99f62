"""The evaluation protocol: which requests are scored, their prompts, and the metrics of a
generator decoded with constrained beam search at several beam sizes.

Shared by the evaluation job (the paper's Tables 1-3), the RL job (clk@k / exp@k of
the policy on the same sample) and the seqrec evaluation (`eval.seqrec`).
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging

from gr_jax import io_utils
from gr_jax.data import schema, seqio_tasks
from gr_jax.eval import metrics, report
from gr_jax.models.generator import Generator
from gr_jax.serving.retriever import Retriever
from gr_jax.sid import tables

# (result key, SFT stage task) of the two evaluated generators.
KINDS = (("semantic", "q2sid"), ("personalized", "uq2sid"))


def sample_test_requests(logs: schema.SearchLogs, max_requests: int, seed: int) -> np.ndarray:
  """Seeded sample of test rows with a query and at least one clicked item (same for every method).

  Requests with an empty query (e.g. Amazon targets without a category) have no
  search prompt, so they are left out.
  """
  has_query = np.array([bool(str(q).strip()) for q in logs.query])
  rows = np.flatnonzero(
    (logs.split == schema.SPLITS.index("test")) & (logs.clicked >= 0).any(-1) & has_query
  )
  rng = np.random.default_rng(seed)
  if len(rows) > max_requests:
    rows = np.sort(rng.choice(rows, max_requests, replace=False))
  return rows


def request_prompts(
  task, catalog, logs, item_sid, vocab, generator: Generator, split: str = "test"
) -> np.ndarray:
  """[R, T] prompt tokens, one per row of `logs` (all rows must be of `split` and clicked)."""
  examples = seqio_tasks.build_examples(
    task, catalog, logs, split, item_sid, vocab, generator.layout, generator.prompt_len
  )
  rows, first = np.unique(examples["request_row"], return_index=True)
  if len(rows) != logs.num_requests:
    raise ValueError(f"{task}: {logs.num_requests - len(rows)} sampled requests have no prompt")
  return examples["tokens"][first, : generator.prompt_len]


def evaluate_generator(
  retriever: Retriever,
  prompts: np.ndarray,
  logs: schema.SearchLogs,
  item_sid: np.ndarray,
  beam_sizes,
  truncation_items: int,
) -> dict:
  """{beam: {hitrate, clk, exp, topk_hitrate, valid_share}} for one generator."""
  level_sizes = retriever.sid_tables.level_sizes
  out = {}
  for beam in sorted(set(beam_sizes)):
    sids, _, valid = retriever.decode(prompts, beam)
    clicked = metrics.sid_hitrate(sids, valid, logs.clicked, item_sid, level_sizes)
    exposed = metrics.sid_hitrate(sids, valid, logs.exposed, item_sid, level_sizes)
    purchased = metrics.sid_hitrate(sids, valid, logs.purchased, item_sid, level_sizes)
    ranked = metrics.ranked_items(
      sids, valid, retriever.sid_tables, retriever.efficiency_score, max_items=truncation_items
    )
    truncated = metrics.item_hitrate(ranked, logs.clicked)
    out[int(beam)] = {
      "hitrate": clicked["hitrate"],
      "clk": clicked["hitrate"],
      "exp": exposed["hitrate"],
      "purchase": purchased["hitrate"],
      "topk_hitrate": truncated["hitrate"],
      "expanded_items": float(np.mean((ranked >= 0).sum(-1))),
      "valid_share": float(valid.mean()),
      "requests": clicked["requests"],
    }
    logging.info("beam %d: %s", beam, out[int(beam)])
  return out


def evaluate_policy(
  retriever: Retriever, generator: Generator, catalog, logs, item_sid, vocab, requests, beams
) -> dict:
  """clk@k / exp@k of a personalized generator on the evaluation job's request sample."""
  sample = logs.select(sample_test_requests(logs, requests, seed=0))
  prompts = request_prompts("uq2sid", catalog, sample, item_sid, vocab, generator)
  return evaluate_generator(retriever, prompts, sample, item_sid, beams, truncation_items=1000)


def sid_summary(sid_tables: tables.SidTables) -> dict:
  """Size of a SID space, reported beside its metrics."""
  return {
    "num_sids": int(sid_tables.num_sids),
    "items_per_sid_mean": float(np.mean(sid_tables.sid_sizes)),
  }


def smallest_beam_reaching(curve: dict, target: float):
  """Smallest evaluated beam whose hitrate >= target, or None."""
  for beam in sorted(curve):
    if curve[beam]["hitrate"] >= target:
      return beam
  return None


def _hitrate_tables(toks: dict, baseline: str, beam_sizes) -> list[str]:
  """Tables 1 and 3: semantic / personalized hitrate per method, gains over the baseline."""
  sections = []
  for kind, table in (("semantic", "Table 1"), ("personalized", "Table 3")):
    rows = []
    base = toks.get(baseline, {}).get("stages", {}).get(kind)
    for name, entry in toks.items():
      curve = entry["stages"].get(kind)
      if curve is None:
        continue
      row = {"method": name}
      for beam in beam_sizes:
        value = curve[beam]["hitrate"] if beam in curve else curve[str(beam)]["hitrate"]
        gain = ""
        if base is not None and name != baseline:
          gain = f" ({report.relative_gain(value, base[beam]['hitrate'])})"
        row[f"beam@{beam}"] = f"{value:.4f}{gain}"
      rows.append(row)
    if rows:
      columns = ["method"] + [f"beam@{b}" for b in beam_sizes]
      sections.append(
        report.markdown_table(rows, columns, title=f"{table} analogue: {kind} hitrate")
      )
  return sections


def _semantic_curve_sections(out_dir: str, semantic_curves: dict, beams, baseline: str):
  """Table 2, expanded items, beams needed to reach the baseline, and the curve plots."""
  columns = ["method"] + [f"beam {b}" for b in beams]
  rows = [
    {"method": name, **{f"beam {b}": curve[b]["topk_hitrate"] for b in beams}}
    for name, curve in semantic_curves.items()
  ]
  sections = [
    report.markdown_table(rows, columns, title="Table 2 analogue: top-K truncated hitrate")
  ]
  rows = [
    {"method": name, **{f"beam {b}": f"{curve[b]['expanded_items']:.0f}" for b in beams}}
    for name, curve in semantic_curves.items()
  ]
  sections.append(report.markdown_table(rows, columns, title="Items after expansion (mean)"))
  if baseline in semantic_curves:
    target = semantic_curves[baseline][max(beams)]["hitrate"]
    lines = [
      f"### Beams needed to reach {baseline}'s beam-{max(beams)} hitrate ({target:.4f})",
      "",
    ]
    for name, curve in semantic_curves.items():
      beam = smallest_beam_reaching(curve, target)
      lines.append(f"- {name}: {'not reached' if beam is None else f'beam {beam}'}")
    sections.append("\n".join(lines) + "\n")
  for key, label in (("hitrate", "hitrate"), ("topk_hitrate", "top-K truncated hitrate")):
    report.plot_curves(
      os.path.join(out_dir, f"{key}_vs_beam.png"),
      {n: (beams, [c[b][key] for b in beams]) for n, c in semantic_curves.items()},
      xlabel="beam size",
      ylabel=label,
      title=f"semantic {label} vs beam size",
    )
  return sections


def write_reports(out_dir: str, results: dict, baseline: str, beam_sizes) -> str:
  """metrics.json, results.md (Tables 1-3 layout, methods as rows) and plots."""
  toks = results["tokenizers"]
  sections = [f"Test requests: {results['requests']} (seeded sample; targets = clicked items)\n"]
  sections += _hitrate_tables(toks, baseline, beam_sizes)
  semantic_curves = {
    name: entry["stages"]["semantic"]
    for name, entry in toks.items()
    if "semantic" in entry["stages"]
  }
  if semantic_curves:
    sections += _semantic_curve_sections(out_dir, semantic_curves, results["beam_sizes"], baseline)
  text = "\n".join(sections)
  io_utils.write_json(os.path.join(out_dir, "metrics.json"), results)
  io_utils.write_text(os.path.join(out_dir, "results.md"), text)
  print(text)
  return text
