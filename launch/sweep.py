r"""Runs an ablation sweep (gin_configs/sweeps/*.toml); see gr_jax/sweep.py for the format.

    python launch/sweep.py --sweep=gin_configs/sweeps/tokenizers.toml \
        --sweep_dir=workdir/sweeps/tokenizers --inputs_dir=workdir/run --parallel=2

Re-running the same command skips finished trials and resumes the others from their
checkpoints. `--aggregate_only` rebuilds results.{json,md,png}; `--dry_run` prints
each trial's command. Exit status: 0 when no trial failed, 1 when one did, 2 for a
mistake in the sweep file or flags.
"""

from __future__ import annotations

import os
import shlex
import sys

# Runnable from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

from gr_jax import sweep  # noqa: E402

SWEEP = flags.DEFINE_string("sweep", None, "Sweep file (TOML).")
SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "Directory of the trials and results.")
PARALLEL = flags.DEFINE_integer("parallel", 1, "Trials running at once.")
INPUTS_DIR = flags.DEFINE_string(
  "inputs_dir", None, "Work directory holding the sweep's inputs (data, sid, sft, ...)."
)
ONLY = flags.DEFINE_list("only", [], "Run only these trials (names or base names).")
AGGREGATE_ONLY = flags.DEFINE_bool("aggregate_only", False, "Only rebuild the results.")
DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the trial commands and stop.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f"unexpected positional arguments: {' '.join(argv[1:])}")
  if not SWEEP.value or not SWEEP_DIR.value:
    _fail("flags --sweep and --sweep_dir are required")
  try:
    spec = sweep.load_spec(SWEEP.value)
    if DRY_RUN.value:
      for trial in spec.trials:
        state = "done" if sweep.is_done(SWEEP_DIR.value, trial) else "to run"
        workdir = os.path.join(SWEEP_DIR.value, trial.name)
        print(f"# {trial.name} ({state})")
        print(shlex.join(sweep.trial_command(trial, workdir)))
      return
    if AGGREGATE_ONLY.value:
      sweep.aggregate(spec, SWEEP_DIR.value)
      return
    results = sweep.run_sweep(
      spec,
      SWEEP_DIR.value,
      parallel=PARALLEL.value,
      inputs_dir=INPUTS_DIR.value,
      only=ONLY.value,
    )
  except sweep.SweepError as e:
    _fail(str(e))
  for result in results:
    print(f"{result.trial.name}: {result.status}")
  print(f"results: {os.path.join(SWEEP_DIR.value, sweep.RESULTS_MD)}")
  if any(result.status == "failed" for result in results):
    sys.exit(1)


def _fail(message: str) -> None:
  logging.flush()
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


if __name__ == "__main__":
  flags.FLAGS.set_default("logtostderr", True)
  app.run(main)
