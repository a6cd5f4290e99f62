"""Dynamic batching: concurrent requests gathered into one call of a fixed batch shape.

Callers `submit` one item and wait on its future; one worker thread takes the first
waiting item, then gathers more until `max_batch` are waiting or `max_wait_ms` passed
since the first, and answers them with one `process(items)` call. The compiled program
has a fixed batch shape, so a batch of fewer requests costs the same device time as a
full one: waiting a little for company trades latency for throughput.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent import futures


class DynamicBatcher:
  """Batches `submit`ted items into `process` calls of at most `max_batch` items.

  Args:
    process: items -> one result per item, in order (called on the worker thread only).
    max_batch: most items per call (the compiled batch shape).
    max_wait_ms: longest a first item waits for others before its batch runs.
  """

  def __init__(self, process: Callable[[list], list], max_batch: int, max_wait_ms: float):
    if max_batch < 1:
      raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if max_wait_ms < 0:
      raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
    self.process = process
    self.max_batch = int(max_batch)
    self.max_wait_s = float(max_wait_ms) / 1e3
    self._queue: queue.Queue = queue.Queue()
    self._stop = threading.Event()
    self.batches = 0
    self.items = 0
    self._thread = threading.Thread(target=self._run, name="dynamic-batcher", daemon=True)
    self._thread.start()

  def submit(self, item) -> futures.Future:
    """Queues one item; the future holds its result (or the batch's exception)."""
    if self._stop.is_set():
      raise RuntimeError("the batcher is stopped")
    future: futures.Future = futures.Future()
    self._queue.put((item, future))
    return future

  def _gather(self) -> list:
    try:
      first = self._queue.get(timeout=0.1)
    except queue.Empty:
      return []
    batch = [first]
    deadline = time.monotonic() + self.max_wait_s
    while len(batch) < self.max_batch:
      left = deadline - time.monotonic()
      try:
        batch.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
      except queue.Empty:
        break
    return batch

  def _run(self) -> None:
    while not self._stop.is_set():
      batch = self._gather()
      if not batch:
        continue
      items = [item for item, _ in batch]
      try:
        results = self.process(items)
      except Exception as e:  # noqa: BLE001  (the callers get it; the worker lives on)
        for _, future in batch:
          future.set_exception(e)
        continue
      self.batches += 1
      self.items += len(batch)
      for (_, future), result in zip(batch, results):
        future.set_result(result)

  def stop(self) -> None:
    """Stops the worker after its current batch; waiting items get a RuntimeError."""
    self._stop.set()
    self._thread.join(timeout=60)
    while True:
      try:
        _, future = self._queue.get_nowait()
      except queue.Empty:
        break
      future.set_exception(RuntimeError("the batcher stopped"))
