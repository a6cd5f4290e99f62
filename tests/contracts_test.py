"""Tests of the data-contract validators: each bad input names dataset, row and field."""

import numpy as np
import pytest

from gr_jax import errors
from gr_jax.data import contracts, schema


def _catalog(**overrides):
  paths = np.empty(3, dtype=object)
  paths[:] = [("Root", "A"), ("Root", "B"), ()]
  fields = dict(
    title=np.array(["red pen", "blue ink", "pad"], dtype=object),
    category_path=paths,
    category_id=np.array([0, 1, -1], np.int32),
    brand=np.array(["Acme", "", "Zed"], dtype=object),
    efficiency_score=np.array([3.0, 1.0, 0.0], np.float32),
    category_names=np.array(["Root > A", "Root > B"], dtype=object),
  )
  fields.update(overrides)
  return schema.Catalog(**fields)


def _logs(clicked=((0,), (1,), (2,))):
  rows = len(clicked)
  clicked = np.array(clicked, np.int32)
  return schema.SearchLogs(
    request_id=np.arange(rows, dtype=np.int64),
    user_id=np.zeros(rows, np.int32),
    user_profile=np.zeros((rows, 2), np.int32),
    recent_clicks=np.full((rows, 2), -1, np.int32),
    query=np.array(["pen"] * rows, dtype=object),
    exposed=clicked.copy(),
    clicked=clicked,
    purchased=np.full((rows, 1), -1, np.int32),
    split=np.zeros(rows, np.int8),
  )


def test_invalid_utf8_names_file_line_and_column():
  data = b"asin\ttext\nA1\tgood\nA2\tbad \xff byte\n"
  with pytest.raises(
    errors.DataContractError, match=r"items.txt: row 3: field 'text': invalid UTF-8"
  ):
    contracts.decode_utf8_lines("items.txt", data, ("item_id", "text"), "raise")
  lines, numbers, report = contracts.decode_utf8_lines(
    "items.txt", data, ("item_id", "text"), "skip"
  )
  assert lines == ["asin\ttext", "A1\tgood"]
  assert numbers.tolist() == [1, 2]
  assert report.counts == {"invalid UTF-8": 1}


def test_non_integer_id_and_missing_field():
  rows = contracts.RowFilter("f.inter", np.array([2, 3, 4]), "raise")
  with pytest.raises(errors.DataContractError, match=r"f.inter: row 3: field 'user_id': .*'x7'"):
    contracts.parse_ids(["1", "x7", "3"], "user_id", rows)
  rows = contracts.RowFilter("f.inter", np.array([2, 3]), "raise")
  with pytest.raises(errors.DataContractError, match=r"f.inter: row 3: field 'item_id': missing"):
    contracts.split_columns(
      "f.inter",
      ["0\t1 2\t3", "0\t1 2"],
      np.array([2, 3]),
      ("user_id", "item_id_list", "item_id"),
      rows,
    )


def test_id_lists_parse_and_skip_counts():
  rows = contracts.RowFilter("f.inter", np.array([2, 3, 4]), "skip")
  lists = contracts.parse_id_lists(["1 2 3", "4 y 6", ""], "item_id_list", rows)
  assert [x.tolist() for x in lists] == [[1, 2, 3], [], []]
  assert rows.keep.tolist() == [True, False, True]
  assert rows.report.counts == {"non-integer id": 1}
  assert "row 3: field 'item_id_list'" in rows.report.examples[0]


@pytest.mark.parametrize("bad_id", [3, 7, -2])
def test_item_id_outside_catalog(bad_id):
  rows = contracts.RowFilter("logs", np.arange(2), "raise")
  with pytest.raises(
    errors.DataContractError,
    match=rf"logs: row 1: field 'clicked': item id {bad_id} is not in the catalog",
  ):
    contracts.check_item_ids(np.array([[0, -1], [1, bad_id]]), 3, "clicked", rows)


def test_validate_catalog_errors():
  contracts.validate_catalog(_catalog())
  with pytest.raises(errors.DataContractError, match=r"catalog: row 1: field 'title': empty text"):
    contracts.validate_catalog(_catalog(title=np.array(["a", " ", "c"], dtype=object)))
  with pytest.raises(
    errors.DataContractError, match=r"catalog: row 2: field 'category_id': unknown category 5"
  ):
    contracts.validate_catalog(_catalog(category_id=np.array([0, 1, 5], np.int32)))
  with pytest.raises(errors.DataContractError, match=r"row \*: field 'brand': shape"):
    contracts.validate_catalog(_catalog(brand=np.array(["a"], dtype=object)))


def test_validate_logs_skip_mode_counts_by_reason():
  logs = _logs(clicked=((0,), (9,), (2,), (-5,)))
  logs.split[2] = 7
  with pytest.raises(
    errors.DataContractError, match=r"search_logs: row 2: field 'split': split index 7"
  ):
    contracts.validate_logs(logs, num_items=3)
  kept, report = contracts.validate_logs(logs, num_items=3, on_error="skip")
  assert kept.request_id.tolist() == [0]
  assert report.counts == {"unknown split": 1, "item id not in catalog": 2}
  assert report.total == 3
  assert "skipped 3 rows" in report.summary()


def test_pad_id_lists_keeps_newest_left_padded():
  lists = [np.array([1, 2, 3, 4]), np.array([5]), np.array([], np.int64)]
  out = contracts.pad_id_lists(lists, 3, keep_newest=True)
  assert out.tolist() == [[2, 3, 4], [-1, -1, 5], [-1, -1, -1]]
  out = contracts.pad_id_lists(lists, 2, keep_newest=False)
  assert out.tolist() == [[1, 2], [5, -1], [-1, -1]]


def test_tables_from_rows_round_trip_and_missing_field():
  items = [
    dict(
      item_id=1,
      title=b"blue ink",
      category_path=[b"Root", b"B"],
      category_id=1,
      brand=b"",
      efficiency_score=1.0,
    ),
    dict(
      item_id=0,
      title="red pen",
      category_path=["Root", "A"],
      category_id=0,
      brand="Acme",
      efficiency_score=3.0,
    ),
  ]
  requests = [
    dict(
      request_id=5,
      user_id=2,
      user_profile=[1, 3],
      recent_clicks=[0, 1, 0],
      query=b"ink",
      exposed=[1, 0],
      clicked=[1],
      purchased=[],
      split="valid",
    ),
  ]
  catalog, logs, report = contracts.tables_from_rows(items, requests, "fixture", history_len=2)
  assert catalog.title.tolist() == ["red pen", "blue ink"]
  assert catalog.category_path[1] == ("Root", "B")
  assert catalog.category_names.tolist() == ["Root > A", "Root > B"]
  assert logs.recent_clicks.tolist() == [[1, 0]]
  assert logs.exposed.tolist() == [[1, 0]] and logs.purchased.tolist() == [[-1]]
  assert logs.split.tolist() == [1] and logs.query.tolist() == ["ink"]
  assert report.total == 0
  del requests[0]["query"]
  with pytest.raises(
    errors.DataContractError, match=r"fixture/logs: row 0: field 'query': missing"
  ):
    contracts.tables_from_rows(items, requests, "fixture")
  items[1]["item_id"] = 1
  with pytest.raises(errors.DataContractError, match=r"fixture/catalog: row 1: field 'item_id'"):
    contracts.tables_from_rows(items, [], "fixture")


def test_on_error_argument_checked():
  with pytest.raises(ValueError, match="on_error"):
    contracts.RowFilter("x", np.arange(1), "ignore")
