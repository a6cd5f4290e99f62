"""Reader for Amazon Reviews 2018 datasets in the UniSRec file layout (any category).

Turns the six files `<name>.text`, `<name>.item2index`, `<name>.user2index` and
`<name>.{train,valid,test}.inter` of one dataset (e.g. `Scientific.*`, see
`../shared/data/amazon_scientific/README.md`; Office, Instruments, Arts, Pantry
are laid out alike) into the contract tables `schema.Catalog` and
`schema.SearchLogs`:

- Dataset name: given, or inferred when the folder holds exactly one
  `<name>.train.inter` (`find_dataset`).
- Items: `<name>.item2index` gives the dense id of each ASIN; `<name>.text`
  gives "title. category path. brand. " per ASIN, which `parse_item_text`
  splits at the category root (given, or inferred from the texts by
  `infer_category_root`); `recover_category_segments` restores the category
  path segments; the leaf category id enumerates the distinct full paths (-1
  when an item has none); efficiency_score = the item's number of train
  interactions.
- Requests: every row of the three `.inter` files (user, history, target)
  becomes one search request with recent_clicks = the last `history_len`
  history items (newest last), exposed = clicked = purchased = [target],
  query = the pseudo-query of the target (`QUERY_MODES`), user_profile =
  (0, 0) since Amazon has no profile, split = the file's split.

Errors name the file, the 1-based line number and the field.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import re
import time
from collections.abc import Iterable, Sequence

import gin
import numpy as np

from gr_jax import errors
from gr_jax.data import contracts, schema

TEXT_COLUMNS = ("item_id", "text")
INDEX_COLUMNS = ("key", "index")
INTER_COLUMNS = ("user_id", "item_id_list", "item_id")
TRAIN_INTER_SUFFIX = ".train.inter"
# Pseudo-query of a request, from its target item: 'category' = the category
# path's words (`pseudo_query`, the standard protocol); 'title' = the title's
# words without any category word (`title_query`), so the query cannot name the
# category that a category-aligned tokenizer puts at SID level 1.
QUERY_MODES = ("category", "title")

# A small standard English stop-word list (articles, prepositions, conjunctions,
# auxiliaries): the words that the product-search protocol drops from
# category-path pseudo-queries.
STOP_WORDS = frozenset(
  [
    "a",
    "an",
    "and",
    "are",
    "as",
    "at",
    "be",
    "but",
    "by",
    "for",
    "from",
    "has",
    "have",
    "in",
    "into",
    "is",
    "it",
    "its",
    "no",
    "not",
    "of",
    "on",
    "or",
    "other",
    "others",
    "so",
    "than",
    "that",
    "the",
    "their",
    "then",
    "there",
    "these",
    "this",
    "those",
    "to",
    "too",
    "very",
    "was",
    "were",
    "will",
    "with",
    "without",
  ]
)
# Words that join the words of one category segment: a boundary never falls
# next to them ("Abrasive & Finishing Products", "Tapes, Adhesives & Sealants").
_JOINERS = frozenset({"&", "and", "/", "-"})
_QUERY_WORD = re.compile(r"[0-9a-z]+(?:['\-][0-9a-z]+)*")
# Root inference: the root's first word must open a category in at least this
# share of the texts, and each further word must keep this share of the texts
# that the shorter prefix opened (below the root the category tree branches).
_ROOT_MIN_SHARE = 0.5
_ROOT_KEEP_SHARE = 0.9


@dataclasses.dataclass(frozen=True)
class UnisrecFiles:
  """The file names of one dataset in the UniSRec layout.

  Attributes:
    name: the dataset name, i.e. the file prefix ('Scientific', 'Office').
  """

  name: str

  @property
  def text(self) -> str:
    return f"{self.name}.text"

  @property
  def item_index(self) -> str:
    return f"{self.name}.item2index"

  @property
  def user_index(self) -> str:
    return f"{self.name}.user2index"

  def inter(self, split: str) -> str:
    return f"{self.name}.{split}.inter"

  @property
  def all(self) -> tuple[str, ...]:
    """Every file the reader needs."""
    return (
      self.text,
      self.item_index,
      self.user_index,
      *(self.inter(split) for split in schema.SPLITS),
    )


def find_dataset(data_dir: str, dataset: str | None = None) -> UnisrecFiles:
  """The UniSRec dataset to read in `data_dir`: the named one, else the only one there.

  Args:
    data_dir: a folder of UniSRec-layout files.
    dataset: the file prefix; None infers it from the single `<name>.train.inter`.

  Returns:
    The dataset's file names.

  Raises:
    errors.UserError: the folder is missing, holds no dataset, holds several and
      none was named, or lacks the named one.
  """
  if not os.path.isdir(data_dir):
    raise errors.UserError(f"{data_dir}: no such folder (expected UniSRec-layout Amazon files)")
  found = sorted(
    entry[: -len(TRAIN_INTER_SUFFIX)]
    for entry in os.listdir(data_dir)
    if entry.endswith(TRAIN_INTER_SUFFIX)
  )
  if dataset:
    if dataset not in found:
      raise errors.UserError(
        f"{data_dir}: no dataset '{dataset}' (no {dataset}{TRAIN_INTER_SUFFIX}; "
        f"datasets here: {', '.join(found) or 'none'})"
      )
    return UnisrecFiles(dataset)
  if not found:
    raise errors.UserError(
      f"{data_dir}: no UniSRec dataset (expected <name>.text, <name>.item2index, "
      f"<name>.user2index and <name>.{{train,valid,test}}.inter)"
    )
  if len(found) > 1:
    raise errors.UserError(
      f"{data_dir}: holds several datasets ({', '.join(found)}); name one "
      "(prepare_data.amazon_dataset, DATASET= for launch/amazon.sh, or the dataset argument)"
    )
  return UnisrecFiles(found[0])


def infer_category_root(texts: Iterable[str]) -> str | None:
  """The phrase every category path starts with, read from raw item texts.

  A text is "title. category path. brand. ": the title comes first, so a
  category is one of the later ". "-separated pieces. The root is the word
  sequence that opens a later piece in most texts: its first word is the word
  that opens a later piece in the most texts (at least half of them), and it
  grows word by word while the most common next word keeps at least 90% of the
  texts the shorter prefix had. Below the root the category tree branches, so
  there the share drops. When every item of a dataset sits under one child of
  the root, that child joins the root (leaf paths and pseudo-queries are the
  same either way); name the root to say otherwise.

  Args:
    texts: the text fields.

  Returns:
    The root phrase, or None when no phrase opens a piece in half the texts.
  """
  openings = []  # per text: the word tuples of its later pieces
  for text in texts:
    body = text.rstrip().removesuffix(".")
    openings.append({tuple(piece.split()) for piece in body.split(". ")[1:] if piece.split()})
  root: tuple[str, ...] = ()
  texts_with_root = len(openings)
  while True:
    depth = len(root)
    next_words = collections.Counter()
    for pieces in openings:
      next_words.update({p[depth] for p in pieces if len(p) > depth and p[:depth] == root})
    if not next_words:
      break
    word, count = next_words.most_common(1)[0]
    share = _ROOT_KEEP_SHARE if root else _ROOT_MIN_SHARE
    if count < share * texts_with_root:
      break
    root, texts_with_root = (*root, word), count
  return " ".join(root) or None


@dataclasses.dataclass
class ItemText:
  """The three parts of one `<name>.text` entry."""

  title: str
  category: str
  brand: str


def parse_item_text(text: str, root: str) -> ItemText | None:
  """Splits "title. category path. brand. " into its parts.

  The parts were joined with ". " and a trailing ". " was added. Titles and
  brands may themselves hold ". " ("Mr. Heater", "No. 2 Pencil"), category
  segments never do, and every category path starts with `root`. So:
  with a category, the category starts at the LAST ". <root>" (a title may
  quote the root, a brand never contains it) and ends at the first ". " after
  it; everything after is the brand. Without a category the text reads
  "title. . brand. ", split at the last ". . " (an empty category).

  Args:
    text: the text field.
    root: the category root phrase.

  Returns:
    ItemText (category '' when absent), or None when the text has neither a
    root-led category nor the empty-category marker.
  """
  body = text.rstrip()
  if body.endswith("."):
    body = body[:-1]
  start = body.rfind(". " + root)
  if start >= 0:
    rest = body[start + 2 :]
    end = rest.find(". ")
    category, brand = (rest, "") if end < 0 else (rest[:end], rest[end + 2 :])
    return ItemText(body[:start].strip(), category.strip(), brand.strip())
  if body.startswith(root):
    end = body.find(". ")
    category, brand = (body, "") if end < 0 else (body[:end], body[end + 2 :])
    return ItemText("", category.strip(), brand.strip())
  marker = body.rfind(". . ")
  if marker >= 0:
    return ItemText(body[:marker].strip(), "", body[marker + 4 :].strip())
  if body.endswith(". ."):
    return ItemText(body[:-4].strip(), "", "")
  return None


def recover_category_segments(paths: Iterable[str], root: str) -> dict[str, tuple[str, ...]]:
  """Restores the segments of category paths whose segments were joined by spaces.

  Every path is a walk down one category tree, so a segment boundary sits
  exactly where the walk reaches a tree node. Build the word trie of all
  observed paths; a word prefix P of a path is taken to be a node when
    (1) P is the root phrase, or
    (2) P is itself a complete observed path (some item sits in that category),
    (3) or the observed paths diverge right after P (two or more different next
        words: P has several children), provided that
        (a) no segment would start or end at a joining word ('&', 'and') or
            after a comma,
        (b) P's parent node (its longest node prefix) has two or more next
            words itself: when all of a node's children start with the same
            word ("3D Printers", "3D Scanners" under "Additive Manufacturing
            Products"), that word opens sibling names, it is no node,
        (c) the piece from the parent to P is not a phrase said twice
            ("Aluminum Aluminum"), and
        (d) a one-word piece W is a head noun that its subcategories repeat
            (under "Valves": "Ball Valves", "Check Valves"): at least half of
            the continuations below P hold a word starting with W's first four
            letters. Otherwise W is a shared modifier ("Cleaning Chemicals",
            "Cleaning Tools").
  Each path is cut at every node prefix; a piece between two cuts that opens
  with a repeated phrase u u is cut once more after the first u ("Aluminum |
  Aluminum Angles"). The rules are heuristics that read the tree's structure:
  an internal node with neither items nor diverging children leaves two
  segments joined, and rule (d) can misjudge a one-word node. The leaf (the
  complete path) never depends on them, so leaf category ids and pseudo-queries
  are exact.

  Args:
    paths: category path strings (segments joined by single spaces).
    root: the root phrase every path starts with (paths that do not start with
      it are split by rules (2) and (3) alone).

  Returns:
    path string -> tuple of segments, root first.
  """
  word_paths = {path: tuple(path.split()) for path in paths if path.strip()}
  complete = set(word_paths.values())
  next_words = collections.defaultdict(set)
  continuations = collections.defaultdict(list)
  for words in complete:
    for k in range(1, len(words)):
      next_words[words[:k]].add(words[k])
      continuations[words[:k]].append(words[k:])
  root_words = tuple(root.split())

  def ends_segment(word: str) -> bool:
    return word not in _JOINERS and not word.endswith(",")

  @functools.cache
  def parent_node(prefix: tuple[str, ...]) -> tuple[str, ...]:
    return next((prefix[:k] for k in range(len(prefix) - 1, 0, -1) if is_node(prefix[:k])), ())

  @functools.cache
  def is_node(prefix: tuple[str, ...]) -> bool:
    if prefix == root_words:
      return True
    if len(prefix) <= len(root_words) and root_words[: len(prefix)] == prefix:
      return False  # inside the root phrase
    if not ends_segment(prefix[-1]):
      return False
    if prefix in complete:
      return True
    children = next_words[prefix]
    if len(children) < 2 or children & _JOINERS:
      return False
    parent = parent_node(prefix)
    if len(next_words[parent]) < 2:
      return False
    piece = prefix[len(parent) :]
    half = len(piece) // 2
    if len(piece) % 2 == 0 and piece[:half] == piece[half:]:
      return False
    if len(piece) > 1:
      return True
    stem = piece[0][:4].lower()
    below = continuations[prefix]
    repeats = sum(any(word.lower().startswith(stem) for word in rest) for rest in below)
    return 2 * repeats >= len(below)

  segments = {}
  for path, words in word_paths.items():
    cuts = [k for k in range(1, len(words)) if is_node(words[:k])]
    bounds = [0, *cuts, len(words)]
    for start, stop in zip(bounds[:-1], bounds[1:]):
      piece = words[start:stop]
      repeat = next(
        (n for n in range(1, (len(piece) - 1) // 2 + 1) if piece[:n] == piece[n : 2 * n]), 0
      )
      if repeat:
        cuts.append(start + repeat)
    cuts = [*sorted(cuts), len(words)]
    starts = [0, *cuts[:-1]]
    segments[path] = tuple(" ".join(words[a:b]) for a, b in zip(starts, cuts))
  return segments


@gin.configurable
def pseudo_query(
  category_path: Sequence[str],
  stop_words: Iterable[str] = STOP_WORDS,
  skip_levels: int = 0,
) -> str:
  """The product-search pseudo-query of an item (Van Gysel et al. 2016).

  The words of the category path, lower-cased, punctuation removed, stop words
  removed, and each word kept only at its first occurrence.

  Args:
    category_path: segments, root first.
    stop_words: words to drop.
    skip_levels: leading path levels left out (0 keeps the root, as the
      protocol does).

  Returns:
    The query text ('' for an item without category).
  """
  stop = frozenset(stop_words)
  words = _QUERY_WORD.findall(" ".join(category_path[skip_levels:]).lower())
  return " ".join(dict.fromkeys(w for w in words if w not in stop))


def _word_forms(word: str) -> set[str]:
  """The word and its regular plural / singular forms (valve(s), box(es), batter(y|ies))."""
  forms = {word, word + "s", word + "es"}
  if word.endswith("y"):
    forms.add(word[:-1] + "ies")
  if word.endswith("ies"):
    forms.add(word[:-3] + "y")
  if word.endswith("es"):
    forms.add(word[:-2])
  if word.endswith("s"):
    forms.add(word[:-1])
  return forms


@gin.configurable
def title_query(
  title: str,
  category_path: Sequence[str],
  stop_words: Iterable[str] = STOP_WORDS,
  max_words: int = 8,
  keep_numbers: bool = False,
) -> str:
  """A product-search pseudo-query that does not name the item's category.

  The title's words as in `pseudo_query` (lower-cased, punctuation removed, stop
  words removed, each word once), without every word that is, or is a regular
  plural / singular form of, a word of the item's category path (all levels,
  root included), without words holding a digit (model numbers and sizes, which
  would turn search into an id lookup), cut to the first `max_words`. Titles
  usually open with the brand and the product noun, so "eSUN Bronze filament
  1.75mm 0.5kg Spool for Makerbot" (category "... 3D Printing Filament") gives
  "esun bronze spool makerbot".

  Args:
    title: the item title.
    category_path: segments, root first (() for an item without category).
    stop_words: words to drop.
    max_words: longest query, in words.
    keep_numbers: keep words that hold a digit.

  Returns:
    The query text ('' when every title word names the category).
  """
  stop = frozenset(stop_words)
  category_words = set(_QUERY_WORD.findall(" ".join(category_path).lower()))
  words = (
    w
    for w in _QUERY_WORD.findall(title.lower())
    if w not in stop
    and not _word_forms(w) & category_words
    and (keep_numbers or not any(ch.isdigit() for ch in w))
  )
  return " ".join(list(dict.fromkeys(words))[:max_words])


@dataclasses.dataclass
class AmazonInfo:
  """What the reader found besides the two tables.

  Attributes:
    dataset: the dataset name (file prefix).
    category_root: the category root phrase (given or inferred).
    item_asins: [N] object array, ASIN of each dense item id.
    user_keys: [U] object array, reviewer id of each dense user id.
    num_items: N.
    num_users: U.
    split_rows: split name -> number of requests.
    num_category_paths: distinct full category paths (= leaf categories).
    num_category_nodes: distinct recovered tree nodes (path prefixes at
      segment boundaries, root included).
    items_without_category: items with no category path.
    skip_report: rows dropped in skip mode, by reason.
    load_seconds: wall time of the load.
  """

  dataset: str
  category_root: str
  item_asins: np.ndarray
  user_keys: np.ndarray
  num_items: int
  num_users: int
  split_rows: dict[str, int]
  num_category_paths: int
  num_category_nodes: int
  items_without_category: int
  skip_report: contracts.SkipReport
  load_seconds: float


def _read_table(path: str, columns: Sequence[str], header: bool, on_error: contracts.OnError):
  """Reads a tab-separated file -> (columns as lists of str, RowFilter with line numbers)."""
  name = os.path.basename(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: missing (expected the UniSRec-layout files there)")
  with open(path, "rb") as f:
    data = f.read()
  lines, numbers, decode_report = contracts.decode_utf8_lines(name, data, columns, on_error)
  if header:
    if not numbers.size or numbers[0] != 1 or not lines[0].startswith(columns[0]):
      raise errors.contract_error(
        name, 1, "header", f"expected a header line starting with '{columns[0]}'"
      )
    lines, numbers = lines[1:], numbers[1:]
  rows = contracts.RowFilter(name, numbers, on_error)
  rows.report.merge(decode_report)
  fields = contracts.split_columns(name, lines, numbers, columns, rows)
  return [list(col) for col in zip(*fields)] if fields else [[] for _ in columns], rows


def _read_index(path: str, on_error: contracts.OnError):
  """Reads KEY TAB dense-index; indices must be 0..n-1, keys and indices unique.

  Returns:
    (key -> index, key -> line number, SkipReport).
  """
  name = os.path.basename(path)
  (keys, index_text), rows = _read_table(path, INDEX_COLUMNS, header=False, on_error=on_error)
  index = contracts.parse_ids(index_text, "index", rows)
  seen_key, seen_index = {}, {}
  for i in np.flatnonzero(rows.keep):
    key, value = keys[i], int(index[i])
    line = int(rows.row_numbers[i])
    if key in seen_key:
      raise errors.contract_error(name, line, "key", f"{key!r} repeats line {seen_key[key]}")
    if value in seen_index:
      raise errors.contract_error(
        name, line, "index", f"index {value} repeats line {seen_index[value]}"
      )
    seen_key[key], seen_index[value] = line, line
  count = len(seen_index)
  for value, line in seen_index.items():
    if value >= count:
      raise errors.contract_error(
        name, line, "index", f"index {value}: indices must be dense 0..{count - 1}"
      )
  kept = np.flatnonzero(rows.keep)
  lines = {keys[i]: int(rows.row_numbers[i]) for i in kept}
  return {keys[i]: int(index[i]) for i in kept}, lines, rows.report


def _read_items(
  data_dir: str,
  files: UnisrecFiles,
  on_error,
  category_root: str | None,
  report: contracts.SkipReport,
):
  """Item ids from item2index and their parsed texts; bad rows raise or are recorded.

  Returns:
    (ASIN -> listed index, ASIN -> item2index line, has_text [listed] bool,
    parsed text per listed index (None without a valid text), the category root).
  """
  asin_to_index, item_lines, index_report = _read_index(
    os.path.join(data_dir, files.item_index), on_error
  )
  report.merge(index_report)
  num_listed = len(asin_to_index)
  (asins, texts), text_rows = _read_table(
    os.path.join(data_dir, files.text), TEXT_COLUMNS, True, on_error
  )
  if not category_root:
    category_root = infer_category_root(texts)
    if category_root is None:
      raise errors.UserError(
        f"{files.text}: no category root found (no phrase opens the category of half the "
        "items); name it (prepare_data.amazon_category_root)"
      )
  index_of_row = np.array([asin_to_index.get(a, -1) for a in asins], np.int64)  # [rows]
  text_rows.flag(
    index_of_row < 0,
    "item_id",
    "unknown item",
    lambda i: f"ASIN {asins[i]!r} is not listed in {files.item_index}",
  )
  parsed = [parse_item_text(t, category_root) for t in texts]
  text_rows.flag(
    np.array([p is None for p in parsed], bool),
    "text",
    "unparsable text",
    lambda i: (
      f"expected 'title. category path. brand. ' with a path starting '{category_root}' "
      f"or an empty category ('title. . brand. '), got {texts[i][:80]!r}"
    ),
  )
  text_rows.flag(
    np.array([p is not None and not p.title for p in parsed], bool),
    "text",
    "empty title",
    lambda i: "empty title",
  )
  first_line = {}
  repeated = np.zeros(len(asins), bool)
  for i in np.flatnonzero(text_rows.keep):
    repeated[i] = index_of_row[i] in first_line
    first_line.setdefault(int(index_of_row[i]), int(text_rows.row_numbers[i]))
  text_rows.flag(
    repeated,
    "item_id",
    "repeated item",
    lambda i: f"ASIN {asins[i]!r} repeats line {first_line[int(index_of_row[i])]}",
  )
  report.merge(text_rows.report)

  has_text = np.zeros(num_listed, bool)
  item_text: list[ItemText | None] = [None] * num_listed
  for i in np.flatnonzero(text_rows.keep):
    has_text[index_of_row[i]] = True
    item_text[index_of_row[i]] = parsed[i]
  index_asin = sorted(asin_to_index, key=asin_to_index.get)
  for m in np.flatnonzero(~has_text):
    error = errors.contract_error(
      files.item_index,
      item_lines[index_asin[m]],
      "key",
      f"ASIN {index_asin[m]!r} has no valid entry in {files.text}",
    )
    if on_error == "raise":
      raise error
    report.record("item without text", str(error))
  return asin_to_index, item_lines, has_text, item_text, category_root


def _read_requests(
  data_dir: str,
  files: UnisrecFiles,
  on_error,
  num_users: int,
  num_listed: int,
  new_id,
  report: contracts.SkipReport,
):
  """The kept rows of the three .inter files, item ids mapped to dense catalog ids.

  Returns:
    (histories: list of [h] id arrays, targets, users, splits: per-split arrays).
  """
  histories, targets, users, splits, row_reports = [], [], [], [], []
  for split_index, split in enumerate(schema.SPLITS):
    name = files.inter(split)
    (user_text, history_text, target_text), rows = _read_table(
      os.path.join(data_dir, name), INTER_COLUMNS, True, on_error
    )
    user = contracts.parse_ids(user_text, "user_id", rows)
    rows.flag(
      user >= num_users,
      "user_id",
      "unknown user",
      lambda i, u=user: f"user {int(u[i])} is not in {files.user_index} (0..{num_users - 1})",
    )
    target = contracts.parse_ids(target_text, "item_id", rows)
    history = contracts.parse_id_lists(history_text, "item_id_list", rows)
    history_lengths = np.array([len(x) for x in history], np.int64)  # [R]
    flat_history = np.concatenate(history) if history else np.zeros(0, np.int64)  # [T]
    history_owner = np.repeat(np.arange(len(history)), history_lengths)  # [T]
    for field, ids, owner in (
      ("item_id", target, np.arange(len(target))),
      ("item_id_list", flat_history, history_owner),
    ):
      outside = (ids < 0) | (ids >= num_listed)  # [T]
      first_outside = {}
      for token in np.flatnonzero(outside)[::-1]:
        first_outside[int(owner[token])] = int(ids[token])
      rows.flag(
        np.bincount(owner[outside], minlength=len(target)) > 0,
        field,
        "item id not in catalog",
        lambda i, first=first_outside: (
          f"item id {first[i]} is not in the catalog (0..{num_listed - 1})"
        ),
      )
      dropped = new_id[np.clip(ids, 0, num_listed - 1)] < 0  # [T]
      rows.flag(
        np.bincount(owner[dropped], minlength=len(target)) > 0,
        field,
        "item dropped from catalog",
        lambda i: "mentions an item dropped from the catalog",
      )
    keep = np.flatnonzero(rows.keep)
    histories += [new_id[history[i]] for i in keep]
    targets.append(new_id[target[keep]])
    users.append(user[keep])
    splits.append(np.full(len(keep), split_index, np.int8))
    row_reports.append(rows.report)
  for r in row_reports:
    report.merge(r)
  return histories, targets, users, splits


def _train_popularity(histories, target, users, split, num_items: int) -> np.ndarray:
  """[N] train interactions per item."""
  # Popularity = train interactions per item. Train rows of one user are the
  # prefixes of one sequence, so that sequence is the user's longest train
  # history plus its target.
  train = np.flatnonzero(split == schema.SPLITS.index("train"))
  train_users = users[train]
  lengths = np.array([len(histories[i]) for i in train], np.int64)
  longest = {}
  for row, u, n in zip(train, train_users, lengths):
    if u not in longest or n >= len(histories[longest[u]]):
      longest[u] = row
  interactions = [np.append(histories[row], target[row]) for row in longest.values()]
  popularity = np.bincount(
    np.concatenate(interactions or [np.zeros(0, np.int64)]).astype(np.int64), minlength=num_items
  )

  return popularity


def load_amazon(
  data_dir: str,
  dataset: str | None = None,
  on_error: contracts.OnError = "raise",
  history_len: int = 50,
  category_root: str | None = None,
  query: str = "category",
  query_skip_levels: int = 0,
) -> tuple[schema.Catalog, schema.SearchLogs, AmazonInfo]:
  """Loads one UniSRec-layout Amazon dataset into the contract tables.

  Args:
    data_dir: folder holding the dataset's files.
    dataset: the file prefix ('Scientific', 'Office'); None = the only dataset
      in `data_dir` (`find_dataset`).
    on_error: 'raise' stops at the first bad row; 'skip' drops bad rows and
      counts them in info.skip_report. An item dropped from the catalog (bad
      text) is removed and the remaining ids stay dense (ASIN order of
      item2index kept); requests that mention it are dropped too.
    history_len: width of recent_clicks (newest kept).
    category_root: phrase every category path starts with; None infers it from
      the texts (`infer_category_root`).
    query: pseudo-query mode, one of QUERY_MODES.
    query_skip_levels: leading category levels left out of 'category' queries.

  Returns:
    (catalog, logs, info).

  Raises:
    errors.DataContractError: a row breaks the contract (raise mode), naming
      file, line and field.
    errors.UserError: no dataset or several in `data_dir` (and none named), no
      category root found, or an unknown query mode.
    FileNotFoundError: a file is missing.
  """
  contracts.check_on_error(on_error)
  if history_len <= 0:
    raise ValueError(f"argument 'history_len' must be positive, got {history_len}")
  if query not in QUERY_MODES:
    raise errors.UserError(f"query mode '{query}': expected one of {QUERY_MODES}")
  start_time = time.perf_counter()
  files = find_dataset(data_dir, dataset)
  report = contracts.SkipReport(data_dir)

  # Items: dense ids from item2index, text from <name>.text.
  asin_to_index, item_lines, has_text, item_text, category_root = _read_items(
    data_dir, files, on_error, category_root, report
  )
  num_listed = len(asin_to_index)
  index_asin = sorted(asin_to_index, key=asin_to_index.get)
  # Old index -> new dense id (-1 for dropped items); identity when none dropped.
  new_id = np.cumsum(has_text) - 1
  new_id[~has_text] = -1
  kept_items = np.flatnonzero(has_text)
  num_items = len(kept_items)
  entries = [item_text[i] for i in kept_items]

  categories = sorted({e.category for e in entries if e.category})
  segments = recover_category_segments(categories, category_root)
  category_names_sorted = sorted(categories, key=lambda c: segments[c])
  category_index = {c: k for k, c in enumerate(category_names_sorted)}
  category_path = np.empty(num_items, dtype=object)
  category_path[:] = [segments[e.category] if e.category else () for e in entries]
  nodes = {path[: k + 1] for path in segments.values() for k in range(len(path))}

  # Users.
  user_to_index, _, user_report = _read_index(os.path.join(data_dir, files.user_index), on_error)
  report.merge(user_report)
  num_users = len(user_to_index)

  # Requests.
  histories, targets, users, splits = _read_requests(
    data_dir, files, on_error, num_users, num_listed, new_id, report
  )
  target = np.concatenate(targets).astype(np.int32)  # [R]
  split = np.concatenate(splits)
  num_requests = len(target)

  popularity = _train_popularity(histories, target, np.concatenate(users), split, num_items)

  catalog = schema.Catalog(
    title=np.array([e.title for e in entries], dtype=object),
    category_path=category_path,
    category_id=np.array([category_index.get(e.category, -1) for e in entries], np.int32),
    brand=np.array([e.brand for e in entries], dtype=object),
    efficiency_score=popularity.astype(np.float32),
    category_names=np.array([" > ".join(segments[c]) for c in category_names_sorted], dtype=object),
  )
  if query == "title":
    item_query = np.array(
      [title_query(e.title, p) for e, p in zip(entries, category_path)], dtype=object
    )
  else:
    path_query = {p: pseudo_query(p, skip_levels=query_skip_levels) for p in set(category_path)}
    item_query = np.array([path_query[p] for p in category_path], dtype=object)
  logs = schema.SearchLogs(
    request_id=np.arange(num_requests, dtype=np.int64),
    user_id=np.concatenate(users).astype(np.int32),
    user_profile=np.zeros((num_requests, 2), np.int32),
    recent_clicks=contracts.pad_id_lists(histories, history_len, keep_newest=True),
    query=item_query[target],
    exposed=target[:, None].copy(),
    clicked=target[:, None].copy(),
    purchased=target[:, None].copy(),
    split=split,
  )
  contracts.validate_catalog(catalog, files.text)
  contracts.validate_logs(logs, num_items, files.inter("*"))
  info = AmazonInfo(
    dataset=files.name,
    category_root=category_root,
    item_asins=np.array([index_asin[i] for i in kept_items], dtype=object),
    user_keys=np.array(sorted(user_to_index, key=user_to_index.get), dtype=object),
    num_items=num_items,
    num_users=num_users,
    split_rows={s: int((split == k).sum()) for k, s in enumerate(schema.SPLITS)},
    num_category_paths=len(categories),
    num_category_nodes=len(nodes),
    items_without_category=int(sum(1 for e in entries if not e.category)),
    skip_report=report,
    load_seconds=time.perf_counter() - start_time,
  )
  return catalog, logs, info
