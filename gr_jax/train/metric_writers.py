"""Where training measurements go: the console (absl logging), TensorBoard, and a JSON-lines
history (`history.jsonl` beside the event files) that plots and reports read back."""

from __future__ import annotations

import json
import os

from absl import logging

HISTORY_FILE = "history.jsonl"


class MetricWriter:
  """Writes scalar dicts to the log and to TensorBoard event files under `logdir`."""

  def __init__(self, logdir: str | None, *, enabled: bool = True):
    self._tb = None
    self._history = None
    if logdir and enabled:
      # tensorboardX writes standard event files without importing TensorFlow.
      from tensorboardX import SummaryWriter

      os.makedirs(logdir, exist_ok=True)
      self._tb = SummaryWriter(logdir, flush_secs=10)
      self._history = open(os.path.join(logdir, HISTORY_FILE), "a")  # noqa: SIM115 (held open)

  def write_scalars(self, step: int, scalars: dict[str, float], *, prefix: str = "train") -> None:
    text = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(scalars.items()))
    logging.info("[%s] step %d: %s", prefix, step, text)
    if self._tb is not None:
      for name, value in scalars.items():
        self._tb.add_scalar(f"{prefix}/{name}", float(value), step)
    if self._history is not None:
      row = {"step": int(step), "prefix": prefix, **{k: float(v) for k, v in scalars.items()}}
      self._history.write(json.dumps(row) + "\n")

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()
    if self._history is not None:
      self._history.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None
    if self._history is not None:
      self._history.close()
      self._history = None


def read_history(logdir: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
  """{prefix: {metric: [(step, value), ...]}} from `logdir`'s history, last value per step.

  A resumed run writes the steps after its checkpoint again; the later line wins.
  """
  path = os.path.join(logdir, HISTORY_FILE)
  latest: dict[tuple[str, str], dict[int, float]] = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        row = json.loads(line)
        step, prefix = row.pop("step"), row.pop("prefix")
        for name, value in row.items():
          latest.setdefault((prefix, name), {})[step] = value
  out: dict = {}
  for (prefix, name), values in latest.items():
    out.setdefault(prefix, {})[name] = sorted(values.items())
  return out


def _fmt(value: float) -> str:
  value = float(value)
  return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
