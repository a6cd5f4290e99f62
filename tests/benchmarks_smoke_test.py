"""Smoke tests of benchmarks/: every benchmark runs in --quick mode and writes its records.

No timing is asserted; the checks are that each JSON / markdown record is written with the
expected keys, and the correctness side-results the benchmarks compute (host vs device trie
masks, host vs device decode) hold.
"""

import importlib
import json
import os

import numpy as np
import pytest

from benchmarks import common
from benchmarks.host_trie import build_host_trie, host_mask
from gr_jax.decoding import trie as trie_lib

RECORD_KEYS = {
  "benchmark",
  "command",
  "time_utc",
  "machine",
  "load_average_before",
  "load_average_after",
  "settings",
  "summary",
  "rows",
  "notes",
}

SUMMARY_KEYS = {
  "constrained_decode": {"max_ratio", "ratio_at_largest_beam", "target_ratio"},
  "host_trie": {
    "constraint_speedup_in_step",
    "constraint_speedup_per_call",
    "end_to_end_speedup",
    "same_sids_end_to_end",
    "target_speedup",
  },
  "catalog_scaling": {"largest_over_smallest", "target_ratio"},
  "index_build": {"build_s", "peak_rss_gib", "build_only_rss_gib", "target_s", "target_gib"},
  "train_throughput": {"tokens_per_s", "mfu_model_flops", "matmul_peak_gflops", "gpu_mfu"},
  "tokenizer_throughput": {"train_items_per_s", "assign_items_per_s", "assign_21m_extrapolated_s"},
  "serving": {"best_qps", "batch1_p50_ms", "paper"},
  "serving_load": {"server_qps", "server_p99_ms", "p50_over_direct", "paper"},
  "decode_breakdown": {"sum_of_parts_ms", "constrained_decode_ms", "trie_cost_in_search_ms"},
  "sft_from_hf": {"convert_s", "convert_rss_growth_mib", "step_ms", "tokens_per_s", "params"},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SUMMARY_KEYS))
def test_quick_run_writes_records(name, tmp_path):
  module = importlib.import_module(f"benchmarks.{name}")
  module.main(["--quick", "--repeats", "1", "--out-dir", str(tmp_path)])
  with open(os.path.join(tmp_path, f"{name}.json")) as f:
    record = json.load(f)
  assert set(record) >= RECORD_KEYS
  assert record["benchmark"] == name
  assert SUMMARY_KEYS[name] <= set(record["summary"])
  assert record["rows"], "no rows measured"
  table_columns = [c for c in module.COLUMNS if c in record["rows"][0]]
  assert table_columns, "the first row has none of the table's columns"
  with open(os.path.join(tmp_path, f"{name}.md")) as f:
    markdown = f.read()
  assert "| " + " | ".join(module.COLUMNS) + " |" in markdown
  if name == "host_trie":
    assert all(row["agrees"] for row in record["rows"] if "agrees" in row)
    assert record["summary"]["same_sids_end_to_end"]


def test_host_trie_masks_match_the_device_trie():
  level_sizes = (6, 5, 4)
  sids = np.array([[0, 1, 2], [0, 1, 3], [0, 4, 0], [5, 0, 1], [5, 0, 1]])
  table = build_host_trie(sids, level_sizes)
  assert sorted(table) == [(), (0,), (0, 1), (0, 4), (5,), (5, 0)]
  trie = trie_lib.build_trie_index(sids, level_sizes)
  prefixes = np.array([[0, 1], [0, 4], [5, 0], [1, 1]])  # the last is not a valid prefix
  nodes = trie_lib.sid_leaf_ids(
    trie_lib.build_trie_index(sids[:, :2], level_sizes[:2]), prefixes
  )  # depth-2 ids = rows of the unique 2-prefixes, -1 when absent
  expected = np.asarray(trie_lib.valid_next_mask(trie, 2, nodes))
  np.testing.assert_array_equal(host_mask(table, prefixes, level_sizes[2]), expected)


def test_time_interleaved_and_table():
  calls = []
  timed = common.time_interleaved(
    {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=1, repeats=2
  )
  assert calls == ["a", "b", "a", "b", "a", "b"]  # round-robin, warm-up round first
  assert set(timed) == {"a", "b"} and len(timed["a"]["times_s"]) == 2
  table = common.markdown_table([{"x": 1.23456, "y": "s"}, {"x": 2}], ["x", "y"])
  assert table.splitlines() == ["| x | y |", "|---|---|", "| 1.235 | s |", "| 2 |  |"]
  with pytest.raises(ValueError, match="repeats"):
    common.time_call(lambda: None, repeats=0)


@pytest.mark.slow
def test_train_throughput_bfloat16_quick_records_dtype_and_spec_peak(tmp_path):
  from benchmarks import train_throughput

  args = ["--quick", "--repeats", "1", "--dtype", "bfloat16", "--out-dir", str(tmp_path)]
  train_throughput.main(args)
  with open(os.path.join(tmp_path, "train_throughput.json")) as f:
    record = json.load(f)
  assert set(record) >= RECORD_KEYS
  summary, settings = record["summary"], record["settings"]
  assert SUMMARY_KEYS["train_throughput"] <= set(summary)
  assert {"matmul_peak_dtype", "spec_peak_tflops", "spec_peak_note", "device_kind"} <= set(summary)
  assert summary["matmul_peak_dtype"] == settings["dtype"] == "bfloat16"
  model, executed, peak = record["rows"][:3]
  assert model["dtype"] == executed["dtype"] == peak["dtype"] == "bfloat16"
  assert peak["measure"].startswith("peak: bfloat16 dot")
  assert model["gflops"] > 0 and np.isfinite(summary["loss_after_steps"])
  if record["machine"]["backend"] == "cpu":  # no spec peak on a CPU: gpu_mfu keeps its text
    assert summary["gpu_mfu"] == train_throughput.CPU_GPU_MFU
    assert summary["spec_peak_tflops"] is None and "fraction_of_spec" not in model
  with open(os.path.join(tmp_path, "train_throughput.md")) as f:
    assert "| " + " | ".join(train_throughput.COLUMNS) + " |" in f.read()


def test_train_throughput_spec_peak_table():
  from benchmarks.train_throughput import spec_peak

  h100 = spec_peak("gpu", "NVIDIA H100 80GB HBM3", "bfloat16")
  assert (h100["tflops"], h100["precision"]) == (989.4, "bf16")
  assert spec_peak("gpu", "NVIDIA H200", "bfloat16")["tflops"] == 989.4
  assert spec_peak("gpu", "NVIDIA A100-SXM4-80GB", "bfloat16")["tflops"] == 312.0
  assert spec_peak("gpu", "NVIDIA H100 PCIe", "bfloat16")["tflops"] == 756.5
  tf32 = spec_peak("gpu", "NVIDIA H100 80GB HBM3", "float32")
  assert (tf32["tflops"], tf32["precision"]) == (494.7, "tf32") and "TF32" in tf32["note"]
  unknown = spec_peak("gpu", "Some Future GPU", "bfloat16")
  assert unknown["tflops"] is None and "unknown" in unknown["note"]
  assert spec_peak("cpu", "cpu", "float32")["tflops"] is None


def test_random_paper_scale_sids_shape():
  rng = np.random.default_rng(1)
  sids = common.random_paper_scale_sids(5000, rng, level_sizes=(64, 32, 32, 100), num_categories=50)
  assert sids.shape == (5000, 4)
  assert len(np.unique(sids, axis=0)) == 5000
  assert sids[:, 0].max() < 50 and sids[:, 3].max() < 100
  # Large clusters are split into groups, so some clusters carry several SIDs.
  clusters = {tuple(s[:3]) for s in sids.tolist()}
  assert len(clusters) < 5000 and (sids[:, 3] > 0).any()
