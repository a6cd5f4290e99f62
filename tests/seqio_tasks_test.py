"""Tests of the SFT tasks: numpy examples, seqio tasks, and their agreement."""

import numpy as np
import pytest
import sentencepiece as spm
import seqio

from gr_jax.data import schema, seqio_tasks
from gr_jax.models.token_layout import PAD_ID, SEP_ID, TokenLayout

TITLES = [
  "red ball pen",
  "blue ink pot",
  "green paper pad",
  "black marker pen",
  "white paper roll",
  "blue pen",
]
QUERIES = ["pen", "blue ink", "", "paper pad", "marker", "red pen"]


@pytest.fixture(scope="module")
def text_vocab(tmp_path_factory):
  prefix = str(tmp_path_factory.mktemp("spm") / "tiny")
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(TITLES * 5 + [q for q in QUERIES if q] * 5),
    model_prefix=prefix,
    vocab_size=40,
    model_type="unigram",
    hard_vocab_limit=False,
    pad_id=0,
    eos_id=1,
    unk_id=2,
    bos_id=-1,
    minloglevel=2,
  )
  return seqio.SentencePieceVocabulary(prefix + ".model")


@pytest.fixture(scope="module")
def tables():
  num_items = len(TITLES)
  paths = np.empty(num_items, dtype=object)
  paths[:] = [("Root", "Office")] * num_items
  catalog = schema.Catalog(
    title=np.array(TITLES, dtype=object),
    category_path=paths,
    category_id=np.zeros(num_items, np.int32),
    brand=np.array([""] * num_items, dtype=object),
    efficiency_score=np.ones(num_items, np.float32),
    category_names=np.array(["Root > Office"], dtype=object),
  )
  pad = schema.PAD_ITEM
  logs = schema.SearchLogs(
    request_id=np.arange(6, dtype=np.int64),
    user_id=np.array([0, 1, 2, 0, 1, 2], np.int32),
    user_profile=np.array([[0, 1], [1, 7], [2, 0], [0, 1], [1, 7], [2, 3]], np.int32),
    recent_clicks=np.array(
      [
        [pad, pad, 1, 2],
        [0, 1, 2, 3],
        [pad, pad, pad, pad],
        [pad, 5, 4, 3],
        [pad, pad, pad, 0],
        [1, 2, 3, 4],
      ],
      np.int32,
    ),
    query=np.array(QUERIES, dtype=object),
    exposed=np.array(
      [
        [0, 1, 2, 3],
        [1, 2, pad, pad],
        [2, 3, 4, pad],
        [3, pad, pad, pad],
        [4, 5, pad, pad],
        [5, 0, 1, 2],
      ],
      np.int32,
    ),
    clicked=np.array(
      [
        [0, 1, 2, pad],
        [1, pad, pad, pad],
        [2, 3, pad, pad],
        [3, pad, pad, pad],
        [4, 5, pad, pad],
        [5, 0, 1, 2],
      ],
      np.int32,
    ),
    purchased=np.array([[3, pad], [1, pad], [pad, pad], [pad, pad], [4, pad], [3, 4]], np.int32),
    split=np.array([0, 0, 0, 0, 1, 2], np.int8),
  )
  return catalog, logs


@pytest.fixture(scope="module")
def layout(text_vocab):
  return TokenLayout(text_vocab_size=text_vocab.vocab_size, sid_level_sizes=(4, 5, 3))


@pytest.fixture(scope="module")
def item_sid_path(tmp_path_factory, layout):
  item_sid = np.array([[0, 0, 0], [0, 1, 2], [1, 4, 0], [2, 2, 1], [3, 0, 2], [3, 3, 1]], np.int32)
  path = str(tmp_path_factory.mktemp("sid") / "item_sid.npy")
  np.save(path, item_sid)
  return path


def _prompt(tokens):
  """Strip left padding."""
  return tokens[np.argmax(tokens != PAD_ID) :] if (tokens != PAD_ID).any() else tokens[:0]


@pytest.mark.parametrize("task", seqio_tasks.TASK_NAMES)
def test_examples_decode_to_target_sids_and_mask_covers_sids(
  task, tables, text_vocab, layout, item_sid_path
):
  catalog, logs = tables
  item_sid = seqio_tasks.load_item_sid(item_sid_path, catalog.num_items, layout)
  prompt_len = 12
  ex = seqio_tasks.build_examples(
    task, catalog, logs, "train", item_sid, text_vocab, layout, prompt_len
  )
  num_levels = layout.num_sid_levels
  assert ex["tokens"].shape[1] == prompt_len + num_levels
  # The loss mask covers exactly the SID tokens at the end.
  np.testing.assert_array_equal(ex["loss_weights"][:, :prompt_len], 0)
  np.testing.assert_array_equal(ex["loss_weights"][:, prompt_len:], 1)
  sid_tokens = ex["tokens"][:, prompt_len:]
  assert layout.is_valid_sid_token(sid_tokens).all()
  np.testing.assert_array_equal(layout.tokens_to_sid(sid_tokens), item_sid[ex["target_item"]])
  # Every prompt ends with SEP just before the SID.
  np.testing.assert_array_equal(ex["tokens"][:, prompt_len - 1], SEP_ID)
  if task == "i2sid":
    np.testing.assert_array_equal(ex["target_item"], np.arange(catalog.num_items))
    for e, title in enumerate(TITLES):
      pieces = _prompt(ex["tokens"][e, :prompt_len])[:-1] - layout.text_offset
      want = text_vocab.encode(title)[: prompt_len - 1]  # text keeps its first tokens
      assert pieces.tolist() == want and title.startswith(text_vocab.decode(want))
    assert any(len(text_vocab.encode(t)) > prompt_len - 1 for t in TITLES)  # truncation exercised
    return
  rows = ex["request_row"]
  assert (logs.split[rows] == 0).all()
  for e, row in enumerate(rows):
    targets = set(logs.clicked[row]) | set(logs.purchased[row])
    assert ex["target_item"][e] in targets - {schema.PAD_ITEM}
  # Up to 3 distinct targets per request, all of a request's when it has <= 3.
  for row in np.unique(rows):
    picked = ex["target_item"][rows == row]
    assert len(set(picked)) == len(picked) <= 3
    available = (set(logs.clicked[row]) | set(logs.purchased[row])) - {schema.PAD_ITEM}
    assert len(picked) == min(3, len(available))
  if task == "q2sid":
    assert 2 not in rows  # empty query dropped
    e = int(np.flatnonzero(rows == 1)[0])
    pieces = _prompt(ex["tokens"][e, :prompt_len])[:-1] - layout.text_offset
    assert text_vocab.decode(pieces.tolist()) == "blue ink"
  if task == "seqrec":
    e = int(np.flatnonzero(rows == 1)[0])  # history 0 1 2 3: 3 newest SIDs fit in 11 tokens
    history = _prompt(ex["tokens"][e, :prompt_len])[:-1].reshape(-1, num_levels)
    np.testing.assert_array_equal(layout.tokens_to_sid(history), item_sid[[1, 2, 3]])
  if task == "uq2sid":
    e = int(np.flatnonzero(rows == 1)[0])
    prompt = _prompt(ex["tokens"][e, :prompt_len])
    np.testing.assert_array_equal(prompt[:3], [*layout.profile_tokens(1, 7), SEP_ID])
    query = layout.text_tokens(text_vocab.encode("blue ink"))
    np.testing.assert_array_equal(prompt[-len(query) - 1 : -1], query)
    history = prompt[3 : -len(query) - 2].reshape(-1, num_levels)
    newest = (prompt_len - len(query) - 5) // num_levels
    np.testing.assert_array_equal(layout.tokens_to_sid(history), item_sid[[0, 1, 2, 3][-newest:]])


def test_seqio_tasks_match_numpy_examples(tables, text_vocab, layout, item_sid_path):
  catalog, logs = tables
  item_sid = np.load(item_sid_path)
  config = seqio_tasks.TaskConfig(prompt_len=14)  # short: truncation on both paths
  names = seqio_tasks.register_tasks_from_tables(
    "fixture", catalog, logs, item_sid_path, text_vocab, layout, config
  )
  assert names == [f"fixture_{t}" for t in seqio_tasks.TASK_NAMES]
  for task in seqio_tasks.TASK_NAMES:
    for split in ("train", "test"):
      want = seqio_tasks.build_examples(
        task, catalog, logs, split, item_sid, text_vocab, layout, config=config
      )
      ds = seqio_tasks.get_task_dataset(f"fixture_{task}", split, layout)
      got = list(ds.as_numpy_iterator())
      assert len(got) == len(want["tokens"]), (task, split)
      np.testing.assert_array_equal(
        np.stack([g["tokens"] for g in got]), want["tokens"], err_msg=task
      )
      np.testing.assert_array_equal(
        np.stack([g["loss_weights"] for g in got]), want["loss_weights"]
      )


def test_layout_examples_left_pads_and_truncates_from_left():
  prompts = [np.array([7, 8, SEP_ID]), np.array([5, 6, 7, 8, 9, SEP_ID])]
  tokens, weights = seqio_tasks.layout_examples(prompts, np.array([[20, 30], [21, 31]]), 4)
  assert tokens.tolist() == [[PAD_ID, 7, 8, SEP_ID, 20, 30], [7, 8, 9, SEP_ID, 21, 31]]
  assert weights.tolist() == [[0, 0, 0, 0, 1, 1]] * 2


def test_bad_sid_table_and_task_arguments(tables, text_vocab, layout, tmp_path):
  catalog, logs = tables
  bad = tmp_path / "item_sid.npy"
  np.save(bad, np.zeros((catalog.num_items, 2), np.int32))
  with pytest.raises(ValueError, match=r"item_sid.npy: shape \(6, 2\), expected \(6, 3\)"):
    seqio_tasks.load_item_sid(str(bad), catalog.num_items, layout)
  codes = np.zeros((catalog.num_items, 3), np.int32)
  codes[4, 1] = 5
  np.save(bad, codes)
  with pytest.raises(ValueError, match=r"row 4: level 1 code 5 outside \[0, 5\)"):
    seqio_tasks.load_item_sid(str(bad), catalog.num_items, layout)
  with pytest.raises(ValueError, match="unknown task 'x2sid'"):
    seqio_tasks.build_examples("x2sid", catalog, logs, "train", codes * 0, text_vocab, layout)
  with pytest.raises(ValueError, match="text_vocab_size"):
    small = TokenLayout(text_vocab_size=3, sid_level_sizes=(4, 5, 3))
    seqio_tasks.build_examples("i2sid", catalog, logs, "train", codes * 0, text_vocab, small)


def test_tasks_from_tfds_builder_match_numpy(tmp_path, monkeypatch, text_vocab, layout):
  from amazon_test import write_fixture

  from gr_jax.data.amazon import reader as amazon
  from gr_jax.data.tfds import amazon as amazon_tfds

  data_dir = write_fixture(tmp_path / "manual")
  monkeypatch.setenv(amazon_tfds.MANUAL_DIR_ENV, data_dir)
  item_sid = np.array([[0, 0, 0], [0, 1, 2], [1, 4, 0], [2, 2, 1], [3, 0, 2]], np.int32)
  sid_path = str(tmp_path / "item_sid.npy")
  np.save(sid_path, item_sid)
  config = seqio_tasks.TaskConfig(prompt_len=16)
  names = seqio_tasks.register_tasks_from_tfds(
    "amazon_scientific",
    sid_path,
    text_vocab,
    layout,
    data_dir=str(tmp_path / "tfds"),
    config=config,
  )
  assert names[0] == "amazon_scientific_i2sid"
  catalog, logs, _ = amazon.load_amazon(data_dir)
  for task in ("q2sid", "uq2sid"):
    want = seqio_tasks.build_examples(
      task, catalog, logs, "valid", item_sid, text_vocab, layout, 16
    )
    ds = seqio_tasks.get_task_dataset(f"amazon_scientific_{task}", "valid", layout)
    got = list(ds.as_numpy_iterator())
    assert got[0]["tokens"].shape == (16 + layout.num_sid_levels,)
    np.testing.assert_array_equal(
      np.stack([g["tokens"] for g in got]), want["tokens"], err_msg=task
    )
