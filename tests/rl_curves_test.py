"""Tests for gr_jax/eval/curves.py: the RL learning-curve figure."""

import json

from gr_jax.eval import curves
from gr_jax.train import metric_writers


def test_curves_plot_every_panel_from_the_history(tmp_path):
  logdir = tmp_path / "tb"
  logdir.mkdir()
  rows = [
    {"step": s, "prefix": "train", "kl": 0.01 * s, "reward_mean_sampled": 0.2} for s in (1, 2)
  ]
  rows.append({"step": 2, "prefix": "eval", "clk@10": 0.3, "onclk@1": 1.4, "onclk@10": 2.2})
  (logdir / metric_writers.HISTORY_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
  path = tmp_path / "curves.png"
  assert curves.plot_rl_curves({"run": str(logdir)}, str(path))
  assert path.stat().st_size > 10_000
  assert ("eval", "onclk@1", "valid online clicks@1 (simulated users)") in curves.PANELS
  assert not curves.plot_rl_curves({"empty": str(tmp_path / "none")}, str(tmp_path / "no.png"))
  assert not (tmp_path / "no.png").exists()
