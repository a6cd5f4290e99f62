r"""Entry point for every gr_jax job (t5x style): flags in, gin-configured job out.

    python -m gr_jax.main --gin_file=gin_configs/runs/example_regression.gin \
        --gin_bindings='TrainerConfig.num_steps = 200' --workdir=/tmp/run
    python -m gr_jax.main --gin_file=runs/example_regression.gin \
        --gin.TrainerConfig.num_steps=200 --workdir=/tmp/run   # the same binding

The gin files choose the job (`run.job = @train_example`) and its knobs. This file
only parses flags and gin and calls the job; the work lives in the library.
A user mistake (missing file, unknown or malformed binding, missing required
value, bad data, a binding the job overrides) ends with one line on stderr naming
it, and exit status 2.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags, logging  # noqa: E402

from gr_jax import errors, gin_utils  # noqa: E402

FLAGS = flags.DEFINE_multi_string("gin_file", [], "Gin config files, applied in order.")
BINDINGS = flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, applied after files.")
WORKDIR = flags.DEFINE_string("workdir", None, "Work directory of the run (required).")
GIN_SEARCH_PATHS = flags.DEFINE_multi_string(
  "gin_search_paths", [], "Extra directories to look up gin files and includes in."
)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f"unexpected positional arguments: {' '.join(argv[1:])}")
  if not WORKDIR.value:
    _fail("flag --workdir is required")
  # Any implicit host<->device copy is a bug (a hidden slow path): fail loudly.
  import jax

  jax.config.update("jax_transfer_guard", "disallow")
  # Multi-host runs join the job before anything touches a backend.
  from gr_jax import distributed

  try:
    distributed.maybe_initialize()
  except errors.DistributedConfigError as e:
    _fail(str(e))
  try:
    gin_utils.parse(FLAGS.value, BINDINGS.value, GIN_SEARCH_PATHS.value)
  except errors.GinConfigError as e:
    _fail(str(e))
  os.makedirs(WORKDIR.value, exist_ok=True)
  gin_utils.write_operative_config(WORKDIR.value, before_run=True)
  try:
    gin_utils.run_job(WORKDIR.value)
  except errors.UserError as e:
    _fail(str(e))
  gin_utils.write_operative_config(WORKDIR.value)


def _fail(message: str) -> None:
  logging.flush()
  # gin appends "In call to configurable ..." lines to errors raised inside jobs.
  lines = [ln for ln in message.splitlines() if not ln.strip().startswith("In call to ")]
  print(f"error: {' '.join(ln.strip() for ln in lines)}", file=sys.stderr)
  sys.exit(2)


class _QuietLibraries:
  """Drops INFO records of chatty libraries (orbax logs every save step at INFO)."""

  def filter(self, record) -> bool:
    return record.levelno > 20 or "/orbax/" not in record.pathname


def rewrite_gin_args(argv: list[str]) -> list[str]:
  """`--gin.NAME=VALUE` (t5x style) -> `--gin_bindings=NAME = VALUE`, in place.

  VALUE is a gin literal: strings keep their quotes (`--gin.train_sft.model="'tiny'"`).
  """
  out = []
  for arg in argv:
    if arg.startswith("--gin."):
      name, equals, value = arg[len("--gin.") :].partition("=")
      if not equals or not name:
        _fail(f"flag {arg}: expected --gin.NAME=VALUE, e.g. --gin.TrainerConfig.num_steps=100")
      arg = f"--gin_bindings={name} = {value}"
    out.append(arg)
  return out


def console_main() -> None:
  flags.FLAGS.set_default("logtostderr", True)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  app.run(main, argv=rewrite_gin_args(sys.argv))


if __name__ == "__main__":
  console_main()
