"""The request API: requests in, ranked items with their SIDs and scores out.

`load_service(workdir, ...)` loads everything a generator needs to answer requests from
a work directory in one call (catalog, users, text vocabulary, SID tables, generator)
and `RetrievalService.retrieve(requests)` answers a batch:

1. prompts through `request.PromptBuilder` (the training and evaluation prompt code);
2. one `Retriever.decode` per compiled beam size, with each request's category
   allow-list as the level-0 mask (an input: no recompilation per request);
3. per request, the valid beams (cut to the beam size asked for) expanded to items in
   beam order, inside a SID by descending efficiency score (`metrics.ranked_items`'
   'beam' order), through the request's item filter, cut at max_items.

A request's beam size is rounded up to the nearest compiled beam size; since beams come
best first, the first `beam_size` beams of the larger search are returned.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
from absl import logging

from gr_jax import workdir as workdir_lib
from gr_jax.serving import constraints, request
from gr_jax.serving import retriever as retriever_lib
from gr_jax.sid import tables

DEFAULT_BEAM_SIZES = (20, 50, 100)


@dataclasses.dataclass
class RetrievedItem:
  item: int
  sid: tuple[int, ...]
  score: float
  beam: int

  def to_json(self) -> dict:
    return {"item": self.item, "sid": list(self.sid), "score": self.score, "beam": self.beam}


@dataclasses.dataclass
class RetrievalResult:
  """One request's answer: ranked items, and the beams they came from."""

  items: list[RetrievedItem]
  sids: np.ndarray  # [K', L] valid beams, best first
  scores: np.ndarray  # [K'] summed log-probs
  beam_size: int
  compiled_beam_size: int

  def to_json(self) -> dict:
    return {
      "items": [item.to_json() for item in self.items],
      "sids": self.sids.tolist(),
      "scores": [float(s) for s in self.scores],
      "beam_size": self.beam_size,
      "compiled_beam_size": self.compiled_beam_size,
    }


class RetrievalService:
  """A Retriever behind the request API.

  Args:
    retriever: the loaded Retriever (params and trie on device).
    prompt_builder: requests -> prompts of the retriever's generator.
    parser: JSON -> validated requests.
    catalog_constraints: category masks and item filters.
    beam_sizes: the compiled beam sizes.
    version: a label of what is loaded (shown by /readyz and in logs).
  """

  def __init__(
    self,
    retriever: retriever_lib.Retriever,
    prompt_builder: request.PromptBuilder,
    parser: request.RequestParser,
    catalog_constraints: constraints.CatalogConstraints,
    beam_sizes=DEFAULT_BEAM_SIZES,
    version: str = "",
  ):
    self.retriever = retriever
    self.prompt_builder = prompt_builder
    self.parser = parser
    self.constraints = catalog_constraints
    self.beam_sizes = tuple(sorted({int(b) for b in beam_sizes}))
    self.version = version

  @property
  def batch_size(self) -> int:
    """The compiled batch shape (requests per device program)."""
    return self.retriever.batch_size

  def compiled_beam(self, beam_size: int) -> int:
    """The smallest compiled beam size >= beam_size."""
    for beam in self.beam_sizes:
      if beam >= beam_size:
        return beam
    raise request.RequestError(
      f"beam_size: {beam_size} above the largest compiled beam size {self.beam_sizes[-1]}"
    )

  def warmup(self) -> float:
    """Compiles every beam size's program (with a mask); returns the seconds it took."""
    start = time.perf_counter()
    warm = request.RetrievalRequest(query="", beam_size=1, max_items=1)
    for beam in self.beam_sizes:
      self.retrieve([dataclasses.replace(warm, beam_size=beam)])
    return time.perf_counter() - start

  def parse(self, body) -> request.RetrievalRequest:
    return self.parser.parse(body)

  def decode(self, requests: list[request.RetrievalRequest], compiled_beam: int):
    """(sids [B, K, L], scores [B, K], valid [B, K]) of requests at one compiled beam size."""
    prompts = self.prompt_builder(requests)  # [B, T]
    allowed = np.stack(
      [self.constraints.allowed_first(r.item_filter.categories) for r in requests]
    )  # [B, C_0]
    return self.retriever.decode(prompts, compiled_beam, allowed_first=allowed)

  def retrieve(self, requests: list[request.RetrievalRequest]) -> list[RetrievalResult]:
    """Answers a batch of requests (any beam sizes up to the largest compiled one)."""
    if not requests:
      raise request.RequestError("requests: empty batch")
    results: list[RetrievalResult | None] = [None] * len(requests)
    groups: dict[int, list[int]] = {}
    for index, r in enumerate(requests):
      groups.setdefault(self.compiled_beam(r.beam_size), []).append(index)
    for beam, indices in groups.items():
      sids, scores, valid = self.decode([requests[i] for i in indices], beam)
      for row, index in enumerate(indices):
        results[index] = self._expand(requests[index], sids[row], scores[row], valid[row], beam)
    return results

  def _expand(self, r: request.RetrievalRequest, sids, scores, valid, compiled_beam):
    """One request's beams [K, L] -> its ranked, filtered items."""
    keep = valid[: r.beam_size]
    sids, scores = sids[: r.beam_size][keep], scores[: r.beam_size][keep]
    sid_tables = self.retriever.sid_tables
    efficiency = self.retriever.efficiency_score
    rows = tables.sid_index(sid_tables, sids)  # [K']
    items: list[RetrievedItem] = []
    seen: set[int] = set()
    for beam, row in enumerate(rows):
      if row < 0 or len(items) >= r.max_items:
        continue
      members = sid_tables.items[sid_tables.offsets[row] : sid_tables.offsets[row + 1]]
      members = members[np.argsort(-efficiency[members], kind="stable")]
      members = members[self.constraints.keep(members, r.item_filter)]
      sid = tuple(int(c) for c in sids[beam])
      for item in members[: r.max_items - len(items)]:
        if int(item) not in seen:
          seen.add(int(item))
          items.append(RetrievedItem(int(item), sid, float(scores[beam]), beam))
    return RetrievalResult(items, sids, scores, r.beam_size, compiled_beam)


def task_of_stage(stage: str) -> str:
  """The request task of an SFT stage (stages are named after their task)."""
  if stage not in request.REQUEST_TASKS:
    raise request.RequestError(
      f"stage: '{stage}' is not a request stage ({', '.join(request.REQUEST_TASKS)})"
    )
  return stage


def load_service(
  workdir: str,
  tokenizer: str = "cq_sid",
  stage: str = "uq2sid",
  *,
  beam_sizes=DEFAULT_BEAM_SIZES,
  batch_size: int = 8,
  default_beam_size: int | None = None,
  mesh=None,
  rules=None,
) -> RetrievalService:
  """The request API over SFT stage `stage` of `tokenizer` in a work directory, in one call.

  Reads the catalog and logs (users), the run's text vocabulary, the tokenizer's SID
  tables and the stage's generator; nothing comes from gin. Call `warmup()` to compile.

  Raises:
    FileNotFoundError: a stage of the run is missing in `workdir`.
    RequestError: `stage` is not a request stage.
  """
  task_of_stage(stage)
  stage_dir = workdir_lib.sft_dir(workdir, tokenizer, stage)
  generator, params = workdir_lib.load_generator(stage_dir)
  catalog, _ = workdir_lib.load_data(workdir)
  sid_artefacts = workdir_lib.load_sid(workdir, tokenizer, catalog.num_items)
  retriever = retriever_lib.Retriever(
    params,
    generator.model_config,
    generator.layout,
    sid_artefacts.tables,
    catalog.efficiency_score,
    mesh=mesh,
    rules=rules,
    batch_size=batch_size,
  )
  version = f"{tokenizer}/{stage}@{_checkpoint_label(stage_dir)}"
  return build_service(
    workdir,
    retriever,
    task=stage,
    prompt_len=generator.prompt_len,
    beam_sizes=beam_sizes,
    default_beam_size=default_beam_size,
    version=version,
  )


def build_service(
  workdir: str,
  retriever,
  *,
  task: str,
  prompt_len: int,
  beam_sizes=DEFAULT_BEAM_SIZES,
  default_beam_size: int | None = None,
  version: str = "",
) -> RetrievalService:
  """The request API around a loaded retriever (a `Retriever` or an exported one).

  Reads the catalog and logs (users) and the run's text vocabulary from `workdir`.
  """
  catalog, logs = workdir_lib.load_data(workdir)
  if not any(
    os.path.exists(p)
    for p in (workdir_lib.vocab_path(workdir), workdir_lib.hf_tokenizer_path(workdir))
  ):
    raise FileNotFoundError(f"{workdir_lib.vocab_path(workdir)}: the run has no text vocabulary")
  vocab = workdir_lib.text_vocabulary(workdir)
  layout = retriever.layout
  item_sid = retriever.sid_tables.item_sid
  beam_sizes = tuple(sorted({int(b) for b in beam_sizes}))
  parser = request.RequestParser(
    catalog,
    request.UserDirectory(logs),
    layout,
    max_beam_size=beam_sizes[-1],
    default_beam_size=default_beam_size or beam_sizes[0],
  )
  builder = request.PromptBuilder(task, vocab, layout, item_sid, prompt_len)
  catalog_constraints = constraints.CatalogConstraints(catalog, item_sid, layout.sid_level_sizes[0])
  logging.info(
    "serving %s: %d items, %d SIDs", version, catalog.num_items, retriever.sid_tables.num_sids
  )
  return RetrievalService(retriever, builder, parser, catalog_constraints, beam_sizes, version)


def _checkpoint_label(stage_dir: str) -> str:
  """The newest checkpoint step of a stage directory (what a reload picks up)."""
  steps = [int(n) for n in os.listdir(os.path.join(stage_dir, "checkpoints")) if n.isdigit()]
  return str(max(steps)) if steps else "?"
