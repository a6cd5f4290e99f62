"""Validators for the data contracts (DESIGN.md, "Data contracts").

Readers call these while they read. A row that breaks the contract raises
`errors.DataContractError` naming the dataset (usually the file), the row and
the field. With `on_error='skip'` the bad row is dropped instead, and the drop
is counted by reason in a `SkipReport` that the reader hands back, so nothing
disappears silently.

Row numbers: for text files the row is the 1-based line number in the file
(the header is line 1); for in-memory tables and TFDS splits it is the 0-based
row / example index.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from gr_jax import errors
from gr_jax.data import schema

OnError = Literal["raise", "skip"]
ON_ERROR_CHOICES = ("raise", "skip")

# Fields every catalog / search-log row must carry (optional vectors excluded).
CATALOG_FIELDS = ("item_id", "title", "category_path", "category_id", "brand", "efficiency_score")
LOG_FIELDS = (
  "request_id",
  "user_id",
  "user_profile",
  "recent_clicks",
  "query",
  "exposed",
  "clicked",
  "purchased",
  "split",
)
ITEM_LIST_FIELDS = ("recent_clicks", "exposed", "clicked", "purchased")


def check_on_error(on_error: str) -> None:
  """Raises ValueError unless `on_error` is 'raise' or 'skip'."""
  if on_error not in ON_ERROR_CHOICES:
    raise ValueError(f"argument 'on_error' must be one of {ON_ERROR_CHOICES}, got {on_error!r}")


@dataclasses.dataclass
class SkipReport:
  """Rows dropped in skip mode, counted by reason.

  Attributes:
    dataset: what was read (file or table name).
    counts: reason -> number of dropped rows.
    examples: the first `max_examples` error messages, for the log.
    max_examples: how many messages to keep.
    dropped: reason -> every dropped row's message (file, line, field), for the report
      the data job writes beside the dataset.
  """

  dataset: str
  counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  examples: list[str] = dataclasses.field(default_factory=list)
  max_examples: int = 5
  dropped: dict = dataclasses.field(default_factory=dict)

  @property
  def total(self) -> int:
    return sum(self.counts.values())

  def record(self, reason: str, message: str) -> None:
    self.counts[reason] += 1
    self.dropped.setdefault(reason, []).append(message)
    if len(self.examples) < self.max_examples:
      self.examples.append(message)

  def merge(self, other: SkipReport) -> None:
    self.counts.update(other.counts)
    for reason, messages in other.dropped.items():
      self.dropped.setdefault(reason, []).extend(messages)
    for message in other.examples:
      if len(self.examples) < self.max_examples:
        self.examples.append(message)

  def to_json(self) -> dict:
    """{'total', 'counts': {reason: n}, 'dropped': {reason: [messages]}}."""
    return {"total": self.total, "counts": dict(self.counts), "dropped": self.dropped}

  def summary(self) -> str:
    if not self.total:
      return f"{self.dataset}: no rows skipped"
    reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.counts.items()))
    return f"{self.dataset}: skipped {self.total} rows ({reasons}); first: {self.examples[0]}"


class RowFilter:
  """Applies the raise / skip policy to vectorised checks over many rows.

  Each check passes a boolean `bad` mask; in raise mode the first bad row raises,
  in skip mode every bad row is recorded and left out of `keep`.
  """

  def __init__(self, dataset: str, row_numbers: np.ndarray, on_error: OnError):
    check_on_error(on_error)
    self.dataset = dataset
    self.row_numbers = np.asarray(row_numbers)
    self.on_error = on_error
    self.keep = np.ones(len(self.row_numbers), bool)  # [R]
    self.report = SkipReport(dataset)

  def flag(self, bad: np.ndarray, field: str, reason: str, describe) -> None:
    """Handles rows where `bad` is True.

    Args:
      bad: [R] bool, rows that break the rule.
      field: field name for the message.
      reason: short reason key for the skip counts (e.g. 'item id out of range').
      describe: callable(row_index) -> problem text for the message.

    Raises:
      errors.DataContractError: in raise mode, for the first bad row still kept.
    """
    bad = np.asarray(bad, bool) & self.keep
    if not bad.any():
      return
    for index in np.flatnonzero(bad):
      error = errors.contract_error(
        self.dataset, int(self.row_numbers[index]), field, describe(int(index))
      )
      if self.on_error == "raise":
        raise error
      self.report.record(reason, str(error))
    self.keep &= ~bad


def decode_utf8_lines(dataset: str, data: bytes, columns: Sequence[str], on_error: OnError):
  """Splits a tab-separated file's bytes into decoded lines.

  Args:
    dataset: file name used in messages.
    data: the file's bytes.
    columns: column names, to name the field that holds a bad byte.
    on_error: 'raise' or 'skip'.

  Returns:
    (lines, line_numbers, report): the decoded non-empty lines (without the
    trailing newline), their 1-based line numbers, and a SkipReport.

  Raises:
    errors.DataContractError: on invalid UTF-8, or a last line without its newline
      (a file cut short, e.g. by an interrupted copy), in raise mode.
  """
  check_on_error(on_error)
  report = SkipReport(dataset)
  lines, numbers = [], []
  raw_lines = data.split(b"\n")
  if data and not data.endswith(b"\n"):
    # A cut last line can still parse (a shorter title, a shorter history): never trust it.
    error = errors.contract_error(
      dataset,
      len(raw_lines),
      "line",
      "no final newline: the file looks truncated (its last line may be cut); restore the "
      "complete file",
    )
    if on_error == "raise":
      raise error
    report.record("truncated last line", str(error))
    raw_lines = raw_lines[:-1]
  for number, raw in enumerate(raw_lines, start=1):
    raw = raw.rstrip(b"\r")
    if not raw:
      continue
    try:
      lines.append(raw.decode("utf-8"))
      numbers.append(number)
    except UnicodeDecodeError as exc:
      column = raw[: exc.start].count(b"\t")
      field = columns[column] if column < len(columns) else f"column {column + 1}"
      error = errors.contract_error(
        dataset, number, field, f"invalid UTF-8 at byte {exc.start} ({exc.reason})"
      )
      if on_error == "raise":
        raise error from exc
      report.record("invalid UTF-8", str(error))
  return lines, np.asarray(numbers, np.int64), report


def split_columns(
  dataset: str,
  lines: Sequence[str],
  line_numbers: np.ndarray,
  columns: Sequence[str],
  rows: RowFilter,
) -> list[list[str]]:
  """Splits tab-separated lines into exactly len(columns) fields.

  A line with too few fields is reported as missing the first absent column;
  one with too many as an extra field. Bad lines are handled by `rows` and come
  back as empty-string fields (they are dropped by `rows.keep`).
  """
  parts = [line.split("\t") for line in lines]
  counts = np.array([len(p) for p in parts], np.int64)  # [R]
  rows.flag(
    counts < len(columns),
    columns[-1],
    "missing field",
    lambda i: (
      f"missing (line has {counts[i]} of {len(columns)} tab-separated fields {', '.join(columns)})"
    ),
  )
  rows.flag(
    counts > len(columns),
    columns[-1],
    "extra field",
    lambda i: f"line has {counts[i]} tab-separated fields, expected {len(columns)}",
  )
  return [p if len(p) == len(columns) else [""] * len(columns) for p in parts]


def parse_ids(values: Sequence[str], field: str, rows: RowFilter) -> np.ndarray:
  """Parses one non-negative integer per row, vectorised.

  Returns:
    [R] int64 ids; rows that fail are flagged (and hold 0).
  """
  text = np.asarray(values, dtype=np.str_)  # [R]
  stripped = np.char.strip(text)
  ok = np.char.isdigit(stripped) if len(text) else np.zeros(0, bool)
  rows.flag(
    ~ok, field, "non-integer id", lambda i: f"expected a non-negative integer, got {text[i]!r}"
  )
  ids = np.zeros(len(text), np.int64)
  ids[ok] = stripped[ok].astype(np.int64)
  return ids


def parse_id_lists(values: Sequence[str], field: str, rows: RowFilter) -> list[np.ndarray]:
  """Parses space-separated non-negative integer lists, vectorised over all tokens.

  Returns:
    One int64 array per row (empty for rows that were flagged).
  """
  token_lists = [v.split() for v in values]
  lengths = np.array([len(t) for t in token_lists], np.int64)  # [R]
  flat = np.array([tok for toks in token_lists for tok in toks], dtype=np.str_)  # [T]
  owner = np.repeat(np.arange(len(values)), lengths)  # [T]
  ok_token = np.char.isdigit(flat) if len(flat) else np.zeros(0, bool)
  bad_row = np.zeros(len(values), bool)
  bad_row[owner[~ok_token]] = True
  first_bad = {}
  for token_index in np.flatnonzero(~ok_token)[::-1]:
    first_bad[int(owner[token_index])] = flat[token_index]
  rows.flag(
    bad_row,
    field,
    "non-integer id",
    lambda i: f"expected space-separated non-negative integers, got {first_bad[i]!r}",
  )
  ids = np.zeros(len(flat), np.int64)
  ids[ok_token] = flat[ok_token].astype(np.int64)
  out = np.split(ids, np.cumsum(lengths)[:-1]) if len(values) else []
  return [ids_row if not bad_row[i] else ids_row[:0] for i, ids_row in enumerate(out)]


def check_item_ids(ids: np.ndarray, num_items: int, field: str, rows: RowFilter) -> None:
  """Flags rows holding an item id outside the catalog.

  Args:
    ids: [R] or [R, M] int item ids, PAD_ITEM (-1) allowed as padding.
    num_items: catalog size N; valid ids are 0..N-1.
    field: field name for messages.
    rows: the row filter.
  """
  ids = np.asarray(ids)
  ids2d = ids.reshape(len(ids), -1)  # [R, M]
  bad_entry = (ids2d < schema.PAD_ITEM) | (ids2d >= num_items)  # [R, M]
  bad = bad_entry.any(axis=1)

  def describe(i):
    value = int(ids2d[i][bad_entry[i]][0])
    return f"item id {value} is not in the catalog (valid: 0..{num_items - 1}, or -1 as padding)"

  rows.flag(bad, field, "item id not in catalog", describe)


def check_text(values: np.ndarray, field: str, rows: RowFilter, allow_empty: bool) -> None:
  """Flags rows whose text is not a str, or empty when `allow_empty` is False."""
  values = np.asarray(values, dtype=object)
  not_str = np.array([not isinstance(v, str) for v in values], bool)
  rows.flag(not_str, field, "not text", lambda i: f"expected text, got {type(values[i]).__name__}")
  if not allow_empty:
    empty = np.array([isinstance(v, str) and not v.strip() for v in values], bool)
    rows.flag(empty, field, "empty text", lambda i: "empty text")


def _field_array(table, dataset: str, field: str, num_rows: int, row_shape=()):
  value = getattr(table, field)
  if value is None:
    raise errors.contract_error(dataset, "*", field, "missing")
  value = np.asarray(value)
  if value.shape[:1] != (num_rows,) or (row_shape and value.shape[1:] != row_shape):
    want = (num_rows, *row_shape)
    raise errors.contract_error(dataset, "*", field, f"shape {value.shape}, expected {want}")
  return value


def validate_catalog(catalog: schema.Catalog, dataset: str = "catalog") -> None:
  """Checks a Catalog against the contract; raises on the first bad row.

  Checks: every field present with N rows, non-empty titles, brands are text,
  category paths are tuples of text, category ids in [-1, C), finite
  efficiency scores, features (when present) a finite [N, D] matrix.

  Raises:
    errors.DataContractError: naming the dataset, row and field.
  """
  num_items = catalog.num_items
  rows = RowFilter(dataset, np.arange(num_items), "raise")
  check_text(_field_array(catalog, dataset, "title", num_items), "title", rows, allow_empty=False)
  check_text(_field_array(catalog, dataset, "brand", num_items), "brand", rows, allow_empty=True)
  paths = _field_array(catalog, dataset, "category_path", num_items)
  bad_path = np.array(
    [not (isinstance(p, tuple) and all(isinstance(s, str) and s for s in p)) for p in paths], bool
  )
  rows.flag(
    bad_path,
    "category_path",
    "bad path",
    lambda i: f"expected a tuple of non-empty text, got {paths[i]!r}",
  )
  category_id = _field_array(catalog, dataset, "category_id", num_items)
  num_categories = catalog.num_categories
  rows.flag(
    (category_id < -1) | (category_id >= num_categories),
    "category_id",
    "unknown category",
    lambda i: f"unknown category {int(category_id[i])} (valid: 0..{num_categories - 1}, or -1)",
  )
  score = _field_array(catalog, dataset, "efficiency_score", num_items).astype(np.float64)
  rows.flag(
    ~np.isfinite(score), "efficiency_score", "not finite", lambda i: f"not finite: {score[i]}"
  )
  if catalog.features is not None:
    features = np.asarray(catalog.features)
    if features.ndim != 2 or len(features) != num_items:
      raise errors.contract_error(
        dataset, "*", "features", f"shape {features.shape}, expected [{num_items}, D]"
      )
    rows.flag(
      ~np.isfinite(features).all(axis=1), "features", "not finite", lambda i: "non-finite value"
    )


def validate_logs(
  logs: schema.SearchLogs,
  num_items: int,
  dataset: str = "search_logs",
  on_error: OnError = "raise",
  num_genders: int | None = None,
  num_age_bands: int | None = None,
) -> tuple[schema.SearchLogs, SkipReport]:
  """Checks SearchLogs against the contract.

  Args:
    logs: the table.
    num_items: catalog size; every item id must be in [0, num_items) or -1.
    dataset: name for messages.
    on_error: 'raise' stops at the first bad row, 'skip' drops and counts.
    num_genders: when given, user_profile[:, 0] must lie in [0, num_genders).
    num_age_bands: when given, user_profile[:, 1] must lie in [0, num_age_bands).

  Returns:
    (logs with bad rows dropped, SkipReport).

  Raises:
    errors.DataContractError: naming the dataset, row and field (raise mode; in
      skip mode only for whole-column problems such as a missing field).
  """
  num_rows = logs.num_requests
  rows = RowFilter(dataset, np.arange(num_rows), on_error)
  for field in ("request_id", "user_id", "split"):
    _field_array(logs, dataset, field, num_rows)
  _field_array(logs, dataset, "user_profile", num_rows, (2,))
  user_id = np.asarray(logs.user_id)
  rows.flag(user_id < 0, "user_id", "negative id", lambda i: f"negative user id {int(user_id[i])}")
  split = np.asarray(logs.split)
  rows.flag(
    (split < 0) | (split >= len(schema.SPLITS)),
    "split",
    "unknown split",
    lambda i: f"split index {int(split[i])} outside [0, {len(schema.SPLITS)})",
  )
  profile = np.asarray(logs.user_profile)
  for column, limit, name in ((0, num_genders, "gender"), (1, num_age_bands, "age band")):
    if limit is not None:
      values = profile[:, column]
      rows.flag(
        (values < 0) | (values >= limit),
        "user_profile",
        f"{name} out of range",
        lambda i, v=values, n=name, k=limit: f"{n} {int(v[i])} outside [0, {k})",
      )
  for field in ITEM_LIST_FIELDS:
    ids = _field_array(logs, dataset, field, num_rows)
    if ids.ndim != 2:
      raise errors.contract_error(
        dataset, "*", field, f"expected [R, M] ids, got shape {ids.shape}"
      )
    check_item_ids(ids, num_items, field, rows)
  check_text(_field_array(logs, dataset, "query", num_rows), "query", rows, allow_empty=True)
  if rows.keep.all():
    return logs, rows.report
  return logs.select(rows.keep), rows.report


def pad_id_lists(
  lists: Sequence[np.ndarray], width: int | None = None, keep_newest: bool = True
) -> np.ndarray:
  """Stacks ragged id lists into [R, width] int32, padded with PAD_ITEM.

  Args:
    lists: R arrays of ids.
    width: output width; default the longest list (at least 1).
    keep_newest: left-pad and keep the last `width` ids (histories, newest
      last); otherwise right-pad and keep the first `width`.

  Returns:
    [R, width] int32.
  """
  lengths = np.array([len(x) for x in lists], np.int64)
  if width is None:
    width = max(1, int(lengths.max(initial=0)))
  out = np.full((len(lists), width), schema.PAD_ITEM, np.int32)
  if not len(lists):
    return out
  kept = np.minimum(lengths, width)  # [R]
  flat = np.concatenate(
    [x[len(x) - k :] if keep_newest else x[:k] for x, k in zip(lists, kept)]
  ).astype(np.int32)
  owner = np.repeat(np.arange(len(lists)), kept)  # [T]
  offset_in_row = np.arange(len(flat)) - np.repeat(np.cumsum(kept) - kept, kept)  # [T]
  column = (width - np.repeat(kept, kept) + offset_in_row) if keep_newest else offset_in_row
  out[owner, column] = flat
  return out


def _row_text(value, name: str, row: int, field: str) -> str:
  """A text field as str (bytes decoded as UTF-8); anything else breaks the contract."""
  if isinstance(value, bytes):
    try:
      return value.decode("utf-8")
    except UnicodeDecodeError as exc:
      raise errors.contract_error(name, row, field, f"invalid UTF-8 at byte {exc.start}") from exc
  if not isinstance(value, str):
    raise errors.contract_error(name, row, field, f"expected text, got {type(value).__name__}")
  return value


def _catalog_from_rows(catalog_rows: Sequence[Mapping], cat_name: str) -> schema.Catalog:
  """The Catalog of contract rows, ordered by item id (validated by the caller)."""
  for row, record in enumerate(catalog_rows):
    for field in CATALOG_FIELDS:
      if field not in record:
        raise errors.contract_error(cat_name, row, field, "missing")
  num_items = len(catalog_rows)
  item_id = np.array([int(r["item_id"]) for r in catalog_rows], np.int64)
  order = np.argsort(item_id, kind="stable")
  if not np.array_equal(item_id[order], np.arange(num_items)):
    seen = np.zeros(num_items, bool)
    for row, value in enumerate(item_id):
      if not 0 <= value < num_items or seen[value]:
        raise errors.contract_error(
          cat_name,
          row,
          "item_id",
          f"item ids must be dense 0..{num_items - 1} without repeats, got {value}",
        )
      seen[value] = True
  ordered = [catalog_rows[i] for i in order]
  paths = np.empty(num_items, dtype=object)
  paths[:] = [
    tuple(_row_text(s, cat_name, int(order[i]), "category_path") for s in r["category_path"])
    for i, r in enumerate(ordered)
  ]
  category_id = np.array([int(r["category_id"]) for r in ordered], np.int32)
  names = {}
  for path, cid in zip(paths, category_id):
    if cid >= 0:
      names.setdefault(int(cid), " > ".join(path))
  num_categories = max(names, default=-1) + 1
  catalog = schema.Catalog(
    title=np.array(
      [_row_text(r["title"], cat_name, int(order[i]), "title") for i, r in enumerate(ordered)],
      dtype=object,
    ),
    category_path=paths,
    category_id=category_id,
    brand=np.array(
      [_row_text(r["brand"], cat_name, int(order[i]), "brand") for i, r in enumerate(ordered)],
      dtype=object,
    ),
    efficiency_score=np.array([float(r["efficiency_score"]) for r in ordered], np.float32),
    category_names=np.array([names.get(c, "") for c in range(num_categories)], dtype=object),
    features=(
      np.stack([np.asarray(r["features"], np.float32) for r in ordered])
      if num_items and all("features" in r for r in ordered)
      else None
    ),
  )
  return catalog


def _logs_from_rows(
  log_rows: Sequence[Mapping], log_name: str, history_len: int | None
) -> schema.SearchLogs:
  """The SearchLogs of contract rows (validated by the caller)."""
  for row, record in enumerate(log_rows):
    for field in LOG_FIELDS:
      if field not in record:
        raise errors.contract_error(log_name, row, field, "missing")

  def split_index(value, row):
    if isinstance(value, bytes | str):
      name = value.decode() if isinstance(value, bytes) else value
      if name not in schema.SPLITS:
        raise errors.contract_error(
          log_name, row, "split", f"unknown split {name!r}, expected one of {schema.SPLITS}"
        )
      return schema.SPLITS.index(name)
    return int(value)

  id_lists = {
    field: [np.asarray(r[field], np.int64).reshape(-1) for r in log_rows]
    for field in ITEM_LIST_FIELDS
  }
  logs = schema.SearchLogs(
    request_id=np.array([int(r["request_id"]) for r in log_rows], np.int64),
    user_id=np.array([int(r["user_id"]) for r in log_rows], np.int32),
    user_profile=np.array(
      [np.asarray(r["user_profile"]).reshape(2) for r in log_rows], np.int32
    ).reshape(-1, 2),
    recent_clicks=pad_id_lists(id_lists["recent_clicks"], history_len, keep_newest=True),
    query=np.array(
      [_row_text(r["query"], log_name, row, "query") for row, r in enumerate(log_rows)],
      dtype=object,
    ),
    exposed=pad_id_lists(id_lists["exposed"], keep_newest=False),
    clicked=pad_id_lists(id_lists["clicked"], keep_newest=False),
    purchased=pad_id_lists(id_lists["purchased"], keep_newest=False),
    split=np.array([split_index(r["split"], row) for row, r in enumerate(log_rows)], np.int8),
    query_features=(
      np.stack([np.asarray(r["query_features"], np.float32) for r in log_rows])
      if log_rows and all("query_features" in r for r in log_rows)
      else None
    ),
  )
  return logs


def catalog_from_rows(catalog_rows: Sequence[Mapping], dataset: str) -> schema.Catalog:
  """The validated Catalog of contract rows (CATALOG_FIELDS, item_id dense 0..N-1 in any
  order, optional `features` [D]); text may be str or bytes.

  Raises:
    errors.DataContractError: naming `dataset`, the row and the field.
  """
  catalog = _catalog_from_rows(catalog_rows, dataset)
  validate_catalog(catalog, dataset)
  return catalog


def logs_from_rows(
  log_rows: Sequence[Mapping],
  num_items: int,
  dataset: str,
  history_len: int | None = None,
  on_error: OnError = "raise",
) -> tuple[schema.SearchLogs, SkipReport]:
  """The validated SearchLogs of contract rows (LOG_FIELDS, item-id lists as 1-D arrays,
  `split` as a name in schema.SPLITS or its index, optional `query_features` [D]).

  Args:
    log_rows: one mapping per request.
    num_items: catalog size; item ids must lie in 0..num_items-1.
    dataset: name for messages.
    history_len: width of recent_clicks (newest kept); default the longest.
    on_error: 'raise' or 'skip' (bad rows dropped and counted).

  Returns:
    (logs, SkipReport).

  Raises:
    errors.DataContractError: naming `dataset`, the row and the field.
  """
  check_on_error(on_error)
  logs = _logs_from_rows(log_rows, dataset, history_len)
  return validate_logs(logs, num_items, dataset, on_error)


def tables_from_rows(
  catalog_rows: Sequence[Mapping],
  log_rows: Sequence[Mapping],
  dataset: str = "tfds",
  history_len: int | None = None,
  on_error: OnError = "raise",
) -> tuple[schema.Catalog, schema.SearchLogs, SkipReport]:
  """Builds (Catalog, SearchLogs) from contract rows (e.g. TFDS examples as numpy).

  Args:
    catalog_rows: one mapping per item (`catalog_from_rows`).
    log_rows: one mapping per request (`logs_from_rows`).
    dataset: name for messages ('<dataset>/catalog', '<dataset>/logs').
    history_len: width of recent_clicks (newest kept); default the longest.
    on_error: 'raise' or 'skip' (skip applies to log rows; catalog errors
      always raise since item ids index every other table).

  Returns:
    (catalog, logs, SkipReport over the log rows).

  Raises:
    errors.DataContractError: naming the dataset, row and field.
  """
  check_on_error(on_error)
  catalog = catalog_from_rows(catalog_rows, f"{dataset}/catalog")
  logs, report = logs_from_rows(
    log_rows, catalog.num_items, f"{dataset}/logs", history_len, on_error
  )
  return catalog, logs, report
