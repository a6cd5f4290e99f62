"""End to end on the tiny world: data -> tokenizers -> SFT -> evaluation -> EG-GRPO -> Table 4.

Runs every job in-process through the same gin path as `python -m gr_jax.main`,
with sizes small enough for CI, and checks the artefacts each stage promises.
"""

import json
import os

import numpy as np
import pytest

from gr_jax import gin_utils

TINY = [
  "prepare_data.preset = 'tiny'",
  "CODEBOOK_SIZES = (64, 8, 8)",
  "TrainerConfig.progress_bar = False",
  "TrainerConfig.log_every = 10",
  "train_sft.model = 'tiny'",
  "train_sft.prompt_len = 16",
  "train_sft.batch_size = 32",
  "train_sft.stage_steps = {'i2sid': 20, 'q2sid': 20, 'uq2sid': 20}",
  "text_vocabulary.vocab_size = 300",
  "evaluate.max_requests = 40",
  "evaluate.beam_sizes = (1, 10)",
  "evaluate.curve_beam_sizes = (1, 2, 10)",
  "evaluate.truncation_items = 20",
  "train_rl.eval_requests = 40",
  "train_rl.batch_size = 8",
]


def _job(workdir, files, bindings=()):
  return gin_utils.run_in_process(workdir, files, [*TINY, *bindings])


@pytest.mark.slow
def test_pipeline_end_to_end(tmp_path):
  _job(tmp_path, ["runs/data.gin"])
  assert os.path.exists(tmp_path / "data" / "catalog.npz")
  for tok in ("cq_sid", "rqvae"):
    diag = _job(
      tmp_path,
      ["runs/tokenizer.gin", f"sid/{tok}.gin"],
      [f"train_tokenizer.name = '{tok}'", "TrainerConfig.num_steps = 30"],
    )
    assert diag["num_items"] == 1000
    item_sid = np.load(tmp_path / "sid" / tok / "item_sid.npy")
    assert item_sid.shape == (1000, 4)
  diag = json.loads((tmp_path / "sid" / "cq_sid" / "diagnostics.json").read_text())
  assert diag["share_level1_equals_category"] == 1.0
  for tok in ("cq_sid", "rqvae"):
    metrics = _job(tmp_path, ["runs/sft.gin"], [f"train_sft.tokenizer = '{tok}'"])
    assert set(metrics) == {"i2sid", "q2sid", "uq2sid"}
    assert all(np.isfinite(m["loss"]) for m in metrics.values())
  truncation = ["evaluate.truncation_beam_sizes = (10, 30)"]
  valid = _job(tmp_path, ["runs/evaluate.gin"], ["evaluate.split = 'valid'", *truncation])
  assert valid["split"] == "valid" and "choices" in valid
  results = _job(tmp_path, ["runs/evaluate.gin"], truncation)
  assert results["split"] == "test" and "selected_on_valid" in results
  cq = results["tokenizers"]["cq_sid"]["stages"]
  for kind in ("semantic", "personalized"):
    curve = cq[kind]
    # Constrained decoding: every returned beam is a real SID; hitrate grows with beams.
    assert curve[10]["valid_share"] == 1.0
    assert 0.0 <= curve[1]["hitrate"] <= curve[10]["hitrate"] <= 1.0
    low, high = curve[10]["ci"]["hitrate"]
    assert low <= curve[10]["hitrate"] <= high
    # Served to the world's simulated users: expected clicks per request.
    assert 0.0 < curve[10]["onclk"] <= 10.0 and curve[10]["onbuy"] <= curve[10]["onclk"]
  # The top-K cut binds at beam 30 (20 items kept of more reached); valid scores the whole
  # Table 2 grid, test only the table beams and the ones chosen there.
  assert valid["tokenizers"]["cq_sid"]["stages"]["semantic"][30]["share_over_truncation"] > 0.5
  text = (tmp_path / "eval" / "test" / "results.md").read_text()
  assert "Table 1 analogue" in text and "Table 3 analogue" in text and "Table 2 analogue" in text
  assert "paired relative difference against rqvae" in text
  assert "Beams chosen on valid, read on test" in text
  assert "simulated online expected clicks per request" in text
  assert os.path.exists(tmp_path / "eval" / "test" / "hitrate_vs_beam.png")
  per_request = np.load(tmp_path / "eval" / "test" / "per_request.npz")
  assert per_request["cq_sid/semantic/clk@10"].shape == (results["requests"],)
  for name, extra in (("grpo_k0_s0", ["rl/grpo_k0.gin"]), ("eg_grpo_k2_s0", [])):
    metrics = _job(
      tmp_path,
      ["runs/eg_grpo.gin", *extra],
      [f"train_rl.name = '{name}'", "TrainerConfig.num_steps = 4"],
    )
    assert np.isfinite(metrics["train"]["loss"])
    assert 0.0 <= metrics["eval"][1]["clk"] <= 1.0
  k2 = json.loads((tmp_path / "rl" / "cq_sid" / "eg_grpo_k2_s0" / "metrics.json").read_text())
  assert k2["num_experts"] == 2 and k2["train"]["expert_fill"] > 0
  table = _job(tmp_path, ["runs/rl_report.gin"])
  assert "SFT" in table and "grpo_k0" in table and "eg_grpo_k2" in table
  assert "n/a" not in table
