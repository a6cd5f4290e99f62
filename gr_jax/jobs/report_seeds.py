"""Seeds job: Tables 1-3 over several seeds of the whole pipeline, evaluated on the same requests.

    python -m gr_jax.main --gin_file=runs/report_seeds.gin --workdir=workdir/paper_tables/default \
      --gin_bindings="report_seeds.seed_workdirs=('.../seed0', '.../seed1', '.../seed2')"

Reads every seed directory's eval/<split>/ (metrics.json, per_request.npz) and writes
WORKDIR/eval_seeds/<split>/metrics.json and results.md (gr_jax/eval/seeds.py).
"""

from __future__ import annotations

import os

import gin

from gr_jax import io_utils
from gr_jax.eval import seeds


@gin.configurable
def report_seeds(
  workdir: str,
  seed_workdirs: tuple[str, ...] = gin.REQUIRED,
  split: str = "test",
  baseline: str | None = None,
):
  """Combines the seeds' evaluations; returns the combined results dict.

  `baseline`: the method gains are paired against (default: the evaluations' own); any
  other writes to eval_seeds/<split>_vs_<baseline>/.
  """
  combined = seeds.combine(seed_workdirs, split, baseline=baseline)
  text = seeds.render(combined)
  folder = split if baseline is None else f"{split}_vs_{baseline}"
  out_dir = os.path.join(workdir, "eval_seeds", folder)
  io_utils.write_json(os.path.join(out_dir, "metrics.json"), combined)
  io_utils.write_text(os.path.join(out_dir, "results.md"), text)
  print(text)
  return combined
