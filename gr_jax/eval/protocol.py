"""The evaluation protocol: which requests, how a generator is scored, what is chosen where.

- Requests: a seeded sample of one split (valid or test) with a query and at least
  one clicked item, the same for every system, so systems are compared on the same
  requests (paired).
- Scoring: constrained beam search at each beam size, then per request the share
  of its clicked / exposed / purchased items whose SID is among the beams (clk@K,
  exp@K, purchase@K; hitrate = clk), and the share of its clicked items inside the
  union of the expanded items ranked by efficiency score and cut at
  `truncation_items` (topk@K, METHOD.md's top-1K protocol).
- Summaries: every mean carries a bootstrap interval over requests
  (`gr_jax/eval/stats.py`); every system is compared with the baseline by a paired
  bootstrap of the relative difference.
- Selection: beams (the "half the beams" beam, Table 2's operating points) are
  chosen on the valid split and read once on test (`choose_beams`, `read_choices`).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from absl import logging

from gr_jax import errors, io_utils
from gr_jax.data import schema, seqio_tasks
from gr_jax.eval import metrics, stats
from gr_jax.eval.online import OnlineWorld
from gr_jax.sid import tables

SPLITS = ("valid", "test")
# (result key, SFT stage task) of the two evaluated generators.
KINDS = (("semantic", "q2sid"), ("personalized", "uq2sid"))
TARGET_SETS = (("clk", "clicked"), ("exp", "exposed"), ("purchase", "purchased"))
# Per-request metrics with intervals: logged hitrates, the top-K hitrate, and the
# simulated online clicks / purchases (worlds only).
METRICS = ("clk", "exp", "purchase", "topk", "onclk", "onbuy")
# Share of requests whose expanded union must exceed the truncation for a beam to
# be a Table 2 operating point ("beams large enough to exceed 1,000 items").
TRUNCATION_BINDING_SHARE = 0.5


def check_split(split: str) -> str:
  if split not in SPLITS:
    raise errors.UserError(
      f"split: '{split}' is not one of {SPLITS} (train requests are not scored)"
    )
  return split


def sample_requests(
  logs: schema.SearchLogs, split: str, max_requests: int, seed: int
) -> np.ndarray:
  """Seeded sample of `split` rows with a query and a clicked item (same for every method).

  Requests with an empty query (e.g. Amazon targets without a category) have no
  search prompt, so they are left out.
  """
  check_split(split)
  has_query = np.array([bool(str(q).strip()) for q in logs.query])
  rows = np.flatnonzero(
    (logs.split == schema.SPLITS.index(split)) & (logs.clicked >= 0).any(-1) & has_query
  )
  if not len(rows):
    raise errors.EmptyDatasetError(
      f"split '{split}' has no request with a query and a clicked item: nothing to score"
    )
  rng = np.random.default_rng(seed)
  if len(rows) > max_requests:
    rows = np.sort(rng.choice(rows, max_requests, replace=False))
  return rows


def request_prompts(task, catalog, logs, split, item_sid, vocab, generator) -> np.ndarray:
  """[B, T] prompt tokens, one per row of `logs` (all rows of `split`, with a click)."""
  examples = seqio_tasks.build_examples(
    task, catalog, logs, split, item_sid, vocab, generator.layout, generator.prompt_len
  )
  rows, first = np.unique(examples["request_row"], return_index=True)
  if len(rows) != logs.num_requests:
    raise ValueError(f"{task}: {logs.num_requests - len(rows)} sampled requests have no prompt")
  return examples["tokens"][first, : generator.prompt_len]


def _shares_or_nan(hit: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """[B] share of targets hit, NaN for requests without a target of this kind."""
  shares, rows = metrics.request_shares(hit, mask)
  out = np.full(len(mask), np.nan)
  out[rows] = shares
  return out


def score_generator(
  retriever,
  prompts: np.ndarray,
  logs: schema.SearchLogs,
  item_sid,
  beam_sizes,
  truncation_items,
  *,
  online: OnlineWorld | None = None,
  request_rows: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
  """Per-request values of one generator at each beam size.

  Args:
    retriever, prompts: the generator and its [B, T] prompts.
    logs: the B sampled requests.
    item_sid: [N, L] SID of every item.
    beam_sizes: beams to decode at.
    truncation_items: the top-K cut.
    online: serve the channel's items to the world's simulated users as well.
    request_rows: [B] rows of the sampled requests in the world's logs (with online).

  Returns:
    {'<metric>@<beam>': [B] float} for metric in clk, exp, purchase, topk (NaN where
    the request has no target of that kind), 'reached@<beam>' (distinct items the
    beams expand to) and 'valid@<beam>' (share of beams that found a SID); with
    `online` also 'onclk@<beam>' / 'onbuy@<beam>', the expected clicks / purchases
    when the channel's top `truncation_items` items (beam order) feed the ranker.
  """
  level_sizes = retriever.sid_tables.level_sizes
  values: dict[str, np.ndarray] = {}
  for beam in sorted(set(int(b) for b in beam_sizes)):
    sids, _, valid = retriever.decode(prompts, beam)  # [B, K, L], [B, K]
    for metric, field in TARGET_SETS:
      hit, mask = metrics.target_sid_hits(sids, valid, getattr(logs, field), item_sid, level_sizes)
      values[f"{metric}@{beam}"] = _shares_or_nan(hit, mask)
    ranked = metrics.ranked_items(
      sids,
      valid,
      retriever.sid_tables,
      retriever.efficiency_score,
      max_items=truncation_items,
      order="efficiency",
    )
    values[f"topk@{beam}"] = _shares_or_nan(*metrics.item_hits(ranked, logs.clicked))
    if online is not None:
      served = metrics.ranked_items(
        sids,
        valid,
        retriever.sid_tables,
        retriever.efficiency_score,
        max_items=truncation_items,
      )
      engagement = online.serve(request_rows, served)
      values[f"onclk@{beam}"] = engagement["clicks"]
      values[f"onbuy@{beam}"] = engagement["purchases"]
    values[f"reached@{beam}"] = metrics.reached_item_counts(sids, valid, retriever.sid_tables)
    values[f"valid@{beam}"] = valid.mean(-1)
    logging.info(
      "beam %d: clk %.4f exp %.4f topk %.4f reached %.0f",
      beam,
      np.nanmean(values[f"clk@{beam}"]),
      np.nanmean(values[f"exp@{beam}"]),
      np.nanmean(values[f"topk@{beam}"]),
      values[f"reached@{beam}"].mean(),
    )
  return values


def evaluate_policy(
  retriever,
  generator,
  catalog,
  logs,
  item_sid,
  vocab,
  requests,
  beams,
  online=None,
  split: str = "test",
  keep: str | None = None,
) -> dict:
  """clk@k / exp@k (and online values) of a personalized generator on a split's sample.

  `keep`: an .npz path for the per-request values (paired comparisons of policies).
  """
  rows = sample_requests(logs, split, requests, seed=0)
  sample = RequestSample(split, rows, logs.select(rows), catalog, vocab, online)
  values = sample.score(retriever, generator, "uq2sid", item_sid, beams, 1000)
  if keep:
    io_utils.write_npz(keep, {"request_rows": rows, **values})
  return summarize(values, 1000, resamples=stats.RESAMPLES)


def sid_summary(sid_tables: tables.SidTables) -> dict:
  """Size of a SID space, reported beside its metrics."""
  return {
    "num_sids": int(sid_tables.num_sids),
    "items_per_sid_mean": float(np.mean(sid_tables.sid_sizes)),
  }


@dataclasses.dataclass(frozen=True)
class RequestSample:
  """One split's sampled requests, ready to score generators on.

  Attributes:
    split: 'valid' or 'test'.
    rows: [B] rows of the sampled requests in the run's logs.
    logs: the sampled requests.
    catalog: the run's catalog.
    vocab: the run's text vocabulary (seqio).
    online: the world's simulated users, or None (real data, or not asked for).
  """

  split: str
  rows: np.ndarray
  logs: schema.SearchLogs
  catalog: schema.Catalog
  vocab: object
  online: OnlineWorld | None = None

  def score(self, retriever, generator, task, item_sid, beam_sizes, truncation_items) -> dict:
    """`score_generator` of one generator on this sample's prompts for `task`."""
    prompts = request_prompts(
      task, self.catalog, self.logs, self.split, item_sid, self.vocab, generator
    )
    logging.info("evaluate %s on %d %s requests", task, len(prompts), self.split)
    return score_generator(
      retriever,
      prompts,
      self.logs,
      item_sid,
      beam_sizes,
      truncation_items,
      online=self.online,
      request_rows=self.rows,
    )


def score_resumable(
  path: str, key: str, sample: RequestSample, load, task, item_sid, beams, truncation_items
) -> dict:
  """`sample.score(...)`, kept in `path`: a stopped evaluation resumes per generator, and
  a rerun with more beams computes only the beams it does not have yet.

  Args:
    path: the .npz that holds (or will hold) this generator's values.
    key: what the values depend on besides requests and beams (the generator's
      checkpoint, the SID table); a file with another key is recomputed.
    sample: the requests.
    load: () -> (generator, retriever), called only when beams are missing.
    task, item_sid, beams, truncation_items: as `RequestSample.score`.
  """
  beams = sorted(int(b) for b in beams)
  signature = json.dumps(
    {"key": key, "truncation_items": truncation_items, "online": sample.online is not None}
  )
  kept: dict[str, np.ndarray] = {}
  if os.path.exists(path):
    with np.load(path) as stored:
      if str(stored["signature"]) == signature and np.array_equal(
        stored["request_rows"], sample.rows
      ):
        kept = {
          name: stored[name] for name in stored.files if name not in ("signature", "request_rows")
        }
  missing = [b for b in beams if f"clk@{b}" not in kept]
  if missing:
    generator, retriever = load()
    kept.update(sample.score(retriever, generator, task, item_sid, missing, truncation_items))
    io_utils.write_npz(
      path, {"signature": np.array(signature), "request_rows": sample.rows, **kept}
    )
  else:
    logging.info("evaluate: %s holds every beam asked for; reused", path)
  return {name: value for name, value in kept.items() if int(name.split("@")[1]) in beams}


def load_choices(eval_dir: str) -> BeamChoices | None:
  """The beams a valid run in `eval_dir` chose, or None."""
  path = os.path.join(eval_dir, "valid", "metrics.json")
  if not os.path.exists(path):
    return None
  raw = io_utils.read_json(path).get("choices")
  return choices_from_json(raw) if raw else None


def beams_of(values: dict[str, np.ndarray]) -> list[int]:
  return sorted({int(key.split("@")[1]) for key in values if key.startswith("clk@")})


def _finite(values: np.ndarray) -> np.ndarray:
  return values[np.isfinite(values)]


def summarize(
  values: dict[str, np.ndarray], truncation_items: int, *, resamples: int, seed: int = 0
) -> dict:
  """{beam: {metric: mean, 'ci': {metric: [low, high]}, ...}} from `score_generator` values.

  'hitrate' is clk (the paper's hitrate: the request's clicked items). Each beam
  also has the mean items reached ('expanded_items'), the share of requests whose
  union exceeds the truncation ('share_over_truncation'), the share of valid beams
  and the number of requests with a click.
  """
  out = {}
  for beam in beams_of(values):
    entry: dict = {"ci": {}}
    for metric in METRICS:
      if f"{metric}@{beam}" not in values:
        continue
      kept = _finite(values[f"{metric}@{beam}"])
      if not kept.size:
        continue
      interval = stats.bootstrap_mean(kept, resamples=resamples, seed=seed)
      entry[metric] = interval.value
      entry["ci"][metric] = [interval.low, interval.high]
    entry["hitrate"] = entry["clk"]
    entry["ci"]["hitrate"] = entry["ci"]["clk"]
    entry["topk_hitrate"] = entry["topk"]
    entry["ci"]["topk_hitrate"] = entry["ci"]["topk"]
    reached = values[f"reached@{beam}"]
    entry["expanded_items"] = float(reached.mean())
    entry["share_over_truncation"] = float((reached > truncation_items).mean())
    entry["valid_share"] = float(values[f"valid@{beam}"].mean())
    entry["requests"] = int(np.isfinite(values[f"clk@{beam}"]).sum())
    out[beam] = entry
  return out


def paired_interval(system: np.ndarray, baseline: np.ndarray, *, resamples: int, seed: int = 0):
  """Relative difference of two per-request vectors on the requests both can score."""
  both = np.isfinite(system) & np.isfinite(baseline)
  if not both.any() or np.mean(baseline[both]) == 0.0:
    return None
  return stats.paired_relative_difference(
    system[both], baseline[both], resamples=resamples, seed=seed
  )


def compare(
  system: dict[str, np.ndarray],
  baseline: dict[str, np.ndarray],
  *,
  metrics_to_compare=("clk", "exp", "topk", "onclk", "onbuy"),
  resamples: int,
  seed: int = 0,
) -> dict:
  """{beam: {metric: relative-difference interval json}} at every beam both evaluated."""
  out = {}
  for beam in sorted(set(beams_of(system)) & set(beams_of(baseline))):
    row = {}
    for metric in metrics_to_compare:
      key = f"{metric}@{beam}"
      if key not in system or key not in baseline:
        continue
      interval = paired_interval(system[key], baseline[key], resamples=resamples, seed=seed)
      if interval is not None:
        row[metric] = interval.to_json()
    out[beam] = row
  return out


@dataclasses.dataclass(frozen=True)
class BeamChoices:
  """Beams chosen on the valid split, read once on test.

  Attributes:
    half_beams: {method: smallest beam whose hitrate reaches the baseline's
      hitrate at its largest curve beam}, None where never reached.
    reference_beam: the largest curve beam (the baseline's reference point).
    truncation_beams: {method: Table 2 operating point}: for the baseline, the
      smallest beam whose union exceeds the truncation for most requests; for
      every other method, the smallest beam whose truncated hitrate reaches the
      baseline's there (None where never reached).
  """

  half_beams: dict
  reference_beam: int
  truncation_beams: dict

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def semantic_beams(
  beam_sizes, curve_beam_sizes, truncation_beam_sizes, valid_choices=None, method=None
):
  """Beams to score a semantic generator at.

  Without choices (valid, or a test run with no valid run): the table beams, the
  curve and the truncation grid. With the choices valid made: the table beams, the
  reference beam and the beams chosen for `method` (all methods' when None), which
  is all the test report reads.
  """
  beams = {int(b) for b in beam_sizes}
  if valid_choices is None:
    return sorted(
      beams | {int(b) for b in curve_beam_sizes} | {int(b) for b in truncation_beam_sizes}
    )
  chosen = [
    beam
    for table in (valid_choices.half_beams, valid_choices.truncation_beams)
    for name, beam in table.items()
    if method is None or name == method
  ]
  beams |= {int(b) for b in chosen if b is not None} | {valid_choices.reference_beam}
  return sorted(beams)


def smallest_beam_reaching(curve: dict, key: str, target: float):
  """Smallest evaluated beam whose curve[beam][key] >= target, or None."""
  for beam in sorted(curve, key=int):
    if curve[beam].get(key) is not None and curve[beam][key] >= target:
      return int(beam)
  return None


def choose_beams(curves: dict[str, dict], baseline: str, curve_beams) -> BeamChoices:
  """Chooses the reported beams from summarized valid curves ({method: summarize(...)}).

  Raises:
    ValueError: the baseline has no curve.
  """
  if baseline not in curves:
    raise ValueError(f"baseline '{baseline}' was not evaluated; methods: {sorted(curves)}")
  base = curves[baseline]
  reference_beam = max(int(b) for b in curve_beams)
  target = base[reference_beam]["hitrate"]
  half_beams = {
    name: smallest_beam_reaching(
      {b: c for b, c in curve.items() if int(b) <= reference_beam}, "hitrate", target
    )
    for name, curve in curves.items()
  }
  truncation_beams: dict = {}
  binding = [
    b for b in sorted(base, key=int) if base[b]["share_over_truncation"] >= TRUNCATION_BINDING_SHARE
  ]
  if binding:
    base_beam = int(binding[0])
    truncation_beams[baseline] = base_beam
    for name, curve in curves.items():
      if name != baseline:
        truncation_beams[name] = smallest_beam_reaching(
          curve, "topk_hitrate", base[base_beam]["topk_hitrate"]
        )
  return BeamChoices(half_beams, reference_beam, truncation_beams)


def read_choices(
  choices: BeamChoices,
  test_values: dict[str, dict[str, np.ndarray]],
  baseline: str,
  truncation_items: int,
  *,
  resamples: int,
  seed: int = 0,
) -> dict:
  """Test-split reading of the valid-chosen beams, with paired intervals against the baseline.

  Returns:
    {'half_beams': {method: {beam, hitrate, vs_baseline}}, 'truncation': {method:
    {beam, topk_hitrate, share_over_truncation, vs_baseline}}} where vs_baseline
    compares the method at its beam with the baseline at its own beam.
  """
  base = test_values[baseline]
  out: dict = {"reference_beam": choices.reference_beam, "half_beams": {}, "truncation": {}}
  ref_key = f"clk@{choices.reference_beam}"
  for name, beam in choices.half_beams.items():
    key = f"clk@{beam}"
    if beam is None or name not in test_values or key not in test_values[name]:
      out["half_beams"][name] = {"beam": beam}
      continue
    interval = paired_interval(
      test_values[name][key], base[ref_key], resamples=resamples, seed=seed
    )
    out["half_beams"][name] = {
      "beam": beam,
      "hitrate": float(np.nanmean(test_values[name][key])),
      "vs_baseline": interval.to_json() if interval else None,
    }
  base_beam = choices.truncation_beams.get(baseline)
  for name, beam in choices.truncation_beams.items():
    key = f"topk@{beam}"
    if beam is None or name not in test_values or key not in test_values[name]:
      out["truncation"][name] = {"beam": beam}
      continue
    reached = test_values[name][f"reached@{beam}"]
    entry = {
      "beam": beam,
      "topk_hitrate": float(np.nanmean(test_values[name][key])),
      "expanded_items": float(reached.mean()),
      "share_over_truncation": float((reached > truncation_items).mean()),
    }
    if name != baseline:
      interval = paired_interval(
        test_values[name][key], base[f"topk@{base_beam}"], resamples=resamples, seed=seed
      )
      entry["vs_baseline"] = interval.to_json() if interval else None
    out["truncation"][name] = entry
  return out


def build_results(
  values: dict[str, dict[str, dict[str, np.ndarray]]],
  *,
  split: str,
  baseline: str,
  beam_sizes,
  curve_beam_sizes,
  truncation_beam_sizes,
  truncation_items: int,
  requests: int,
  sample_seed: int,
  resamples: int,
  valid_choices: BeamChoices | None = None,
) -> dict:
  """The evaluate job's results from per-request values {method: {kind: values}}.

  On valid, the beams to report are chosen here ('choices'); on test, the choices
  made on valid (`valid_choices`) are read ('selected_on_valid').
  """
  results: dict = {
    "split": split,
    "requests": int(requests),
    "sample_seed": int(sample_seed),
    "bootstrap_resamples": int(resamples),
    "baseline": baseline,
    "beam_sizes": sorted(int(b) for b in beam_sizes),
    "curve_beam_sizes": sorted(int(b) for b in curve_beam_sizes),
    "truncation_beam_sizes": sorted(int(b) for b in truncation_beam_sizes),
    "truncation_items": int(truncation_items),
    "tokenizers": {},
    "comparisons": {},
  }
  for name, kinds in values.items():
    results["tokenizers"][name] = {
      "stages": {
        kind: summarize(per_request, truncation_items, resamples=resamples)
        for kind, per_request in kinds.items()
      }
    }
  if baseline in values:
    for name, kinds in values.items():
      if name == baseline:
        continue
      results["comparisons"][name] = {
        kind: compare(per_request, values[baseline][kind], resamples=resamples)
        for kind, per_request in kinds.items()
        if kind in values[baseline]
      }
  semantic = {
    name: results["tokenizers"][name]["stages"]["semantic"]
    for name in values
    if "semantic" in values[name]
  }
  if split == "valid" and baseline in semantic:
    results["choices"] = choose_beams(semantic, baseline, curve_beam_sizes).to_json()
  if split == "test" and valid_choices is not None and baseline in semantic:
    results["selected_on_valid"] = read_choices(
      valid_choices,
      {name: values[name]["semantic"] for name in semantic},
      baseline,
      truncation_items,
      resamples=resamples,
    )
  return results


def choices_from_json(raw: dict) -> BeamChoices:
  return BeamChoices(
    half_beams=dict(raw["half_beams"]),
    reference_beam=int(raw["reference_beam"]),
    truncation_beams=dict(raw["truncation_beams"]),
  )
