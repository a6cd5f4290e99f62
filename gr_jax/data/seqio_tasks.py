"""Generator SFT tasks (METHOD.md section 3) as seqio tasks and mixtures, and as numpy arrays.

Four tasks per dataset, each turning a Catalog + SearchLogs pair and the
stage-A SID table into (prompt, target SID) examples:

- `i2sid`:  item title -> its SID (one example per catalog item, same in every
  split: the task teaches the generator the item <-> SID map).
- `q2sid`:  query -> SID of a clicked / purchased item; up to
  `max_targets_per_request` distinct target items sampled per request.
- `uq2sid`: profile tokens + recent clicked SIDs + query -> SID (same targets).
- `seqrec`: history SIDs -> SID of the next item (same targets).

Token ids follow `token_layout.TokenLayout` only: text pieces through
`layout.text_tokens`, SID codes through `layout.sid_to_tokens`, profile through
`layout.profile_tokens`, SEP_ID after each prompt segment (so the last prompt
token is always SEP and the SID follows it).

Prompts, segments oldest first (history SIDs are the newest recent clicks,
flattened level by level; the paper's "related categories" filter is not
applied, since for Amazon the query is built from the target's category):
  i2sid   title, SEP
  q2sid   query, SEP
  uq2sid  gender, age band, SEP, history SIDs, SEP, query, SEP
  seqrec  history SIDs, SEP

Prompt budget. Prompts are at most `prompt_len` tokens: a text segment keeps its
first tokens (the start of a title or query says most), a history keeps its
newest whole SIDs, and any remaining excess is cut from the left.

Model features (decoder-only, fixed length T = prompt_len + L):
  tokens       [T] int32: PAD_ID left padding, the prompt, then the L target SID
               tokens at the end.
  loss_weights [T] float32: 1.0 exactly at the L target SID positions.
Shift convention: loss_weights is aligned with `tokens`; weight t says whether
token t is a training target. The trainer predicts token t from tokens[:t], i.e.
compares logits[:, :-1] with tokens[:, 1:] weighted by loss_weights[:, 1:].
Since the prompt ends with SEP, the first SID token is predicted from SEP.

The seqio tasks (`register_tasks`, mixtures of them by `register_mixture`, read
through `get_task_dataset`) feed SFT training (data/sft_inputs.py); `build_examples`
gives a whole split as numpy arrays (the evaluation protocol). Both call
`task_prompts`, so they give identical examples. Only the seqio paths load seqio and
TensorFlow (through gr_jax/tf_guard.py): evaluation and serving build prompts here
without them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import gin
import numpy as np

from gr_jax import tf_guard
from gr_jax.data import schema
from gr_jax.models.token_layout import PAD_ID, SEP_ID, UNK_ID, TokenLayout

if TYPE_CHECKING:
  import tensorflow as tf

TASK_NAMES = ("i2sid", "q2sid", "uq2sid", "seqrec")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TaskConfig:
  """Knobs of the SFT tasks.

  Attributes:
    prompt_len: fixed prompt length (tokens before the SID).
    max_targets_per_request: target items sampled per request (paper: 3).
    max_history_items: newest recent-click SIDs put in uq2sid / seqrec prompts.
    drop_empty_queries: leave out q2sid examples whose query is empty (e.g.
      Amazon targets without a category).
    seed: seed of the target sampling (per split, reproducible).
  """

  prompt_len: int = 64
  max_targets_per_request: int = 3
  max_history_items: int = 10
  drop_empty_queries: bool = True
  seed: int = 0

  def __post_init__(self):
    if self.prompt_len < 2:
      raise ValueError(f"TaskConfig.prompt_len must be >= 2, got {self.prompt_len}")
    if self.max_targets_per_request < 1:
      raise ValueError(
        f"TaskConfig.max_targets_per_request must be >= 1, got {self.max_targets_per_request}"
      )
    if self.max_history_items < 0:
      raise ValueError(f"TaskConfig.max_history_items must be >= 0, got {self.max_history_items}")


def load_item_sid(path: str, num_items: int, layout: TokenLayout) -> np.ndarray:
  """Loads and checks the stage-A item -> SID table.

  Args:
    path: `item_sid.npy`, [N, L] int codes.
    num_items: catalog size N.
    layout: token layout (L = layout.num_sid_levels).

  Returns:
    [N, L] int32 codes.

  Raises:
    ValueError: naming the file when the shape or a code is wrong.
  """
  item_sid = np.load(path, allow_pickle=False)
  check_item_sid(item_sid, num_items, layout, path)
  return item_sid.astype(np.int32)


def check_item_sid(
  item_sid: np.ndarray, num_items: int, layout: TokenLayout, name: str = "item_sid"
) -> None:
  """Raises ValueError unless item_sid is [num_items, L] with codes in range."""
  want = (num_items, layout.num_sid_levels)
  if item_sid.shape != want:
    raise ValueError(
      f"{name}: shape {item_sid.shape}, expected {want} (items, SID levels of the layout)"
    )
  bad = (item_sid < 0) | (item_sid >= np.asarray(layout.sid_level_sizes))  # [N, L]
  if bad.any():
    item, level = np.argwhere(bad)[0]
    raise ValueError(
      f"{name}: row {item}: level {level} code {item_sid[item, level]} "
      f"outside [0, {layout.sid_level_sizes[level]})"
    )


class TextEncoder:
  """Text -> layout token ids, cached per distinct string."""

  def __init__(self, text_vocab, layout: TokenLayout):
    # text_vocab.TextVocab encodes batches; its seqio form encodes one string.
    if hasattr(text_vocab, "as_seqio_vocabulary"):
      text_vocab = text_vocab.as_seqio_vocabulary()
    size = int(text_vocab.vocab_size)
    if size > layout.text_vocab_size:
      raise ValueError(
        f"text vocabulary has {size} pieces but layout.text_vocab_size is {layout.text_vocab_size}"
      )
    self.vocab = text_vocab
    self.layout = layout
    self.cache = {}

  def __call__(self, text: str) -> np.ndarray:
    if text not in self.cache:
      self.cache[text] = self.layout.text_tokens(np.asarray(self.vocab.encode(text), np.int64))
    return self.cache[text]


def _sample_targets(
  logs: schema.SearchLogs, rows: np.ndarray, count: int, rng: np.random.Generator
):
  """Up to `count` distinct clicked-or-purchased items per row, sampled.

  Returns:
    (row index per example, target item per example), in row order.
  """
  candidates = np.concatenate([logs.clicked[rows], logs.purchased[rows]], axis=1)  # [R, 2M]
  # Random keys, with padding and repeats pushed last, choose a random subset.
  keys = rng.random(candidates.shape)
  keys[candidates == schema.PAD_ITEM] = np.inf
  order = np.argsort(candidates, axis=1, kind="stable")
  sorted_items = np.take_along_axis(candidates, order, 1)
  repeat = np.zeros_like(sorted_items, bool)
  repeat[:, 1:] = sorted_items[:, 1:] == sorted_items[:, :-1]
  repeat_mask = np.zeros_like(repeat)
  np.put_along_axis(repeat_mask, order, repeat, 1)
  keys[repeat_mask] = np.inf
  pick = np.argsort(keys, axis=1, kind="stable")[:, :count]  # [R, K]
  items = np.take_along_axis(candidates, pick, 1)
  valid = np.isfinite(np.take_along_axis(keys, pick, 1))  # [R, K]
  row_of = np.broadcast_to(rows[:, None], items.shape)
  return row_of[valid], items[valid]


def _sid_history(
  recent_clicks: np.ndarray, item_sid: np.ndarray, layout: TokenLayout, max_items: int
) -> np.ndarray:
  """Newest `max_items` clicked items -> their SID tokens, flattened, oldest first."""
  if max_items <= 0:
    return np.zeros(0, np.int32)
  items = recent_clicks[recent_clicks != schema.PAD_ITEM][-max_items:]
  return layout.sid_to_tokens(item_sid[items]).reshape(-1).astype(np.int32)


def request_prompt(
  task_name: str,
  encode: TextEncoder,
  layout: TokenLayout,
  item_sid: np.ndarray,
  config: TaskConfig,
  *,
  query: str,
  user_profile: np.ndarray | None,
  recent_clicks: np.ndarray,
) -> np.ndarray:
  """One request's prompt for a request task (q2sid, uq2sid, seqrec); the serving path too.

  Args:
    task_name: 'q2sid', 'uq2sid' or 'seqrec'.
    encode: the run's text encoder (`TextEncoder`).
    layout: token layout.
    item_sid: [N, L] int32 codes.
    config: task knobs (prompt budget, history length).
    query: the query text.
    user_profile: [2] (gender, age band), or None for no profile (two UNK_ID tokens).
    recent_clicks: [H] item ids, newest last, PAD_ITEM allowed.

  Returns:
    [<= config.prompt_len] int32 prompt tokens ending with SEP_ID.
  """
  budget = config.prompt_len
  num_levels = layout.num_sid_levels
  sep = np.array([SEP_ID], np.int32)
  if task_name == "q2sid":
    prompt = np.concatenate([encode(query)[: budget - 1], sep])
  elif task_name == "seqrec":
    fit = (budget - 1) // num_levels
    history = _sid_history(recent_clicks, item_sid, layout, min(fit, config.max_history_items))
    prompt = np.concatenate([history, sep])
  elif task_name == "uq2sid":
    if user_profile is None:
      profile = np.array([UNK_ID, UNK_ID], np.int32)
    else:
      profile = layout.profile_tokens(user_profile[0], user_profile[1])
    query_tokens = encode(query)[: max(budget - 5, 0)]
    fit = (budget - len(query_tokens) - 5) // num_levels
    history = _sid_history(recent_clicks, item_sid, layout, min(fit, config.max_history_items))
    prompt = np.concatenate([profile, sep, history, sep, query_tokens, sep])[-budget:]
  else:
    raise ValueError(f"'{task_name}' is not a request task (q2sid, uq2sid, seqrec)")
  return prompt.astype(np.int32)


def task_prompts(
  task_name: str,
  catalog: schema.Catalog,
  logs: schema.SearchLogs,
  split: str,
  item_sid: np.ndarray,
  text_vocab,
  layout: TokenLayout,
  config: TaskConfig,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
  """The per-example logic shared by the numpy and the seqio paths.

  Args:
    task_name: one of TASK_NAMES.
    catalog: the items.
    logs: the requests (all splits; `split` picks rows).
    split: one of schema.SPLITS.
    item_sid: [N, L] int32 codes.
    text_vocab: a vocabulary with `encode(str) -> list[int]` and `vocab_size`
      (e.g. seqio.SentencePieceVocabulary), or a text_vocab.TextVocab.
    layout: token layout.
    config: task knobs.

  Returns:
    (prompts, target_item, request_row): E prompt token arrays (each at most
    config.prompt_len long, ending with SEP_ID), [E] int32 target item ids and
    [E] int64 row of `logs` (-1 for i2sid).

  Raises:
    ValueError: unknown task or split, or a bad SID table / vocabulary.
  """
  if task_name not in TASK_NAMES:
    raise ValueError(f"unknown task '{task_name}', expected one of {TASK_NAMES}")
  if split not in schema.SPLITS:
    raise ValueError(f"unknown split '{split}', expected one of {schema.SPLITS}")
  check_item_sid(item_sid, catalog.num_items, layout)
  encode = TextEncoder(text_vocab, layout)
  budget = config.prompt_len
  sep = np.array([SEP_ID], np.int32)

  if task_name == "i2sid":
    prompts = [np.concatenate([encode(t)[: budget - 1], sep]) for t in catalog.title]
    return (
      prompts,
      np.arange(catalog.num_items, dtype=np.int32),
      np.full(catalog.num_items, -1, np.int64),
    )

  rows = np.flatnonzero(logs.split == schema.SPLITS.index(split))
  if task_name == "q2sid" and config.drop_empty_queries:
    rows = rows[[bool(str(q).strip()) for q in logs.query[rows]]]
  rng = np.random.default_rng([config.seed, schema.SPLITS.index(split)])
  row_of, targets = _sample_targets(logs, rows, config.max_targets_per_request, rng)

  built = {}
  prompts = []
  for row in row_of:
    if row not in built:
      built[row] = request_prompt(
        task_name,
        encode,
        layout,
        item_sid,
        config,
        query=logs.query[row],
        user_profile=logs.user_profile[row],
        recent_clicks=logs.recent_clicks[row],
      )
    prompts.append(built[row])
  return prompts, targets.astype(np.int32), row_of.astype(np.int64)


def layout_examples(
  prompts: list[np.ndarray], target_sid_tokens: np.ndarray, prompt_len: int
) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads prompts and appends the target SIDs (the decoder-only layout).

  Args:
    prompts: E prompt token arrays (longer ones are cut from the left).
    target_sid_tokens: [E, L] SID token ids.
    prompt_len: fixed prompt length P.

  Returns:
    (tokens [E, P + L] int32, loss_weights [E, P + L] float32).
  """
  num_examples, num_levels = target_sid_tokens.shape
  tokens = np.full((num_examples, prompt_len + num_levels), PAD_ID, np.int32)
  for e, prompt in enumerate(prompts):
    kept = prompt[-prompt_len:]
    tokens[e, prompt_len - len(kept) : prompt_len] = kept
  tokens[:, prompt_len:] = target_sid_tokens
  loss_weights = np.zeros(tokens.shape, np.float32)
  loss_weights[:, prompt_len:] = 1.0
  return tokens, loss_weights


@gin.configurable(denylist=["catalog", "logs", "item_sid", "text_vocab", "layout"])
def build_examples(
  task_name: str,
  catalog: schema.Catalog,
  logs: schema.SearchLogs,
  split: str,
  item_sid: np.ndarray,
  text_vocab,
  layout: TokenLayout,
  prompt_len: int | None = None,
  config: TaskConfig | None = None,
) -> dict[str, np.ndarray]:
  """All examples of one task and split as fixed-shape numpy arrays.

  Args:
    task_name: one of TASK_NAMES.
    catalog, logs: the contract tables.
    split: one of schema.SPLITS.
    item_sid: [N, L] int32 SID codes.
    text_vocab: text vocabulary (`encode`, `vocab_size`).
    layout: token layout.
    prompt_len: overrides config.prompt_len when given.
    config: task knobs (default TaskConfig()).

  Returns:
    dict with tokens [E, T] int32, loss_weights [E, T] float32, target_item
    [E] int32, request_row [E] int64 (-1 for i2sid), T = prompt_len + L.
  """
  config = config or TaskConfig()
  if prompt_len is not None:
    config = dataclasses.replace(config, prompt_len=prompt_len)
  prompts, targets, request_row = task_prompts(
    task_name, catalog, logs, split, item_sid, text_vocab, layout, config
  )
  sid_tokens = layout.sid_to_tokens(item_sid[targets]).astype(np.int32)  # [E, L]
  tokens, loss_weights = layout_examples(
    prompts, sid_tokens.reshape(-1, layout.num_sid_levels), config.prompt_len
  )
  return {
    "tokens": tokens,
    "loss_weights": loss_weights,
    "target_item": targets,
    "request_row": request_row,
  }


# Registered task or mixture name -> its TaskConfig (the prompt budget is fixed per task).
_REGISTERED_CONFIGS: dict[str, TaskConfig] = {}


def task_name_for(dataset_name: str, task_name: str) -> str:
  return f"{dataset_name}_{task_name}"


@gin.configurable(denylist=["tables_fn", "text_vocab", "layout"])
def register_tasks(
  dataset_name: str,
  tables_fn: Callable[[], tuple[schema.Catalog, schema.SearchLogs]],
  item_sid_path: str,
  text_vocab,
  layout: TokenLayout,
  config: TaskConfig | None = None,
  task_names: tuple[str, ...] = TASK_NAMES,
) -> list[str]:
  """Registers `<dataset_name>_<task>` seqio tasks over one data source.

  Args:
    dataset_name: prefix of the task names.
    tables_fn: returns (catalog, logs); called once, lazily, on first use.
    item_sid_path: the stage-A `item_sid.npy`.
    text_vocab: text vocabulary (`encode`, `vocab_size`).
    layout: token layout.
    config: task knobs (default TaskConfig()).
    task_names: which of TASK_NAMES to register.

  Returns:
    The registered task names (an existing task of that name is replaced).
  """
  from gr_jax.data import seqio_converter  # seqio and TensorFlow, through tf_guard

  seqio = tf_guard.seqio()
  tf = tf_guard.tensorflow()
  config = config or TaskConfig()

  @functools.cache
  def sources():
    catalog, logs = tables_fn()
    return catalog, logs, load_item_sid(item_sid_path, catalog.num_items, layout)

  output_features = {
    "inputs": seqio.Feature(
      seqio.PassThroughVocabulary(layout.vocab_size), add_eos=False, dtype=tf.int32
    ),
    "targets": seqio.Feature(
      seqio.PassThroughVocabulary(layout.vocab_size), add_eos=False, dtype=tf.int32
    ),
  }
  registered = []
  for task in task_names:

    def dataset_fn(split, task=task):
      catalog, logs, item_sid = sources()
      prompts, targets, _ = task_prompts(
        task, catalog, logs, split, item_sid, text_vocab, layout, config
      )
      lengths = np.array([len(p) for p in prompts], np.int64)
      flat = np.concatenate(prompts) if prompts else np.zeros(0, np.int32)
      inputs = tf.RaggedTensor.from_row_lengths(flat.astype(np.int32), lengths)
      sid_tokens = (
        layout.sid_to_tokens(item_sid[targets]).astype(np.int32).reshape(-1, layout.num_sid_levels)
      )
      return tf.data.Dataset.from_tensor_slices({"inputs": inputs, "targets": sid_tokens})

    name = task_name_for(dataset_name, task)
    _REGISTERED_CONFIGS[name] = config
    if name in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
      name,
      source=seqio_converter.InMemorySource(dataset_fn),
      output_features=output_features,
      shuffle_buffer_size=None,  # the source shuffles all of its examples
    )
    registered.append(name)
  return registered


def register_mixture(name: str, rates: dict[str, float]) -> str:
  """Registers a seqio Mixture of tasks registered here, sampled by `rates`.

  Args:
    name: the mixture's name (an existing mixture of that name is replaced).
    rates: registered task name -> positive sampling rate (normalised by seqio).

  Returns:
    `name`.

  Raises:
    ValueError: an unregistered task, a rate that is not positive, or tasks with
      different prompt budgets.
  """
  seqio = tf_guard.seqio()
  unknown = sorted(set(rates) - set(_REGISTERED_CONFIGS))
  if unknown:
    raise ValueError(f"mixture '{name}': tasks {unknown} were not registered by register_tasks")
  bad = {task: rate for task, rate in rates.items() if not rate > 0}
  if bad or not rates:
    raise ValueError(f"mixture '{name}': rates must be positive and non-empty, got {rates}")
  budgets = {_REGISTERED_CONFIGS[task].prompt_len for task in rates}
  if len(budgets) != 1:
    raise ValueError(f"mixture '{name}': its tasks have different prompt lengths {budgets}")
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, [(task, float(rate)) for task, rate in rates.items()])
  _REGISTERED_CONFIGS[name] = _REGISTERED_CONFIGS[next(iter(rates))]
  return name


def register_tasks_from_tables(
  dataset_name: str,
  catalog: schema.Catalog,
  logs: schema.SearchLogs,
  item_sid_path: str,
  text_vocab,
  layout: TokenLayout,
  config: TaskConfig | None = None,
) -> list[str]:
  """`register_tasks` over in-memory tables (e.g. the built-in world)."""
  return register_tasks(
    dataset_name, lambda: (catalog, logs), item_sid_path, text_vocab, layout, config
  )


@gin.configurable(denylist=["text_vocab", "layout"])
def register_tasks_from_tfds(
  builder_name: str,
  item_sid_path: str,
  text_vocab,
  layout: TokenLayout,
  data_dir: str | None = None,
  config: TaskConfig | None = None,
) -> list[str]:
  """`register_tasks` over a TFDS builder with the contract features.

  The builder must provide a `catalog` config (split 'catalog') and a `logs`
  config (splits train / valid / test), as `amazon_tfds.AmazonScientific` does.
  Task names are prefixed with the builder name without its version.
  """
  from gr_jax.data.tfds import amazon as amazon_tfds  # noqa: PLC0415  (keeps TFDS off the import path)

  dataset_name = os.path.basename(builder_name.split(":")[0])
  return register_tasks(
    dataset_name,
    lambda: amazon_tfds.load_tfds_tables(builder_name, data_dir=data_dir),
    item_sid_path,
    text_vocab,
    layout,
    config,
  )


def get_task_dataset(
  task_full_name: str,
  split: str,
  layout: TokenLayout,
  shuffle: bool = False,
  seed: int | None = None,
  num_epochs: int | None = 1,
) -> tf.data.Dataset:
  """A task or mixture registered here, through seqio_converter.PromptSidFeatureConverter.

  The prompt length is the one the task was registered with
  (TaskConfig.prompt_len): prompts are budgeted when they are built.

  Args:
    task_full_name: a name from `register_tasks` or `register_mixture`.
    split: one of schema.SPLITS.
    layout: token layout.
    shuffle: shuffle every epoch (a mixture also samples its tasks at random).
    seed: seed of the shuffles and of the mixture's sampling; with a seed the
      order of examples is the same on every call.
    num_epochs: passes over each task's examples; None repeats without end.

  Returns:
    tf.data.Dataset of {tokens [T], loss_weights [T]}, T = prompt_len + L.

  Raises:
    ValueError: the name was not registered here.
  """
  if task_full_name not in _REGISTERED_CONFIGS:
    raise ValueError(
      f"task '{task_full_name}' was not registered by seqio_tasks.register_tasks "
      "or register_mixture"
    )
  from gr_jax.data import seqio_converter  # seqio and TensorFlow, through tf_guard

  provider = tf_guard.seqio().get_mixture_or_task(task_full_name)
  lengths = {
    "inputs": _REGISTERED_CONFIGS[task_full_name].prompt_len,
    "targets": layout.num_sid_levels,
  }
  ds = provider.get_dataset(
    sequence_length=lengths,
    split=split,
    shuffle=shuffle,
    seed=seed,
    num_epochs=num_epochs,
    trim_output_features=False,
  )
  return seqio_converter.PromptSidFeatureConverter()(ds, lengths)
