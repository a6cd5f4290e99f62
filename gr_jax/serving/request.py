"""The retrieval request: its JSON form, validation, and its prompt.

A request is (query text, optional user, optional profile, optional recent clicks) plus
how much to return and what to let through. Prompts are built by
`seqio_tasks.request_prompt`, the code that built the generator's training and
evaluation prompts, with the run's text vocabulary and the generator's layout.

JSON fields (only `query` is required):

    query          str, may be empty (the prompt is then the profile and history only)
    user_id        int; a user seen in the logs supplies profile and recent clicks that the
                   request leaves out; an unknown user is a user without either (no error)
    profile        {"gender": int, "age_band": int}
    recent_clicks  [int] item ids, newest last
    beam_size      int, rounded up to a compiled beam size, then cut
    max_items      int, length of the ranked list
    categories     [int | str] leaf category ids or names allowed
    exclude_items  [int] item ids never returned
    brands         [str] brands allowed
    min_efficiency, max_efficiency   float, inclusive efficiency-score range

A malformed field raises `RequestError` naming it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from gr_jax import errors
from gr_jax.data import schema, seqio_tasks
from gr_jax.models.token_layout import PAD_ID, TokenLayout
from gr_jax.serving import constraints

# Tasks whose prompt a request can fill (i2sid prompts are item titles).
REQUEST_TASKS = ("q2sid", "uq2sid", "seqrec")
MAX_ITEMS_LIMIT = 10_000
MAX_LIST_LENGTH = 10_000
_FIELDS = {
  "query",
  "user_id",
  "profile",
  "recent_clicks",
  "beam_size",
  "max_items",
  "categories",
  "exclude_items",
  "brands",
  "min_efficiency",
  "max_efficiency",
}


class RequestError(errors.UserError):
  """A malformed request; the message names the field."""


@dataclasses.dataclass(frozen=True)
class RetrievalRequest:
  """One validated request (see the module docstring for the fields).

  `profile` and `recent_clicks` are None when neither the request nor its user gave them.
  """

  query: str
  beam_size: int
  max_items: int
  user_id: int | None = None
  profile: tuple[int, int] | None = None
  recent_clicks: tuple[int, ...] | None = None
  item_filter: constraints.ItemFilter = constraints.ItemFilter()


class UserDirectory:
  """user_id -> (profile, recent clicks) of the user's latest request in the logs."""

  def __init__(self, logs: schema.SearchLogs | None):
    self._rows: dict[int, int] = {}
    self._logs = logs
    if logs is not None:
      order = np.argsort(logs.request_id, kind="stable")
      for row in order:  # later requests overwrite earlier ones
        self._rows[int(logs.user_id[row])] = int(row)

  def lookup(self, user_id: int) -> tuple[tuple[int, int], tuple[int, ...]] | None:
    row = self._rows.get(int(user_id))
    if row is None:
      return None
    clicks = self._logs.recent_clicks[row]
    return (
      (int(self._logs.user_profile[row, 0]), int(self._logs.user_profile[row, 1])),
      tuple(int(i) for i in clicks[clicks != schema.PAD_ITEM]),
    )


def _int(body: dict, field: str, low: int, high: int) -> int:
  value = body[field]
  if isinstance(value, bool) or not isinstance(value, int):
    raise RequestError(f"{field}: expected an integer, got {type(value).__name__}")
  if not low <= value <= high:
    raise RequestError(f"{field}: {value} outside [{low}, {high}]")
  return value


def _float(body: dict, field: str) -> float | None:
  if body.get(field) is None:
    return None
  value = body[field]
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise RequestError(f"{field}: expected a finite number, got {value!r}")
  return float(value)


def _list(body: dict, field: str) -> list | None:
  if body.get(field) is None:
    return None
  value = body[field]
  if not isinstance(value, list):
    raise RequestError(f"{field}: expected a list, got {type(value).__name__}")
  if len(value) > MAX_LIST_LENGTH:
    raise RequestError(f"{field}: {len(value)} entries, at most {MAX_LIST_LENGTH}")
  return value


def _item_ids(body: dict, field: str, num_items: int) -> tuple[int, ...] | None:
  values = _list(body, field)
  if values is None:
    return None
  for index, item in enumerate(values):
    if isinstance(item, bool) or not isinstance(item, int):
      raise RequestError(f"{field}[{index}]: expected an item id, got {item!r}")
    if not 0 <= item < num_items:
      raise RequestError(f"{field}[{index}]: unknown item {item} (ids are 0..{num_items - 1})")
  return tuple(values)


class RequestParser:
  """JSON body -> RetrievalRequest, checked against one catalog and its users.

  Args:
    catalog: the items (ids, category names).
    users: the user directory (profiles and recent clicks of known users).
    layout: the generator's layout (profile ranges).
    max_beam_size: the largest compiled beam size.
    default_beam_size: beam when the request names none.
    default_max_items: list length when the request names none.
  """

  def __init__(
    self,
    catalog: schema.Catalog,
    users: UserDirectory,
    layout: TokenLayout,
    *,
    max_beam_size: int,
    default_beam_size: int,
    default_max_items: int = 100,
  ):
    self.num_items = catalog.num_items
    self.num_categories = catalog.num_categories
    self.category_ids = {str(name): c for c, name in enumerate(catalog.category_names)}
    self.users = users
    self.layout = layout
    self.max_beam_size = max_beam_size
    self.default_beam_size = default_beam_size
    self.default_max_items = default_max_items

  def _categories(self, body: dict) -> tuple[int, ...] | None:
    values = _list(body, "categories")
    if values is None:
      return None
    out = []
    for index, value in enumerate(values):
      if isinstance(value, str):
        if value not in self.category_ids:
          raise RequestError(f"categories[{index}]: unknown category name {value!r}")
        out.append(self.category_ids[value])
      elif isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < self.num_categories:
          raise RequestError(
            f"categories[{index}]: unknown category {value} (ids are 0..{self.num_categories - 1})"
          )
        out.append(value)
      else:
        raise RequestError(f"categories[{index}]: expected a category id or name, got {value!r}")
    return tuple(out)

  def _profile(self, body: dict) -> tuple[int, int] | None:
    if body.get("profile") is None:
      return None
    profile = body["profile"]
    if not isinstance(profile, dict) or set(profile) != {"gender", "age_band"}:
      raise RequestError('profile: expected {"gender": int, "age_band": int}')
    gender = _int(profile, "gender", 0, self.layout.num_genders - 1)
    age_band = _int(profile, "age_band", 0, self.layout.num_age_bands - 1)
    return gender, age_band

  def parse(self, body) -> RetrievalRequest:
    """Raises RequestError naming the first bad field."""
    if not isinstance(body, dict):
      raise RequestError(f"request: expected a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
      raise RequestError(f"{unknown[0]}: unknown field (fields: {', '.join(sorted(_FIELDS))})")
    if "query" not in body:
      raise RequestError("query: missing (an empty string is allowed)")
    if not isinstance(body["query"], str):
      raise RequestError(f"query: expected a string, got {type(body['query']).__name__}")
    beam = self.default_beam_size
    if body.get("beam_size") is not None:
      beam = _int(body, "beam_size", 1, self.max_beam_size)
    max_items = self.default_max_items
    if body.get("max_items") is not None:
      max_items = _int(body, "max_items", 1, MAX_ITEMS_LIMIT)
    user_id = None
    if body.get("user_id") is not None:
      user_id = _int(body, "user_id", 0, 2**62)
    profile = self._profile(body)
    clicks = _item_ids(body, "recent_clicks", self.num_items)
    if user_id is not None:
      known = self.users.lookup(user_id)
      if known is not None:
        profile = known[0] if profile is None else profile
        clicks = known[1] if clicks is None else clicks
    brands = _list(body, "brands")
    if brands is not None and not all(isinstance(b, str) for b in brands):
      raise RequestError("brands: expected a list of strings")
    item_filter = constraints.ItemFilter(
      categories=self._categories(body),
      exclude_items=_item_ids(body, "exclude_items", self.num_items) or (),
      brands=None if brands is None else tuple(brands),
      min_efficiency=_float(body, "min_efficiency"),
      max_efficiency=_float(body, "max_efficiency"),
    )
    return RetrievalRequest(
      query=body["query"],
      beam_size=beam,
      max_items=max_items,
      user_id=user_id,
      profile=profile,
      recent_clicks=clicks,
      item_filter=item_filter,
    )


def requests_from_logs(
  logs: schema.SearchLogs, beam_size: int, max_items: int = 100
) -> list[RetrievalRequest]:
  """One request per log row (query, profile, recent clicks): evaluation through the API."""
  out = []
  for row in range(logs.num_requests):
    clicks = logs.recent_clicks[row]
    out.append(
      RetrievalRequest(
        query=str(logs.query[row]),
        beam_size=beam_size,
        max_items=max_items,
        user_id=int(logs.user_id[row]),
        profile=(int(logs.user_profile[row, 0]), int(logs.user_profile[row, 1])),
        recent_clicks=tuple(int(i) for i in clicks[clicks != schema.PAD_ITEM]),
      )
    )
  return out


class PromptBuilder:
  """Requests -> [B, T] left-padded prompt tokens of one generator's task.

  Args:
    task: the generator's request task (REQUEST_TASKS).
    text_vocab: the run's text vocabulary.
    layout: the generator's layout.
    item_sid: [N, L] SID codes (history SIDs in personalized prompts).
    prompt_len: the generator's prompt length T.
  """

  def __init__(self, task: str, text_vocab, layout: TokenLayout, item_sid, prompt_len: int):
    if task not in REQUEST_TASKS:
      raise ValueError(f"task '{task}' is not a request task ({', '.join(REQUEST_TASKS)})")
    self.task = task
    self.layout = layout
    self.item_sid = np.asarray(item_sid, np.int32)
    self.prompt_len = int(prompt_len)
    self.config = seqio_tasks.TaskConfig(prompt_len=self.prompt_len)
    self.encode = seqio_tasks.TextEncoder(text_vocab, layout)

  def prompt(self, request: RetrievalRequest) -> np.ndarray:
    clicks = np.asarray(request.recent_clicks or (), np.int64)
    return seqio_tasks.request_prompt(
      self.task,
      self.encode,
      self.layout,
      self.item_sid,
      self.config,
      query=request.query,
      user_profile=None if request.profile is None else np.asarray(request.profile),
      recent_clicks=clicks,
    )

  def __call__(self, requests: list[RetrievalRequest]) -> np.ndarray:
    """[B, T] int32 prompts, PAD_ID on the left.

    Raises:
      RequestError: an empty batch, or a prompt token outside the generator's vocabulary.
    """
    if not requests:
      raise RequestError("requests: empty batch")
    prompts = np.full((len(requests), self.prompt_len), PAD_ID, np.int32)
    for row, request in enumerate(requests):
      tokens = self.prompt(request)[-self.prompt_len :]
      prompts[row, self.prompt_len - len(tokens) :] = tokens
    check_prompts(prompts, self.layout)
    return prompts


def check_prompts(prompts: np.ndarray, layout: TokenLayout) -> None:
  """Raises RequestError for an empty batch or a token id outside [0, layout.vocab_size)."""
  prompts = np.asarray(prompts)
  if prompts.ndim != 2 or not len(prompts):
    raise RequestError(f"prompts: expected a non-empty [batch, tokens] array, got {prompts.shape}")
  bad = (prompts < 0) | (prompts >= layout.vocab_size)
  if bad.any():
    row, col = np.argwhere(bad)[0]
    raise RequestError(
      f"prompts: row {row} token {col} id {prompts[row, col]} outside the vocabulary "
      f"[0, {layout.vocab_size})"
    )
