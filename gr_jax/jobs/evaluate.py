"""Evaluation job: the paper's Tables 1-3 (and hitrate-vs-beam curves) on WORKDIR's data.

For each tokenizer it loads the Q2SID generator (semantic hitrate, Table 1) and the
UQ2SID generator (personalized hitrate, Table 3), decodes a fixed, seeded sample of
test requests with constrained beam search at every beam size, and scores:
  - hitrate@beam: share of the request's clicked items whose SID is in the beams;
  - clk@beam / exp@beam: the same for clicked / exposed items (Table 4's metrics);
  - top-K hitrate: share of clicked items inside the expanded item set truncated to
    K items by efficiency score (Table 2).
Writes WORKDIR/eval/metrics.json, results.md and hitrate_vs_beam*.png.
"""

from __future__ import annotations

import os

import gin
import numpy as np
from absl import logging

from gr_jax import io_utils, retrieval
from gr_jax.data import schema, seqio_tasks
from gr_jax.eval import metrics, report
from gr_jax.jobs import data as data_job
from gr_jax.jobs import paths, sft
from gr_jax.sid import tables


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
  task, catalog, logs, item_sid, vocab, generator: sft.Generator, split: str = "test"
) -> np.ndarray:
  """[R, P] prompt tokens, one per row of `logs` (all rows must be of `split` and clicked)."""
  examples = seqio_tasks.build_examples(
    task, catalog, logs, split, item_sid, vocab, generator.layout, generator.prompt_len
  )
  rows, first = np.unique(examples["request_row"], return_index=True)
  if len(rows) != logs.num_requests:
    raise ValueError(f"{task}: {logs.num_requests - len(rows)} sampled requests have no prompt")
  return examples["tokens"][first, : generator.prompt_len]


def evaluate_generator(
  retriever: retrieval.Retriever,
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


def load_retriever(workdir, tokenizer, stage, catalog, sid_artefacts) -> tuple:
  generator, params = sft.load_generator(paths.sft_dir(workdir, tokenizer, stage))
  retriever = retrieval.Retriever(
    params,
    generator.model_config,
    generator.layout,
    sid_artefacts.tables,
    catalog.efficiency_score,
  )
  return generator, retriever


def smallest_beam_reaching(curve: dict, target: float):
  """Smallest evaluated beam whose hitrate >= target, or None."""
  for beam in sorted(curve):
    if curve[beam]["hitrate"] >= target:
      return beam
  return None


@gin.configurable
def evaluate(
  workdir: str,
  tokenizers: tuple[str, ...] = ("cq_sid", "rqvae"),
  baseline: str = "rqvae",
  semantic_stage: str = "q2sid",
  personalized_stage: str = "uq2sid",
  beam_sizes: tuple[int, ...] = (1, 10, 100),
  curve_beam_sizes: tuple[int, ...] = (1, 5, 10, 20, 50, 100),
  truncation_items: int = 1000,
  max_requests: int = 1000,
  seed: int = 0,
):
  """Runs the evaluation described in the module docstring; returns the metrics dict."""
  catalog, logs = data_job.load_data(workdir)
  rows = sample_test_requests(logs, max_requests, seed)
  sample = logs.select(rows)
  vocab = sft.text_vocabulary(workdir).as_seqio_vocabulary()
  all_beams = sorted(set(beam_sizes) | set(curve_beam_sizes))
  results: dict = {"requests": int(len(rows)), "beam_sizes": all_beams, "tokenizers": {}}
  for name in tokenizers:
    sid_artefacts = tables.load_sid_artefacts(paths.sid_dir(workdir, name))
    item_sid = sid_artefacts.tables.item_sid
    per_stage = {}
    for kind, stage, task in (
      ("semantic", semantic_stage, "q2sid"),
      ("personalized", personalized_stage, "uq2sid"),
    ):
      if not os.path.exists(paths.sft_dir(workdir, name, stage)):
        logging.warning("evaluate: %s has no %s generator; skipped", name, stage)
        continue
      generator, retriever = load_retriever(workdir, name, stage, catalog, sid_artefacts)
      prompts = request_prompts(task, catalog, sample, item_sid, vocab, generator)
      logging.info("evaluate %s / %s on %d requests", name, stage, len(prompts))
      per_stage[kind] = evaluate_generator(
        retriever, prompts, sample, item_sid, all_beams, truncation_items
      )
    results["tokenizers"][name] = {
      "stages": per_stage,
      "num_sids": int(sid_artefacts.tables.num_sids),
      "items_per_sid_mean": float(np.mean(sid_artefacts.tables.sid_sizes)),
    }
  write_reports(paths.eval_dir(workdir), results, baseline, beam_sizes)
  return results


def write_reports(out_dir: str, results: dict, baseline: str, beam_sizes) -> str:
  """metrics.json, results.md (Tables 1-3 layout, methods as rows) and plots."""
  toks = results["tokenizers"]
  sections = [f"Test requests: {results['requests']} (seeded sample; targets = clicked items)\n"]
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
  semantic_curves = {
    name: entry["stages"]["semantic"]
    for name, entry in toks.items()
    if "semantic" in entry["stages"]
  }
  if semantic_curves:
    beams = results["beam_sizes"]
    rows = [
      {"method": name, **{f"beam {b}": curve[b]["topk_hitrate"] for b in beams}}
      for name, curve in semantic_curves.items()
    ]
    sections.append(
      report.markdown_table(
        rows,
        ["method"] + [f"beam {b}" for b in beams],
        title="Table 2 analogue: top-K truncated hitrate",
      )
    )
    rows = [
      {
        "method": name,
        **{f"beam {b}": f"{curve[b]['expanded_items']:.0f}" for b in beams},
      }
      for name, curve in semantic_curves.items()
    ]
    sections.append(
      report.markdown_table(
        rows, ["method"] + [f"beam {b}" for b in beams], title="Items after expansion (mean)"
      )
    )
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
  text = "\n".join(sections)
  io_utils.write_json(os.path.join(out_dir, "metrics.json"), results)
  io_utils.write_text(os.path.join(out_dir, "results.md"), text)
  print(text)
  return text
