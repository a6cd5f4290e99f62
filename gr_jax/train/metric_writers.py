"""Where training measurements go: the console (absl logging) and TensorBoard."""

from __future__ import annotations

import os

from absl import logging


class MetricWriter:
  """Writes scalar dicts to the log and to TensorBoard event files under `logdir`."""

  def __init__(self, logdir: str | None, *, enabled: bool = True):
    self._tb = None
    if logdir and enabled:
      # tensorboardX writes standard event files without importing TensorFlow.
      from tensorboardX import SummaryWriter

      os.makedirs(logdir, exist_ok=True)
      self._tb = SummaryWriter(logdir, flush_secs=10)

  def write_scalars(self, step: int, scalars: dict[str, float], *, prefix: str = "train") -> None:
    text = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(scalars.items()))
    logging.info("[%s] step %d: %s", prefix, step, text)
    if self._tb is not None:
      for name, value in scalars.items():
        self._tb.add_scalar(f"{prefix}/{name}", float(value), step)

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def _fmt(value: float) -> str:
  value = float(value)
  return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
