"""Table 4 job: SFT vs GRPO (K=0) vs EG-GRPO (K=2, K=4), mean and spread over seeds.

Reads the runs WORKDIR/rl/<tokenizer>/<variant>_s<seed>/ (written by train_rl: the
per-request values of the final policy and of its SFT start on the same test
requests), or those of every `seed_workdirs` directory when the seeds are seeds of the
whole pipeline (each run paired with its own directory's SFT generator), and writes
eval/table4.md (gr_jax/eval/rl_table.py: intervals, paired differences against SFT
and GRPO) and the runs' learning curves, eval/rl_curves.png.
"""

from __future__ import annotations

import glob
import os

import gin

from gr_jax import io_utils
from gr_jax import workdir as workdir_lib
from gr_jax.eval import curves, rl_table


@gin.configurable
def report_rl(workdir: str, tokenizer: str = "cq_sid", seed_workdirs: tuple[str, ...] = ()):
  """Table 4 over the RL runs of `tokenizer` (returns the markdown)."""
  run_dirs = sorted(
    os.path.dirname(path)
    for source in seed_workdirs or (workdir,)
    for path in glob.glob(os.path.join(workdir_lib.rl_dir(source, tokenizer, "*"), "metrics.json"))
  )
  variants, sft = rl_table.load_runs(run_dirs)
  text = rl_table.table4(variants, sft, title=f"Table 4 analogue ({tokenizer})")
  io_utils.write_text(os.path.join(workdir_lib.eval_dir(workdir), "table4.md"), text)
  curves.plot_rl_curves(
    {os.path.basename(d): os.path.join(d, "tb") for d in run_dirs},
    os.path.join(workdir_lib.eval_dir(workdir), "rl_curves.png"),
  )
  print(text)
  return text
