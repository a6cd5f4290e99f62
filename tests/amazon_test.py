"""Tests of the Amazon (UniSRec layout) reader and its TFDS builders.

A tiny fixture in the UniSRec file format is written to tmp for every CI test,
and a fabricated second dataset (another prefix and category root); tests
marked real_data read ../shared/data/amazon_scientific when present.
"""

import os
import re

import numpy as np
import pytest
from amazon_fixtures import fabricate, write_unisrec

from gr_jax import errors
from gr_jax.data.amazon import reader as amazon

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_DIRS = [
  os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "amazon_scientific"),
  "/work/shared/data/amazon_scientific",
]
SCIENTIFIC = amazon.UnisrecFiles("Scientific")
REAL_DIR = next((d for d in REAL_DIRS if os.path.isfile(os.path.join(d, SCIENTIFIC.text))), None)
real_data = pytest.mark.skipif(
  REAL_DIR is None, reason="Amazon Scientific files not found in ../shared/data/amazon_scientific"
)

ROOT = "Industrial & Scientific"
# ASIN, text; item2index order below differs from the text file's order.
FIXTURE_TEXT = [
  (
    "B1",
    f"Dr. Tool No. 5 Sanding Roll. {ROOT} Abrasive & Finishing Products Sanding Rolls. "
    "Mr. Heater. ",
  ),
  ("B2", f"Fine Sheet. {ROOT} Abrasive & Finishing Products Sanding Sheets. Acme. "),
  ("B3", f"Ball Valve. {ROOT} Hydraulics, Pneumatics & Plumbing Valves Ball Valves. . "),
  ("B4", "Mystery Gadget. . Zed. "),
  ("B5", f"Check Valve. {ROOT} Hydraulics, Pneumatics & Plumbing Valves Check Valves. Acme. "),
]
FIXTURE_INDEX = ["B3", "B1", "B2", "B5", "B4"]  # dense ids 0..4
FIXTURE_USERS = ["U0", "U1"]
# user, history, target per split; train rows are prefixes of one sequence per user.
FIXTURE_INTER = {
  "train": [(0, [0], 1), (0, [0, 1], 2), (1, [3], 4)],
  "valid": [(0, [0, 1, 2], 3), (1, [3, 4], 0)],
  "test": [(0, [0, 1, 2, 3], 4), (1, [3, 4, 0], 2)],
}


def write_fixture(
  data_dir, text=FIXTURE_TEXT, index=FIXTURE_INDEX, inter=FIXTURE_INTER, raw_text_line=None
):
  """Writes the six Scientific.* files; raw_text_line (bytes) is appended to Scientific.text."""
  return write_unisrec(data_dir, "Scientific", text, index, FIXTURE_USERS, inter, raw_text_line)


def test_parse_item_text_cases():
  parsed = amazon.parse_item_text(FIXTURE_TEXT[0][1], ROOT)
  assert parsed == amazon.ItemText(
    "Dr. Tool No. 5 Sanding Roll",
    f"{ROOT} Abrasive & Finishing Products Sanding Rolls",
    "Mr. Heater",
  )
  assert amazon.parse_item_text(FIXTURE_TEXT[2][1], ROOT).brand == ""
  assert amazon.parse_item_text(FIXTURE_TEXT[3][1], ROOT) == amazon.ItemText(
    "Mystery Gadget", "", "Zed"
  )
  assert amazon.parse_item_text("No Brand. . . ", ROOT) == amazon.ItemText("No Brand", "", "")
  quoted = amazon.parse_item_text(f" {ROOT} />. {ROOT} Fasteners Nuts. 3M. ", ROOT)
  assert quoted == amazon.ItemText(f"{ROOT} />", f"{ROOT} Fasteners Nuts", "3M")
  assert amazon.parse_item_text("just some words", ROOT) is None


def test_recover_category_segments_hand_example():
  paths = [
    f"{ROOT} Power Transmission Products Springs Gas Springs",
    f"{ROOT} Power Transmission Products Springs Torsion Springs",
    f"{ROOT} Power Transmission Products Belts",
    f"{ROOT} Fasteners",
    f"{ROOT} Fasteners Nuts Wing Nuts",
    f"{ROOT} Tapes, Adhesives & Sealants Tape",
    f"{ROOT} Food & Beverage Cups",
    f"{ROOT} Food Preparation Equipment",
    f"{ROOT} Lab Supplies",
    f"{ROOT} Lab Supplies Beakers",
    f"{ROOT} Lab Supplies Lab Flasks",
    f"{ROOT} Lab Supplies Lab Funnels",
    f"{ROOT} Additive Products",
    f"{ROOT} Additive Products 3D Printers",
    f"{ROOT} Additive Products 3D Scanners",
    f"{ROOT} Metals & Alloys",
    f"{ROOT} Metals & Alloys Aluminum Aluminum Rods",
    f"{ROOT} Metals & Alloys Aluminum Aluminum Bars",
    f"{ROOT} Metals & Alloys Copper Copper Rods",
  ]
  segments = amazon.recover_category_segments(paths, ROOT)
  # Paths diverge after "Power Transmission Products" and after the head noun
  # "Springs" (its children repeat it).
  assert segments[paths[0]] == (ROOT, "Power Transmission Products", "Springs", "Gas Springs")
  assert segments[paths[2]] == (ROOT, "Power Transmission Products", "Belts")
  # "Fasteners" is a complete path; "Nuts Wing Nuts" has no evidence of a boundary.
  assert segments[paths[4]] == (ROOT, "Fasteners", "Nuts Wing Nuts")
  # Never cut after a comma or next to '&'; "Food" diverges into '&' so is no node.
  assert segments[paths[5]] == (ROOT, "Tapes, Adhesives & Sealants Tape")
  assert segments[paths[6]] == (ROOT, "Food & Beverage Cups")
  assert segments[paths[7]] == (ROOT, "Food Preparation Equipment")
  # "Lab" opens sibling names ("Lab Flasks", "Lab Funnels") that do not repeat it.
  assert segments[paths[9]] == (ROOT, "Lab Supplies", "Beakers")
  assert segments[paths[10]] == (ROOT, "Lab Supplies", "Lab Flasks")
  # All children of "Additive Products" start with "3D": a shared first word.
  assert segments[paths[13]] == (ROOT, "Additive Products", "3D Printers")
  # A phrase said twice is a node and the start of its child's name.
  assert segments[paths[16]] == (ROOT, "Metals & Alloys", "Aluminum", "Aluminum Rods")
  assert segments[paths[18]] == (ROOT, "Metals & Alloys", "Copper", "Copper Rods")


def test_pseudo_query():
  path = (ROOT, "Hydraulics, Pneumatics & Plumbing", "Valves", "Ball Valves")
  assert (
    amazon.pseudo_query(path) == "industrial scientific hydraulics pneumatics plumbing valves ball"
  )
  assert amazon.pseudo_query(path, skip_levels=2) == "valves ball"
  assert (
    amazon.pseudo_query(("Lubricants and Oils", "O-Rings of the Day"))
    == "lubricants oils o-rings day"
  )
  assert amazon.pseudo_query(()) == ""


def test_load_fixture(tmp_path):
  catalog, logs, info = amazon.load_amazon(write_fixture(tmp_path / "d"), history_len=3)
  assert info.num_items == 5 and info.num_users == 2
  assert info.split_rows == {"train": 3, "valid": 2, "test": 2}
  assert info.item_asins.tolist() == FIXTURE_INDEX
  assert catalog.title.tolist() == [
    "Ball Valve",
    "Dr. Tool No. 5 Sanding Roll",
    "Fine Sheet",
    "Check Valve",
    "Mystery Gadget",
  ]
  assert catalog.brand.tolist() == ["", "Mr. Heater", "Acme", "Acme", "Zed"]
  assert info.items_without_category == 1 and info.num_category_paths == 4
  assert catalog.category_path[0] == (
    ROOT,
    "Hydraulics, Pneumatics & Plumbing Valves",
    "Ball Valves",
  )
  assert catalog.category_path[1] == (ROOT, "Abrasive & Finishing Products Sanding", "Rolls")
  assert catalog.category_path[4] == ()
  # Leaf ids enumerate the distinct paths in sorted segment order; -1 for none.
  assert catalog.category_id.tolist() == [2, 0, 1, 3, -1]
  assert catalog.category_names[catalog.category_id[3]].endswith("> Check Valves")
  # Train interactions: user 0 -> 0, 1, 2; user 1 -> 3, 4.
  np.testing.assert_array_equal(catalog.efficiency_score, [1, 1, 1, 1, 1])
  test = logs.split_rows("test")
  assert test.recent_clicks.tolist() == [[1, 2, 3], [3, 4, 0]]
  assert test.purchased.tolist() == [[4], [2]] and test.clicked.tolist() == [[4], [2]]
  assert test.query.tolist() == ["", amazon.pseudo_query(catalog.category_path[2])]
  assert logs.split_rows("train").recent_clicks.tolist() == [[-1, -1, 0], [-1, 0, 1], [-1, -1, 3]]
  assert logs.user_profile.shape == (7, 2) and not logs.user_profile.any()
  assert logs.request_id.tolist() == list(range(7))


def test_title_query_drops_category_words_and_numbers():
  path = (ROOT, "Hydraulics, Pneumatics & Plumbing", "Valves", "Ball Valves")
  title = "Acme Brass Ball Valve with Lever Handle, 3/4-Inch, Brass"
  # ball: a category word; valve: singular of 'valves'; with: stop word; 3, 4-inch: digits.
  assert amazon.title_query(title, path) == "acme brass lever handle"
  assert amazon.title_query(title, path, keep_numbers=True) == "acme brass lever handle 3 4-inch"
  assert amazon.title_query("AA Battery Pack", (ROOT, "Batteries")) == "aa pack"
  assert amazon.title_query("a b c d e f", (), max_words=4) == "b c d e"  # 'a' is a stop word
  assert amazon.title_query("Ball Valves", path) == ""


def test_infer_category_root():
  assert amazon.infer_category_root(body for _, body in FIXTURE_TEXT) == ROOT
  assert amazon.infer_category_root(["Gadget. . Zed. ", "Widget. . Acme. ", "Gizmo. . . "]) is None


def test_find_dataset_infers_the_only_one_or_needs_a_name(tmp_path):
  folder = tmp_path / "d"
  with pytest.raises(errors.UserError, match="no such folder"):
    amazon.find_dataset(str(folder))
  folder.mkdir()
  with pytest.raises(errors.UserError, match=r"no UniSRec dataset \(expected <name>.text"):
    amazon.find_dataset(str(folder))
  fabricate(folder, num_items=20, num_users=5)
  assert amazon.find_dataset(str(folder)) == amazon.UnisrecFiles("Office")
  write_fixture(folder)
  several = r"holds several datasets \(Office, Scientific\); name one \(prepare_data.amazon_dataset"
  with pytest.raises(errors.UserError, match=several):
    amazon.load_amazon(str(folder))
  assert amazon.find_dataset(str(folder), "Scientific").text == "Scientific.text"
  with pytest.raises(errors.UserError, match=r"no dataset 'Arts' .*here: Office, Scientific"):
    amazon.find_dataset(str(folder), "Arts")
  _, _, info = amazon.load_amazon(str(folder), "Scientific")
  assert (info.dataset, info.category_root, info.num_items) == ("Scientific", ROOT, 5)


def test_load_fabricated_second_dataset(tmp_path):
  data_dir = fabricate(tmp_path / "d", dataset="Office", root="Office Products")
  catalog, logs, info = amazon.load_amazon(data_dir)
  assert (info.dataset, info.category_root) == ("Office", "Office Products")
  assert (info.num_items, info.num_users, info.items_without_category) == (300, 200, 30)
  assert info.split_rows == {"train": 600, "valid": 200, "test": 200}
  assert info.num_category_paths == catalog.num_categories == 12
  assert all(p[0] == "Office Products" and len(p) >= 2 for p in catalog.category_path if p)
  assert catalog.title[0].startswith(catalog.brand[0])
  named, _, _ = amazon.load_amazon(data_dir, "Office", category_root="Office Products")
  assert named.category_path.tolist() == catalog.category_path.tolist()


def _words(text: str) -> set[str]:
  return set(re.findall(r"[0-9a-z]+(?:['\-][0-9a-z]+)*", text.lower()))


@pytest.mark.parametrize("fixture", ["scientific", "fabricated"])
def test_title_queries_never_name_the_category(tmp_path, fixture):
  data_dir = write_fixture(tmp_path / "d") if fixture == "scientific" else fabricate(tmp_path / "d")
  catalog, title_logs, _ = amazon.load_amazon(data_dir, query="title")
  _, category_logs, _ = amazon.load_amazon(data_dir)
  target = title_logs.purchased[:, 0]
  named = 0
  for item, title_query, category_query in zip(
    target, title_logs.query, category_logs.query, strict=True
  ):
    category_words = _words(" ".join(catalog.category_path[item]))
    assert not set(title_query.split()) & category_words, (title_query, category_words)
    named += bool(set(category_query.split()) & category_words)
  # The category queries do name the category, whenever the target has one.
  assert named == sum(bool(catalog.category_path[item]) for item in target)
  if fixture == "fabricated":  # brand and two random words survive (and the leaf word without one)
    lengths = [len(q.split()) for q in title_logs.query]
    assert lengths == [3 if catalog.category_path[item] else 4 for item in target]


@pytest.mark.parametrize(
  "mutate, message",
  [
    (
      dict(inter={**FIXTURE_INTER, "train": ["0\t0 1\tseven"]}),
      r"Scientific.train.inter: row 2: field 'item_id': .*'seven'",
    ),
    (
      dict(inter={**FIXTURE_INTER, "valid": ["0\t0 x\t1"]}),
      r"Scientific.valid.inter: row 2: field 'item_id_list': .*'x'",
    ),
    (
      dict(inter={**FIXTURE_INTER, "test": [(0, [0], 1), (1, [9], 2)]}),
      r"Scientific.test.inter: row 3: field 'item_id_list': item id 9 is not in the catalog",
    ),
    (
      dict(inter={**FIXTURE_INTER, "test": ["0\t0 1"]}),
      r"Scientific.test.inter: row 2: field 'item_id': missing",
    ),
    (
      dict(inter={**FIXTURE_INTER, "train": [(5, [0], 1)]}),
      r"Scientific.train.inter: row 2: field 'user_id': user 5",
    ),
    (
      dict(raw_text_line=b"B9\tBad \xfe title. . x. "),
      r"Scientific.text: row 7: field 'text': invalid UTF-8",
    ),
    (
      dict(raw_text_line=b"B9\tNew. . x. "),
      r"Scientific.text: row 7: field 'item_id': ASIN 'B9' is not listed",
    ),
    (
      dict(text=[*FIXTURE_TEXT[:4], ("B5", f" . {ROOT} Fasteners. x. ")]),
      r"Scientific.text: row 6: field 'text': empty title",
    ),
    (
      dict(text=FIXTURE_TEXT[:4]),
      r"Scientific.item2index: row 4: field 'key': ASIN 'B5' has no valid entry",
    ),
  ],
)
def test_bad_input_names_file_row_field(tmp_path, mutate, message):
  data_dir = write_fixture(tmp_path / "d", **mutate)
  with pytest.raises(errors.DataContractError, match=message):
    amazon.load_amazon(data_dir)


def test_skip_mode_drops_and_counts(tmp_path):
  inter = {**FIXTURE_INTER, "train": [(0, [0], 1), "0\t0 1\tx", (1, [3], 44), (1, [3], 4)]}
  text = [*FIXTURE_TEXT[:4], ("B5", f" . {ROOT} Fasteners. x. ")]  # B5 (id 3) loses its text
  data_dir = write_fixture(
    tmp_path / "d", text=text, inter=inter, raw_text_line=b"B9\tz \xfe. . x. "
  )
  catalog, logs, info = amazon.load_amazon(data_dir, on_error="skip")
  counts = info.skip_report.counts
  assert (
    counts["invalid UTF-8"] == 1 and counts["empty title"] == 1 and counts["item without text"] == 1
  )
  assert counts["non-integer id"] == 1 and counts["item id not in catalog"] == 1
  # Every request mentioning the dropped item 3 goes (train 1, valid 2, test 2).
  assert counts["item dropped from catalog"] == 5
  assert info.num_items == 4 and catalog.title.tolist()[3] == "Mystery Gadget"
  assert info.split_rows == {"train": 1, "valid": 0, "test": 0}
  assert logs.purchased.max() < 4


def test_tfds_fixture_build_and_read_back(tmp_path, monkeypatch):
  from gr_jax.data.tfds import amazon as amazon_tfds

  monkeypatch.delenv(amazon_tfds.MANUAL_DIR_ENV, raising=False)
  assert amazon_tfds.default_manual_dir().endswith(
    os.path.join("shared", "data", "amazon_scientific")
  )
  data_dir = write_fixture(tmp_path / "manual")
  # The manual dir comes from the environment variable (no argument given).
  monkeypatch.setenv(amazon_tfds.MANUAL_DIR_ENV, data_dir)
  catalog, logs = amazon_tfds.load_tfds_tables("amazon_scientific", data_dir=str(tmp_path / "tfds"))
  want_catalog, want_logs, _ = amazon.load_amazon(data_dir)
  assert catalog.title.tolist() == want_catalog.title.tolist()
  assert catalog.category_path.tolist() == want_catalog.category_path.tolist()
  np.testing.assert_array_equal(catalog.category_id, want_catalog.category_id)
  np.testing.assert_array_equal(catalog.efficiency_score, want_catalog.efficiency_score)
  assert catalog.category_names.tolist() == want_catalog.category_names[:4].tolist()
  for field in ("request_id", "user_id", "user_profile", "recent_clicks", "purchased", "split"):
    np.testing.assert_array_equal(getattr(logs, field), getattr(want_logs, field), err_msg=field)
  assert logs.query.tolist() == want_logs.query.tolist()


def test_tfds_builder_for_another_dataset(tmp_path):
  from gr_jax.data.tfds import amazon as amazon_tfds

  data_dir = fabricate(tmp_path / "manual", dataset="Office", num_items=30, num_users=8)
  builder = amazon_tfds.builder_for("Office")
  assert builder.name == "amazon_office" and amazon_tfds.builder_for("Office") is builder
  assert amazon_tfds.builder_for("Scientific") is amazon_tfds.AmazonScientific
  catalog, logs = amazon_tfds.load_tfds_tables(
    builder.name, data_dir=str(tmp_path / "tfds"), manual_dir=data_dir
  )
  want_catalog, want_logs, _ = amazon.load_amazon(data_dir)
  assert catalog.category_path.tolist() == want_catalog.category_path.tolist()
  np.testing.assert_array_equal(logs.purchased, want_logs.purchased)
  assert logs.query.tolist() == want_logs.query.tolist()


@pytest.mark.real_data
@real_data
def test_real_data_counts():
  catalog, logs, info = amazon.load_amazon(REAL_DIR)
  assert (info.num_items, info.num_users) == (4385, 8442)
  assert info.split_rows == {"train": 34101, "valid": 8442, "test": 8442}
  assert catalog.num_items == 4385 and logs.num_requests == 34101 + 2 * 8442
  assert info.num_category_paths == catalog.num_categories == 767
  assert info.items_without_category == 134 == int((catalog.category_id < 0).sum())
  assert all(p[0] == ROOT for p in catalog.category_path if p)
  assert info.skip_report.total == 0
  # Most-popular on test reproduces the README's computed baseline R@10 = 0.0309.
  test = logs.split_rows("test")
  rank = np.empty(catalog.num_items, np.int64)
  rank[np.argsort(-catalog.efficiency_score, kind="stable")] = np.arange(catalog.num_items)
  assert abs((rank[test.purchased[:, 0]] < 10).mean() - 0.0309) < 0.0005
