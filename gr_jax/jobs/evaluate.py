"""Evaluation job: the paper's Tables 1-3 (and hitrate-vs-beam curves) on WORKDIR's data.

For each tokenizer it loads the Q2SID generator (semantic hitrate, Table 1) and the
UQ2SID generator (personalized hitrate, Table 3), decodes a fixed, seeded sample of
test requests with constrained beam search at every beam size, and scores
(gr_jax/eval/protocol.py):
  - hitrate@beam: share of the request's clicked items whose SID is in the beams;
  - clk@beam / exp@beam: the same for clicked / exposed items (Table 4's metrics);
  - top-K hitrate: share of clicked items inside the expanded item set truncated to
    K items by efficiency score (Table 2).
Writes WORKDIR/eval/metrics.json, results.md and hitrate_vs_beam*.png.
"""

from __future__ import annotations

import os

import gin
from absl import logging

from gr_jax import workdir as workdir_lib
from gr_jax.eval import protocol
from gr_jax.serving import retriever as retriever_lib
from gr_jax.train import partitioning


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
  catalog, logs = workdir_lib.load_data(workdir)
  rows = protocol.sample_test_requests(logs, max_requests, seed)
  sample = logs.select(rows)
  vocab = workdir_lib.text_vocabulary(workdir).as_seqio_vocabulary()
  mesh, rules = partitioning.make_mesh(), partitioning.logical_rules()
  all_beams = sorted(set(beam_sizes) | set(curve_beam_sizes))
  stages = {"semantic": semantic_stage, "personalized": personalized_stage}
  results: dict = {"requests": int(len(rows)), "beam_sizes": all_beams, "tokenizers": {}}
  for name in tokenizers:
    sid_artefacts = workdir_lib.load_sid(workdir, name)
    item_sid = sid_artefacts.tables.item_sid
    per_stage = {}
    for kind, task in protocol.KINDS:
      stage = stages[kind]
      if not os.path.exists(workdir_lib.sft_dir(workdir, name, stage)):
        logging.warning("evaluate: %s has no %s generator; skipped", name, stage)
        continue
      generator, retriever = retriever_lib.load_retriever(
        workdir, name, stage, catalog, sid_artefacts, mesh=mesh, rules=rules
      )
      prompts = protocol.request_prompts(task, catalog, sample, item_sid, vocab, generator)
      logging.info("evaluate %s / %s on %d requests", name, stage, len(prompts))
      per_stage[kind] = protocol.evaluate_generator(
        retriever, prompts, sample, item_sid, all_beams, truncation_items
      )
    results["tokenizers"][name] = {
      "stages": per_stage,
      **protocol.sid_summary(sid_artefacts.tables),
    }
  protocol.write_reports(workdir_lib.eval_dir(workdir), results, baseline, beam_sizes)
  return results
