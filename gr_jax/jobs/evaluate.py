"""Evaluation job: the paper's Tables 1-3 (and hitrate-vs-beam curves) on one split.

For each tokenizer it loads the Q2SID generator (semantic hitrate, Table 1) and the
UQ2SID generator (personalized hitrate, Table 3) and scores a seeded sample of the
split's requests at every beam size (the protocol: gr_jax/eval/protocol.py). Every
number carries a 95% bootstrap interval over requests, every method is compared
with the baseline on the same requests (paired), and beams are chosen on valid and
read on test: run split='valid' first, then split='test'.

Writes WORKDIR/eval/<split>/metrics.json, results.md, per_request.npz and
hitrate_vs_beam PNGs.
"""

from __future__ import annotations

import os

import gin
from absl import logging

from gr_jax import io_utils
from gr_jax import workdir as workdir_lib
from gr_jax.eval import protocol, tables
from gr_jax.serving import retriever as retriever_lib
from gr_jax.train import partitioning


def _valid_choices(workdir: str):
  path = os.path.join(workdir_lib.eval_dir(workdir), "valid", "metrics.json")
  if not os.path.exists(path):
    return None
  raw = io_utils.read_json(path).get("choices")
  return protocol.choices_from_json(raw) if raw else None


@gin.configurable
def evaluate(
  workdir: str,
  tokenizers: tuple[str, ...] = ("cq_sid", "rqvae"),
  baseline: str = "rqvae",
  split: str = "test",
  semantic_stage: str = "q2sid",
  personalized_stage: str = "uq2sid",
  beam_sizes: tuple[int, ...] = (1, 10, 100),
  curve_beam_sizes: tuple[int, ...] = (1, 5, 10, 20, 50, 100),
  truncation_beam_sizes: tuple[int, ...] = (),
  truncation_items: int = 1000,
  max_requests: int = 1000,
  seed: int = 0,
  bootstrap_resamples: int = 2000,
  curve_tokenizers: tuple[str, ...] | None = None,
):
  """Runs the evaluation described in the module docstring; returns the results dict.

  Tokenizers outside `curve_tokenizers` (default: all) are scored at `beam_sizes`
  only (the ablation rows of Table 1). On test, once valid has chosen its beams,
  the semantic generators are scored at `beam_sizes` and the chosen beams only.
  """
  protocol.check_split(split)
  catalog, logs = workdir_lib.load_data(workdir)
  rows = protocol.sample_requests(logs, split, max_requests, seed)
  sample = logs.select(rows)
  vocab = workdir_lib.text_vocabulary(workdir).as_seqio_vocabulary()
  mesh, rules = partitioning.make_mesh(), partitioning.logical_rules()
  stages = {"semantic": semantic_stage, "personalized": personalized_stage}
  valid_choices = _valid_choices(workdir) if split == "test" else None
  curve_tokenizers = tokenizers if curve_tokenizers is None else curve_tokenizers
  values, extras = {}, {}
  for name in tokenizers:
    sid_artefacts = workdir_lib.load_sid(workdir, name, catalog.num_items)
    item_sid = sid_artefacts.tables.item_sid
    semantic_beams = protocol.semantic_beams(
      beam_sizes,
      curve_beam_sizes if name in curve_tokenizers else (),
      truncation_beam_sizes if name in curve_tokenizers else (),
      valid_choices,
    )
    beams_of_kind = {"semantic": semantic_beams, "personalized": beam_sizes}
    for kind, task in protocol.KINDS:
      stage = stages[kind]
      if not os.path.exists(workdir_lib.sft_dir(workdir, name, stage)):
        logging.warning("evaluate: %s has no %s generator; skipped", name, stage)
        continue
      workdir_lib.require_generator(workdir, name, stage)
      generator, retriever = retriever_lib.load_retriever(
        workdir, name, stage, catalog, sid_artefacts, mesh=mesh, rules=rules
      )
      prompts = protocol.request_prompts(task, catalog, sample, split, item_sid, vocab, generator)
      logging.info("evaluate %s / %s on %d %s requests", name, stage, len(prompts), split)
      values.setdefault(name, {})[kind] = protocol.score_generator(
        retriever, prompts, sample, item_sid, beams_of_kind[kind], truncation_items
      )
    extras[name] = protocol.sid_summary(sid_artefacts.tables)
  results = protocol.build_results(
    values,
    split=split,
    baseline=baseline,
    beam_sizes=beam_sizes,
    curve_beam_sizes=curve_beam_sizes,
    truncation_beam_sizes=truncation_beam_sizes,
    truncation_items=truncation_items,
    requests=len(rows),
    sample_seed=seed,
    resamples=bootstrap_resamples,
    valid_choices=valid_choices,
  )
  for name, extra in extras.items():
    results["tokenizers"].setdefault(name, {"stages": {}}).update(extra)
  text = tables.write(os.path.join(workdir_lib.eval_dir(workdir), split), results, values, rows)
  print(text)
  return results
