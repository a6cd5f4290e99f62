"""Sequential-recommendation evaluation: full ranking from a `seqrec` generator.

For each tokenizer, the `seqrec` generator (history SIDs -> next item's SID)
decodes every valid and test user with constrained beam search. Beams become
one ranked list over the WHOLE catalog:
  1. beam order: items of the best beam first, then the next beam's, ...;
  2. inside one SID cluster, by a within-cluster rule (`metrics.ranked_items`):
     'efficiency' = descending train popularity (the catalog's efficiency
     score), 'item_id' = catalog order (ignores popularity);
  3. items that no beam reached follow, by descending train popularity (ties by
     item id), so every list ranks all N items and Recall/NDCG@K are full-ranking
     metrics for any K.
Metrics are leave-one-out Recall@K (= HIT@K) and NDCG@K. Every (rule, beam
size) pair is run on both splits; the pair with the best valid `select_metric`
is the tokenizer's reported test row (test never selects). The most-popular
ranking (step 3 alone) is scored by the same code as a reference row.
`write_seqrec_reports` writes the job's metrics.json and results.md.
"""

from __future__ import annotations

import os
import time

import numpy as np
from absl import logging

from gr_jax import io_utils
from gr_jax.data import schema, seqio_tasks
from gr_jax.eval import metrics, report, seqrec_compare, stats
from gr_jax.models.generator import Generator
from gr_jax.models.token_layout import PAD_ID
from gr_jax.serving.retriever import Retriever

WITHIN_CLUSTER_RULES = ("efficiency", "item_id")


def popularity_order(efficiency_score: np.ndarray) -> np.ndarray:
  """[N] item ids by descending score, ties by ascending item id."""
  return np.argsort(-np.asarray(efficiency_score, np.float64), kind="stable").astype(np.int32)


def complete_ranking(ranked: np.ndarray, fill_order: np.ndarray) -> np.ndarray:
  """Appends the items missing from each list in `fill_order`.

  Args:
    ranked: [R, W] de-duplicated item ids, best first, PAD_ITEM-padded.
    fill_order: [N] every item id once, in the order unreached items rank.

  Returns:
    [R, N] int32: each row is a permutation of the catalog.
  """
  num_items = len(fill_order)
  out = np.empty((len(ranked), num_items), np.int32)
  for row, items in enumerate(ranked):
    items = items[items != schema.PAD_ITEM]
    reached = np.zeros(num_items, bool)
    reached[items] = True
    out[row, : len(items)] = items
    out[row, len(items) :] = fill_order[~reached[fill_order]]
  return out


def seqrec_prompts(catalog, logs, split: str, item_sid, vocab, generator: Generator):
  """One seqrec prompt per request of `split`.

  Returns:
    (prompts [R, P] int32, target item [R] int32).

  Raises:
    ValueError: a request of the split got no (or more than one) example.
  """
  examples = seqio_tasks.build_examples(
    "seqrec", catalog, logs, split, item_sid, vocab, generator.layout, generator.prompt_len
  )
  num_rows = int((logs.split == schema.SPLITS.index(split)).sum())
  if len(np.unique(examples["request_row"])) != num_rows or len(examples["tokens"]) != num_rows:
    raise ValueError(
      f"seqrec {split}: {len(examples['tokens'])} examples for {num_rows} requests; "
      "leave-one-out needs exactly one target per request"
    )
  return examples["tokens"][:, : generator.prompt_len], examples["target_item"]


def decode_by_length(retriever: Retriever, prompts: np.ndarray, beam_size: int, min_width=16):
  """`retriever.decode` over groups of prompts of similar length, each cut to its width.

  Prompts are left-padded and padding changes no score, so a prompt cut to its real
  tokens decodes the same; uncut, every short history would pay the prefill of the
  longest. Group widths are powers of two (one compiled program each), capped at the
  prompts' width.

  Returns:
    (sids [R, K, L], scores [R, K], valid [R, K]) in prompt order.
  """
  full = prompts.shape[1]
  lengths = np.maximum((prompts != PAD_ID).sum(-1), 1)  # [R]
  widths = np.minimum(full, np.maximum(min_width, 2 ** np.ceil(np.log2(lengths)))).astype(int)
  outputs = None
  for width in np.unique(widths):
    rows = np.flatnonzero(widths == width)
    parts = retriever.decode(prompts[rows, full - width :], beam_size)
    if outputs is None:
      outputs = [np.empty((len(prompts), *p.shape[1:]), p.dtype) for p in parts]
    for out, part in zip(outputs, parts):
      out[rows] = part
  return tuple(outputs)


def rank_and_score(sids, valid, sid_tables, efficiency_score, targets, rule, ks, chunk=512):
  """Beams -> full rankings (module docstring) -> metrics.

  Args:
    sids: [R, K, L] decoded SIDs, best first.
    valid: [R, K] bool, False for beams that found nothing.
    sid_tables: the SID -> items table.
    efficiency_score: [N] train popularity (within-cluster key and fill order).
    targets: [R] held-out item per request.
    rule: within-cluster rule (WITHIN_CLUSTER_RULES).
    ks: metric cut-offs.
    chunk: requests ranked at once (bounds the [chunk, N] buffers).

  Returns:
    ({recall@K, ndcg@K, reached_items (mean items the beams reached), mean_rank,
     ci: {metric: {value, low, high}} (95% bootstrap over requests)},
     {recall@K, ndcg@K: [R] per-request values}).
  """
  fill_order = popularity_order(efficiency_score)
  num_items = len(fill_order)
  tops, ranks, reached = [], [], []
  for start in range(0, len(sids), chunk):
    part = slice(start, start + chunk)
    ranked = metrics.ranked_items(
      sids[part],
      valid[part],
      sid_tables,
      efficiency_score,
      max_items=num_items,
      within_cluster=rule,
    )  # [r, N]
    reached.append((ranked != schema.PAD_ITEM).sum(-1))
    full = complete_ranking(ranked, fill_order)  # [r, N]
    tops.append(full[:, : max(ks)])
    ranks.append(np.argmax(full == targets[part, None], axis=-1))
  per_request = metrics.recall_ndcg(np.concatenate(tops), targets, ks, per_request=True)
  scores = {name: float(values.mean()) for name, values in per_request.items()}
  scores["ci"] = {name: stats.bootstrap_mean(v).to_json() for name, v in per_request.items()}
  scores["reached_items"] = float(np.mean(np.concatenate(reached)))
  scores["mean_rank"] = float(np.mean(np.concatenate(ranks)) + 1)
  return scores, per_request


def sample_seqrec_logs(logs: schema.SearchLogs, max_valid: int, max_test: int, seed: int):
  """Every train row plus seeded samples of valid / test rows (0 = every row of the split)."""
  keep = logs.split == schema.SPLITS.index("train")
  rng = np.random.default_rng(seed)
  for split, limit in (("valid", max_valid), ("test", max_test)):
    rows = np.flatnonzero(logs.split == schema.SPLITS.index(split))
    if limit and limit < len(rows):
      rows = rng.choice(rows, limit, replace=False)
    keep[rows] = True
  return logs.select(keep)


def most_popular(catalog: schema.Catalog, logs: schema.SearchLogs, ks) -> tuple[dict, dict]:
  """({split: request count}, {split: metrics}) of the most-popular ranking (step 3 alone)."""
  fill_order = popularity_order(catalog.efficiency_score)
  requests, scores = {}, {}
  for split in ("valid", "test"):
    targets = logs.clicked[logs.split == schema.SPLITS.index(split), 0]
    requests[split] = int(len(targets))
    everything = np.broadcast_to(fill_order, (len(targets), catalog.num_items))
    scores[split] = metrics.recall_ndcg(everything, targets, ks)
  return requests, scores


def evaluate_seqrec_generator(
  retriever: Retriever,
  generator: Generator,
  catalog,
  logs,
  vocab,
  beam_sizes,
  rules,
  ks,
  *,
  splits=("valid", "test"),
  prompts_fn=seqrec_prompts,
  per_user: dict | None = None,
) -> dict:
  """{'<rule>/beam<K>': {split: scores}} of one generator over every (rule, beam size).

  `prompts_fn` has `seqrec_prompts`' signature: the prompt format the generator was
  trained on (`models.seq_task.sequence_prompts` for sequence-trained generators).
  Given `per_user`, each run's test users' values are added to it as
  {'<rule>/beam<K>': seqrec_compare.per_user_values(...)} (for paired comparisons).
  """
  runs: dict = {}
  for split in splits:
    prompts, targets = prompts_fn(
      catalog, logs, split, retriever.sid_tables.item_sid, vocab, generator
    )
    for beam in sorted(set(beam_sizes)):
      start = time.perf_counter()
      sids, _, valid = decode_by_length(retriever, prompts, beam)  # [R, K, L], [R, K]
      decode_seconds = time.perf_counter() - start
      for rule in rules:
        scores, per_request = rank_and_score(
          sids, valid, retriever.sid_tables, catalog.efficiency_score, targets, rule, ks
        )
        if per_user is not None and split == "test":
          per_user[f"{rule}/beam{beam}"] = seqrec_compare.per_user_values(
            logs, split, targets, per_request
          )
        scores.update(
          valid_beam_share=float(valid.mean()), decode_users_per_s=len(prompts) / decode_seconds
        )
        runs.setdefault(f"{rule}/beam{beam}", {})[split] = scores
        logging.info("seqrec %s %s/beam%d: %s", split, rule, beam, scores)
  return runs


def write_seqrec_reports(out_dir: str, results: dict, ks, select_metric: str) -> str:
  """metrics.json and results.md: selected test rows, then the full ablation."""
  columns = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")]

  def row(method, scores):
    return {"method": method, **{c: f"{scores[c]:.4f}" for c in columns}}

  selected_rows = [row("most popular", results["most_popular"]["test"])]
  ablation_rows = []
  for name, entry in results["tokenizers"].items():
    selected_rows.append(row(f"{name} ({entry['selected']})", entry["test"]))
    for key, splits in entry["runs"].items():
      ablation_rows.append(
        {
          **row(f"{name} {key}", splits["test"]),
          f"valid {select_metric}": f"{splits['valid'][select_metric]:.4f}",
          "reached items": f"{splits['test']['reached_items']:.0f}",
          "mark": "selected" if key == entry["selected"] else "",
        }
      )
  requests = results["requests"]
  text = "\n".join(
    [
      f"Full ranking over {results['num_items']} items; {requests['test']} test / "
      f"{requests['valid']} valid users; rows selected by valid {select_metric}.\n",
      report.markdown_table(selected_rows, ["method", *columns], title="Test (selected rows)"),
      report.markdown_table(
        ablation_rows,
        ["method", *columns, f"valid {select_metric}", "reached items", "mark"],
        title="Ablation: within-cluster rule x beam size (test; valid selects)",
      ),
    ]
  )
  io_utils.write_json(os.path.join(out_dir, "metrics.json"), results)
  io_utils.write_text(os.path.join(out_dir, "results.md"), text)
  print(text)
  return text
