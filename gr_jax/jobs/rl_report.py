"""Table 4 job: SFT vs GRPO (K=0) vs EG-GRPO (K=2, K=4), mean and spread over seeds.

Reads WORKDIR/rl/<tokenizer>/<run>/metrics.json (written by train_rl; run names
carry the variant and seed, e.g. 'eg_grpo_k2_s1'; each also scores its SFT starting
point, the SFT row) and writes eval/table4.md and the runs' learning curves,
eval/rl_curves.png.
"""

from __future__ import annotations

import glob
import os
import re

import gin
import numpy as np

from gr_jax import io_utils
from gr_jax import workdir as workdir_lib
from gr_jax.eval import curves, report

COLUMNS = (("clk", 1), ("clk", 10), ("exp", 1), ("exp", 10), ("onclk", 10))


def _row(values: list[dict]) -> dict:
  row = {}
  for metric, beam in COLUMNS:
    found = [v.get(str(beam), v.get(beam)) for v in values]
    if any(entry is None or metric not in entry for entry in found):
      row[f"{metric}@{beam}"] = "n/a"  # not evaluated (that beam, or online on real data)
      continue
    xs = np.array([entry[metric] for entry in found])
    spread = f" ± {xs.std(ddof=1):.4f}" if len(xs) > 1 else ""
    row[f"{metric}@{beam}"] = f"{xs.mean():.4f}{spread}"
  row["seeds"] = len(values)
  return row


@gin.configurable
def report_rl(workdir: str, tokenizer: str = "cq_sid"):
  """Aggregates the RL runs of `tokenizer` into Table 4 (returns the markdown)."""
  # The SFT row is the RL runs' starting point scored by the RL job's own evaluation,
  # so that every column (online ones included) is measured the same way.
  rows, sft = [], None
  runs: dict[str, list[dict]] = {}
  run_dirs = {}
  for path in sorted(
    glob.glob(os.path.join(workdir_lib.rl_dir(workdir, tokenizer, "*"), "metrics.json"))
  ):
    name = os.path.basename(os.path.dirname(path))
    variant = re.sub(r"_s\d+$", "", name)  # seeds of one variant pool together
    result = io_utils.read_json(path)
    runs.setdefault(variant, []).append(result["eval"])
    sft = sft or result.get("eval_sft")
    run_dirs[name] = os.path.join(os.path.dirname(path), "tb")
  if sft is not None:
    rows.append({"method": "SFT", **_row([sft])})
  for variant, values in runs.items():
    rows.append({"method": variant, **_row(values)})
  columns = ["method"] + [f"{m}@{b}" for m, b in COLUMNS] + ["seeds"]
  text = report.markdown_table(rows, columns, title=f"Table 4 analogue ({tokenizer})")
  io_utils.write_text(os.path.join(workdir_lib.eval_dir(workdir), "table4.md"), text)
  curves.plot_rl_curves(run_dirs, os.path.join(workdir_lib.eval_dir(workdir), "rl_curves.png"))
  print(text)
  return text
