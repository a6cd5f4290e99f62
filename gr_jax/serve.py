r"""Serves a trained generator as a retrieval channel over HTTP/JSON.

    python -m gr_jax.serve --workdir=/tmp/run --port=8080
    python -m gr_jax.serve --workdir=/tmp/run --export_to=/tmp/run/export   # then exits
    python -m gr_jax.serve --workdir=/tmp/run --exported=/tmp/run/export --port=8080
    curl -s localhost:8080/retrieve -d '{"query": "red running shoes", "beam_size": 20}'

Endpoints, request fields and knobs: README.md, section "Serving", and
gr_jax/serving/server.py. A missing work directory or stage ends with one line on stderr
and exit status 2.
"""

from __future__ import annotations

import functools
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags, logging  # noqa: E402

WORKDIR = flags.DEFINE_string("workdir", None, "Work directory of a trained run (required).")
PORT = flags.DEFINE_integer("port", 8080, "Port to listen on (0: any free port).")
HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.")
TOKENIZER = flags.DEFINE_string("tokenizer", "cq_sid", "Tokenizer whose generator is served.")
STAGE = flags.DEFINE_string("stage", "uq2sid", "SFT stage served: q2sid, uq2sid or seqrec.")
BEAM_SIZES = flags.DEFINE_list("beam_sizes", ["20", "50", "100"], "Compiled beam sizes.")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Compiled batch shape (requests per call).")
MAX_WAIT_MS = flags.DEFINE_float("max_wait_ms", 5.0, "Longest a request waits for a batch.")
EXPORT_TO = flags.DEFINE_string(
  "export_to", None, "Write the exported decode of the stage to this directory, then exit."
)
EXPORTED = flags.DEFINE_string(
  "exported", None, "Serve an exported decode (gr_jax/serving/export.py) from this directory."
)


def main(argv: list[str]) -> None:
  from gr_jax import errors  # noqa: PLC0415  (after flags: keeps --help fast)
  from gr_jax.serving import export, server, service  # noqa: PLC0415

  if len(argv) > 1 or not WORKDIR.value:
    _fail("usage: python -m gr_jax.serve --workdir=DIR [--port=N]")
  try:
    beams = tuple(int(b) for b in BEAM_SIZES.value)
  except ValueError:
    _fail(f"--beam_sizes: expected integers, got {','.join(BEAM_SIZES.value)}")
  if EXPORT_TO.value:
    try:
      export.export_stage(
        WORKDIR.value,
        TOKENIZER.value,
        STAGE.value,
        EXPORT_TO.value,
        beam_sizes=beams,
        batch_size=BATCH_SIZE.value,
      )
    except (FileNotFoundError, errors.UserError) as e:
      _fail(str(e))
    logging.info("exported %s/%s to %s", TOKENIZER.value, STAGE.value, EXPORT_TO.value)
    return
  if EXPORTED.value:
    loader = functools.partial(export.load_exported_service, WORKDIR.value, EXPORTED.value)
  else:
    loader = functools.partial(
      service.load_service,
      WORKDIR.value,
      TOKENIZER.value,
      STAGE.value,
      beam_sizes=beams,
      batch_size=BATCH_SIZE.value,
    )
  state = server.ServingState(loader, max_wait_ms=MAX_WAIT_MS.value)
  try:
    state.load()  # fail fast on a wrong work directory, before taking the port
  except (FileNotFoundError, errors.UserError) as e:
    _fail(str(e))
  http_server = server.RetrievalServer((HOST.value, PORT.value), state)
  logging.info("serving on http://%s:%d", HOST.value, http_server.port)
  try:
    http_server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    http_server.server_close()
    state.stop()


def _fail(message: str) -> None:
  logging.flush()
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


class _QuietLibraries:
  """Drops INFO records of orbax (a restore logs a dozen lines); one line per request stays."""

  def filter(self, record) -> bool:
    return record.levelno > logging.INFO or "/orbax/" not in record.pathname


if __name__ == "__main__":
  flags.FLAGS.set_default("logtostderr", True)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  app.run(main)
