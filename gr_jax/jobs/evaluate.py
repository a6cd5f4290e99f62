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

import functools
import os

import gin
from absl import logging

from gr_jax import workdir as workdir_lib
from gr_jax.eval import online as online_lib
from gr_jax.eval import protocol, tables
from gr_jax.serving import retriever as retriever_lib
from gr_jax.train import partitioning


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
  kinds: tuple[str, ...] = ("semantic", "personalized"),
  online: bool = True,
):
  """Runs the evaluation described in the module docstring; returns the results dict.

  Tokenizers outside `curve_tokenizers` (default: all) get `beam_sizes` only. On test
  after a valid run, semantic generators get `beam_sizes` and the chosen beams.
  `kinds` picks the generators; `online` serves the items to a simulated world's users.
  Each generator's values are kept in eval/<split>/parts/, so a stopped run resumes.
  """
  catalog, logs = workdir_lib.load_data(workdir)
  rows = protocol.sample_requests(logs, split, max_requests, seed)
  world = workdir_lib.load_world(workdir) if online else None
  vocab = workdir_lib.text_vocabulary(workdir).as_seqio_vocabulary()
  sample = protocol.RequestSample(
    split, rows, logs.select(rows), catalog, vocab, online_lib.for_world(world, catalog.num_items)
  )
  mesh, rules = partitioning.make_mesh(), partitioning.logical_rules()
  stages = {"semantic": semantic_stage, "personalized": personalized_stage}
  valid_choices = protocol.load_choices(workdir_lib.eval_dir(workdir)) if split == "test" else None
  curve_tokenizers = tokenizers if curve_tokenizers is None else curve_tokenizers
  values, extras = {}, {}
  for name in tokenizers:
    sid_artefacts = workdir_lib.load_sid(workdir, name, catalog.num_items)
    grids = (curve_beam_sizes, truncation_beam_sizes) if name in curve_tokenizers else ((), ())
    beams = {
      "semantic": protocol.semantic_beams(beam_sizes, *grids, valid_choices, name),
      "personalized": beam_sizes,
    }
    for kind, task in protocol.KINDS:
      if kind not in kinds:
        continue
      if not os.path.exists(workdir_lib.sft_dir(workdir, name, stages[kind])):
        logging.warning("evaluate: %s has no %s generator; skipped", name, stages[kind])
        continue
      workdir_lib.require_generator(workdir, name, stages[kind])
      load = functools.partial(
        retriever_lib.load_retriever,
        workdir,
        name,
        stages[kind],
        catalog,
        sid_artefacts,
        mesh=mesh,
        rules=rules,
      )
      part = os.path.join(workdir_lib.eval_dir(workdir), split, "parts", f"{name}.{kind}.npz")
      values.setdefault(name, {})[kind] = protocol.score_resumable(
        part,
        workdir_lib.stage_key(workdir, name, stages[kind]),
        sample,
        load,
        task,
        sid_artefacts.tables.item_sid,
        beams[kind],
        truncation_items,
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
