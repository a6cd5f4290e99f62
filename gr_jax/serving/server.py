"""The retrieval channel over HTTP/JSON (standard library only).

Endpoints:

    POST /retrieve   one request (gr_jax/serving/request.py) -> its ranked items
    GET  /healthz    200 while the process serves HTTP
    GET  /readyz     200 once a model is loaded and every beam size compiled, else 503
    POST /reload     loads the work directory again (new checkpoint, newly assigned items)
                     in the background, compiles it, then swaps it in; 202, or 409 while a
                     reload runs

Concurrent /retrieve requests go through one `DynamicBatcher` into the compiled batch shape.
A reload swaps one reference: a batch reads it when it starts, so batches already running
finish on the old model and no request waits for the load. A malformed request gets a 4xx
with a message naming the field; an error inside a batch gets a 500; the server keeps serving
either way. Every request writes one log line.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Callable

from absl import logging

from gr_jax.serving import batcher as batcher_lib
from gr_jax.serving import request as request_lib

MAX_BODY_BYTES = 1 << 20
DRAIN_LIMIT_BYTES = 16 << 20
RESULT_TIMEOUT_S = 60.0


class ServingState:
  """The service in use, how to load a new one, and the batcher in front of it.

  Args:
    loader: () -> a loaded (not yet compiled) service: `service.load_service` bound to a
      work directory, or an exported service.
    max_wait_ms: the batcher's wait for company.
  """

  def __init__(self, loader: Callable[[], object], max_wait_ms: float = 5.0):
    self.loader = loader
    self.max_wait_ms = max_wait_ms
    self.service = None
    self.batcher: batcher_lib.DynamicBatcher | None = None
    self.loads = 0
    self.last_reload_error: str | None = None
    self._reload_lock = threading.Lock()

  @property
  def ready(self) -> bool:
    return self.service is not None

  def _process(self, requests):
    # Read once per batch: a swap between batches never mixes two models in one batch.
    return self.service.retrieve(requests)

  def load(self) -> None:
    """Loads, compiles and swaps in a service (blocking); the first call starts the batcher."""
    start = time.perf_counter()
    service = self.loader()
    compile_s = service.warmup()
    old = self.service
    if self.batcher is None:
      self.batcher = batcher_lib.DynamicBatcher(self._process, service.batch_size, self.max_wait_ms)
    elif service.batch_size != old.batch_size:
      raise ValueError(
        f"reload: batch size {service.batch_size} differs from the serving {old.batch_size}"
      )
    self.service = service
    self.loads += 1
    logging.info(
      "loaded %s in %.1f s (compile %.1f s)",
      service.version,
      time.perf_counter() - start,
      compile_s,
    )

  def start_reload(self) -> bool:
    """Starts a background reload; False when one is already running."""
    if not self._reload_lock.acquire(blocking=False):
      return False

    def run():
      try:
        self.load()
        self.last_reload_error = None
      except Exception as e:  # noqa: BLE001  (a failed reload keeps the old model serving)
        self.last_reload_error = f"{type(e).__name__}: {e}"
        logging.exception("reload failed; still serving the old model")
      finally:
        self._reload_lock.release()

    threading.Thread(target=run, name="reload", daemon=True).start()
    return True

  @property
  def reloading(self) -> bool:
    return self._reload_lock.locked()

  def stop(self) -> None:
    if self.batcher is not None:
      self.batcher.stop()


class _HttpError(Exception):
  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


class RetrievalHandler(http.server.BaseHTTPRequestHandler):
  """HTTP handler; `server.state` is the ServingState."""

  protocol_version = "HTTP/1.1"

  def log_message(self, format, *args):  # noqa: A002  (one log line per request instead)
    del format, args

  def _send(self, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  def _drain(self) -> None:
    """Reads (and ignores) a body, so that the connection stays usable."""
    length = self.headers.get("Content-Length", "0")
    if length.isdigit() and 0 < int(length) <= MAX_BODY_BYTES:
      self.rfile.read(int(length))

  def _body(self):
    length = self.headers.get("Content-Length")
    if length is None:
      raise _HttpError(411, "Content-Length required")
    try:
      size = int(length)
    except ValueError:
      raise _HttpError(400, f"Content-Length: not a number: {length!r}") from None
    if size < 0 or size > MAX_BODY_BYTES:
      # Read a moderately oversized body first: a client still sending when the socket
      # closes sees a reset instead of the 413.
      if 0 < size <= DRAIN_LIMIT_BYTES:
        self.rfile.read(size)
      self.close_connection = True
      raise _HttpError(413, f"body: {size} bytes, at most {MAX_BODY_BYTES}")
    raw = self.rfile.read(size)
    try:
      return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise _HttpError(400, f"body: not JSON: {e}") from None

  def _handle(self, method: str) -> tuple[int, dict, str]:
    state: ServingState = self.server.state
    path = self.path.split("?", 1)[0]
    routes = {"/healthz": "GET", "/readyz": "GET", "/retrieve": "POST", "/reload": "POST"}
    if path not in routes:
      raise _HttpError(404, f"{path}: no such endpoint ({', '.join(routes)})")
    if routes[path] != method:
      raise _HttpError(405, f"{path}: use {routes[path]}")
    if path == "/healthz":
      return 200, {"status": "ok"}, ""
    if path == "/readyz":
      service = state.service
      if service is None:
        return 503, {"ready": False, "reloading": state.reloading}, ""
      return (
        200,
        {
          "ready": True,
          "version": service.version,
          "beam_sizes": list(service.beam_sizes),
          "batch_size": service.batch_size,
          "reloading": state.reloading,
          "loads": state.loads,
          "last_reload_error": state.last_reload_error,
        },
        "",
      )
    if path == "/reload":
      self._drain()
      if not state.start_reload():
        raise _HttpError(409, "reload: a reload is already running")
      return 202, {"reloading": True}, ""
    service = state.service
    if service is None:
      raise _HttpError(503, "not ready: the model is loading")
    try:
      parsed = service.parse(self._body())
    except request_lib.RequestError as e:
      raise _HttpError(400, str(e)) from None
    future = state.batcher.submit(parsed)
    try:
      result = future.result(timeout=RESULT_TIMEOUT_S)
    except TimeoutError:
      raise _HttpError(504, f"no result within {RESULT_TIMEOUT_S:.0f} s") from None
    except request_lib.RequestError as e:
      raise _HttpError(400, str(e)) from None
    payload = result.to_json()
    payload["version"] = service.version
    summary = f"beam={parsed.beam_size} items={len(result.items)}"
    return 200, payload, summary

  def _serve(self, method: str) -> None:
    start = time.perf_counter()
    summary = ""
    try:
      status, payload, summary = self._handle(method)
    except _HttpError as e:
      status, payload, summary = e.status, {"error": str(e)}, str(e)
    except Exception as e:  # noqa: BLE001  (a bug answers 500; the server keeps serving)
      logging.exception("%s %s failed", method, self.path)
      status, payload, summary = 500, {"error": f"{type(e).__name__}: {e}"}, "internal error"
    payload.setdefault("latency_ms", round(1e3 * (time.perf_counter() - start), 3))
    with contextlib.suppress(OSError):  # the client went away
      self._send(status, payload)
    logging.info(
      "%s %s %d %.1fms %s",
      method,
      self.path,
      status,
      1e3 * (time.perf_counter() - start),
      summary,
    )

  def do_GET(self):  # noqa: N802  (http.server's naming)
    self._serve("GET")

  def do_POST(self):  # noqa: N802
    self._serve("POST")


class RetrievalServer(http.server.ThreadingHTTPServer):
  """A threading HTTP server that carries the ServingState."""

  daemon_threads = True
  allow_reuse_address = True

  def __init__(self, address: tuple[str, int], state: ServingState):
    super().__init__(address, RetrievalHandler)
    self.state = state

  @property
  def port(self) -> int:
    return self.server_address[1]


def start_server(
  state: ServingState, host: str = "127.0.0.1", port: int = 0, *, load: bool = True
) -> tuple[RetrievalServer, threading.Thread]:
  """Serves in a background thread (port 0: a free port); loads the model in the background.

  /healthz answers at once, /readyz once the model is compiled.
  """
  server = RetrievalServer((host, port), state)
  thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
  thread.start()
  if load:
    state.start_reload()
  return server, thread


def stop_server(server: RetrievalServer) -> None:
  server.shutdown()
  server.server_close()
  server.state.stop()
