"""Tests for gr_jax/eval/seqrec_compare.py: paired seqrec comparisons on per-user values."""

import numpy as np
import pytest

from gr_jax.data import schema
from gr_jax.eval import seqrec_compare


def _write(folder, users, targets, ndcg):
  values = {"user": np.asarray(users), "target": np.asarray(targets), "ndcg@10": np.asarray(ndcg)}
  seqrec_compare.write(str(folder), values)
  return str(folder)


def test_a_clear_win_a_tie_and_users_aligned_by_id(tmp_path):
  rng = np.random.default_rng(0)
  users, targets = np.arange(600), rng.integers(0, 50, 600)
  base = rng.random(600)
  order = rng.permutation(600)  # the same users written in another order
  folders = {
    "base": _write(tmp_path / "base", users, targets, base),
    "better": _write(tmp_path / "better", users[order], targets[order], 1.2 * base[order]),
    "same": _write(tmp_path / "same", users[::-1], targets[::-1], base[::-1]),
  }
  compared = seqrec_compare.compare(folders, "base", resamples=300)
  better = compared["systems"]["better"]["ndcg@10"]["vs_baseline"]
  assert better["value"] == pytest.approx(0.2) and better["verdict"] == "win"
  same = compared["systems"]["same"]["ndcg@10"]["vs_baseline"]
  assert same["value"] == pytest.approx(0.0) and same["verdict"] == "tie"
  assert compared["systems"]["base"]["ndcg@10"]["vs_baseline"] is None
  assert compared["users"] == 600
  text = seqrec_compare.render(compared)
  assert "+20.0%" in text and "win" in text and "600 users" in text


def test_unpairable_systems_are_named(tmp_path):
  base = _write(tmp_path / "base", [1, 2, 3], [5, 6, 7], [1.0, 0.0, 0.5])
  other_targets = _write(tmp_path / "targets", [1, 2, 3], [5, 6, 8], [1.0, 0.0, 0.5])
  other_users = _write(tmp_path / "users", [1, 2, 4], [5, 6, 7], [1.0, 0.0, 0.5])
  twice = _write(tmp_path / "twice", [1, 1, 3], [5, 6, 7], [1.0, 0.0, 0.5])
  with pytest.raises(seqrec_compare.CompareError, match="targets: other test targets"):
    seqrec_compare.compare({"a": base, "b": other_targets}, "a")
  with pytest.raises(seqrec_compare.CompareError, match="users: other test users"):
    seqrec_compare.compare({"a": base, "b": other_users}, "a")
  with pytest.raises(seqrec_compare.CompareError, match="a user appears twice"):
    seqrec_compare.compare({"a": base, "b": twice}, "a")
  with pytest.raises(seqrec_compare.CompareError, match="nowhere: no per_user_test.npz"):
    seqrec_compare.compare({"a": base, "b": str(tmp_path / "nowhere")}, "a")
  with pytest.raises(seqrec_compare.CompareError, match="baseline 'c'"):
    seqrec_compare.compare({"a": base}, "c")


def test_per_user_values_follow_the_split_rows():
  index = schema.SPLITS.index
  split = np.array([index("train"), index("test"), index("valid"), index("test")], np.int8)
  logs = type("Logs", (), {"user_id": np.array([7, 8, 9, 10]), "split": split})()
  values = seqrec_compare.per_user_values(logs, "test", [3, 4], {"ndcg@10": np.array([1.0, 0.0])})
  np.testing.assert_array_equal(values["user"], [8, 10])
  with pytest.raises(ValueError, match="3 targets for 2 test rows"):
    seqrec_compare.per_user_values(logs, "test", [3, 4, 5], {})
