"""Compare-seqrec job: sequential-recommendation systems paired on the same test users.

    python -m gr_jax.main --gin_file=runs/compare_seqrec.gin --workdir=workdir/amazon \
      --gin_bindings="compare_seqrec.systems={'SASRec': 'workdir/amazon/eval/sasrec', \
        'GR + CQ-SID': 'workdir/amazon/eval/seq_sft/cq_sid'}" \
      --gin_bindings="compare_seqrec.baseline='SASRec'"

Each folder holds a per_user_test.npz (written by train_sasrec, train_seq_sft and
evaluate_seqrec). Writes WORKDIR/eval/seqrec_compare/metrics.json and results.md
(gr_jax/eval/seqrec_compare.py).
"""

from __future__ import annotations

import os

import gin

from gr_jax import io_utils
from gr_jax import workdir as workdir_lib
from gr_jax.eval import seqrec_compare


@gin.configurable
def compare_seqrec(workdir: str, systems: dict = gin.REQUIRED, baseline: str = gin.REQUIRED):
  """Pairs every system with `baseline`; returns the comparison dict.

  Args:
    workdir: where the comparison is written.
    systems: {name: eval folder with per_user_test.npz}; relative paths are under workdir.
    baseline: the name the others are compared with.
  """
  folders = {name: os.path.join(workdir, folder) for name, folder in systems.items()}
  compared = seqrec_compare.compare(folders, baseline)
  text = seqrec_compare.render(compared)
  out_dir = os.path.join(workdir_lib.eval_dir(workdir), "seqrec_compare")
  io_utils.write_json(os.path.join(out_dir, "metrics.json"), compared)
  io_utils.write_text(os.path.join(out_dir, "results.md"), text)
  print(text)
  return compared
