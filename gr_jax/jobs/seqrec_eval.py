"""Sequential-recommendation evaluation job: full ranking from a `seqrec` generator.

For each tokenizer, the `seqrec` generator (history SIDs -> next item's SID) decodes
every valid and test user with constrained beam search; the beams become one ranked
list over the whole catalog and are scored by leave-one-out Recall@K / NDCG@K
(gr_jax/eval/seqrec.py states the ranking rule). The (rule, beam size) pair with the
best valid `select_metric` is the tokenizer's reported test row.
Writes WORKDIR/eval/<stage>/metrics.json, results.md and <tokenizer>/per_user_test.npz
(the reported row's per-user values, for `compare_seqrec`).
"""

from __future__ import annotations

import os

import gin
from absl import logging

from gr_jax import errors
from gr_jax import workdir as workdir_lib
from gr_jax.eval import protocol, seqrec, seqrec_compare
from gr_jax.models import seq_task
from gr_jax.serving import retriever as retriever_lib
from gr_jax.train import partitioning

# Prompt format of each stage's generator (default: seqrec_prompts).
PROMPTS = {"seq": seq_task.sequence_prompts}


@gin.configurable
def evaluate_seqrec(
  workdir: str,
  tokenizers: tuple[str, ...] = ("cq_sid", "rqvae"),
  stage: str = "seqrec",
  beam_sizes: tuple[int, ...] = (20, 50),
  within_cluster_rules: tuple[str, ...] = seqrec.WITHIN_CLUSTER_RULES,
  ks: tuple[int, ...] = (10, 50),
  select_metric: str = "ndcg@10",
  max_valid_requests: int = 0,
  max_test_requests: int = 0,
  seed: int = 0,
):
  """Runs the evaluation of the module docstring; returns the metrics dict.

  Args:
    workdir: the run's work directory (data/, sid/<tok>/, sft/<tok>/<stage>/).
    tokenizers: SID spaces to evaluate (each needs a trained `stage` generator).
    stage: SFT stage directory holding the generator: 'seqrec' (one target per
      prefix, text prompts) or 'seq' (sequence training, SID-only prompts).
    beam_sizes: beam sizes decoded (each a separate constrained beam search).
    within_cluster_rules: rules ordering the items of one SID (WITHIN_CLUSTER_RULES).
    ks: cut-offs of Recall@K / NDCG@K.
    select_metric: valid metric that picks each tokenizer's (rule, beam) row.
    max_valid_requests: select on a seeded sample of this many valid users (0 = all).
    max_test_requests: report on a seeded sample of this many test users (0 = all).
    seed: sample seed.

  Returns:
    {num_items, requests, most_popular, tokenizers: {name: {runs, selected, test}}}.

  Raises:
    ValueError: a bad rule, cut-off or select metric.
  """
  for rule in within_cluster_rules:
    if rule not in seqrec.WITHIN_CLUSTER_RULES:
      raise ValueError(f"evaluate_seqrec.within_cluster_rules: unknown rule '{rule}'")
  if select_metric not in {f"{m}@{k}" for m in ("recall", "ndcg") for k in ks}:
    raise errors.UserError(
      f"evaluate_seqrec.select_metric: '{select_metric}' is not recall@K / ndcg@K"
    )
  catalog, logs = workdir_lib.load_data(workdir)
  logs = seqrec.sample_seqrec_logs(logs, max_valid_requests, max_test_requests, seed)
  # Sequence-trained generators read SIDs only: no text vocabulary.
  vocab = None if stage == "seq" else workdir_lib.text_vocabulary(workdir).as_seqio_vocabulary()
  mesh, rules = partitioning.make_mesh(), partitioning.logical_rules()
  requests, most_popular = seqrec.most_popular(catalog, logs, ks)
  results: dict = {"num_items": catalog.num_items, "requests": requests}
  results["most_popular"] = most_popular
  results["tokenizers"] = {}
  out_dir = os.path.join(workdir_lib.eval_dir(workdir), stage)
  for name in tokenizers:
    stage_dir = workdir_lib.sft_dir(workdir, name, stage)
    if not workdir_lib.has_generator(stage_dir):
      logging.warning("seqrec eval: %s has no %s generator in %s; skipped", name, stage, stage_dir)
      continue
    sid_artefacts = workdir_lib.load_sid(workdir, name, catalog.num_items)
    workdir_lib.require_generator(workdir, name, stage)
    generator, retriever = retriever_lib.load_retriever(
      workdir, name, stage, catalog, sid_artefacts, mesh=mesh, rules=rules
    )
    per_user: dict = {}
    runs = seqrec.evaluate_seqrec_generator(
      retriever, generator, catalog, logs, vocab, beam_sizes, within_cluster_rules, ks,
      prompts_fn=PROMPTS.get(stage, seqrec.seqrec_prompts),
      per_user=per_user,
    )  # fmt: skip
    selected = max(runs, key=lambda key: runs[key]["valid"][select_metric])
    seqrec_compare.write(os.path.join(out_dir, name), per_user[selected])
    results["tokenizers"][name] = {
      "runs": runs,
      "selected": selected,
      "test": runs[selected]["test"],
      **protocol.sid_summary(sid_artefacts.tables),
    }
  seqrec.write_seqrec_reports(out_dir, results, ks, select_metric)
  return results
