"""Where measurements go: the console (absl logging), TensorBoard, and a JSON-lines
history (`history.jsonl` beside the event files) that plots and reports read back.

Only process 0 writes (every process of a multi-host run computes the same global
metrics: one writer keeps each curve single). Open the curves, the gin config and the
hyper-parameters of every run below a work directory with `tensorboard --logdir WORKDIR`.
"""

from __future__ import annotations

import json
import os
import sys

import gin
import jax
from absl import logging

HISTORY_FILE = "history.jsonl"


def is_chief() -> bool:
  """Whether this process is the one that writes measurements and draws progress bars."""
  return jax.process_index() == 0


def show_progress(requested: bool) -> bool:
  """Progress bars only when asked, on process 0, and on a terminal (not in a log file)."""
  return requested and is_chief() and sys.stderr.isatty()


class MetricWriter:
  """Writes scalar dicts (and text, hyper-parameters) to the log and to TensorBoard.

  Args:
    logdir: folder of the event files and history; None: console only.
    enabled: write at all; default: on process 0 only.
    console: also log every scalar dict (off for bulk summaries such as evaluations).
  """

  def __init__(self, logdir: str | None, *, enabled: bool | None = None, console: bool = True):
    self._tb = None
    self._history = None
    self._enabled = is_chief() if enabled is None else enabled
    self._console = console and self._enabled
    self.logdir = logdir
    if logdir and self._enabled:
      # tensorboardX writes standard event files without importing TensorFlow.
      from tensorboardX import SummaryWriter

      os.makedirs(logdir, exist_ok=True)
      self._tb = SummaryWriter(logdir, flush_secs=10)
      self._history = open(os.path.join(logdir, HISTORY_FILE), "a")  # noqa: SIM115 (held open)

  def write_scalars(self, step: int, scalars: dict[str, float], *, prefix: str = "train") -> None:
    if self._console:
      text = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(scalars.items()))
      logging.info("[%s] step %d: %s", prefix, step, text)
    if self._tb is not None:
      for name, value in scalars.items():
        self._tb.add_scalar(f"{prefix}/{name}", float(value), step)
    if self._history is not None:
      row = {"step": int(step), "prefix": prefix, **{k: float(v) for k, v in scalars.items()}}
      self._history.write(json.dumps(row) + "\n")

  def write_text(self, tag: str, text: str, step: int = 0) -> None:
    """Text shown in TensorBoard's Text tab (markdown; indented lines stay verbatim)."""
    if self._tb is not None:
      self._tb.add_text(tag, text, step)

  def write_hparams(self, hparams: dict, metrics: tuple[str, ...] = ()) -> None:
    """The run's settings in TensorBoard's HParams tab, beside the scalar tags `metrics`.

    Values other than bool, int, float and str are shown as their text.
    """
    if self._tb is None:
      return
    from tensorboardX.summary import hparams as hparams_summaries

    values = {
      k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()
    }
    # The three summaries go into this run's own event file (SummaryWriter.add_hparams
    # would open a sibling run per call).
    for summary in hparams_summaries(values, dict.fromkeys(metrics, 0.0)):
      self._tb.file_writer.add_summary(summary)

  def write_gin_config(self, step: int = 0) -> None:
    """The operative gin config (every setting used so far) as text."""
    if self._tb is None:
      return
    text = gin.operative_config_str()
    self.write_text(
      "gin/operative_config", "\n".join("    " + ln for ln in text.splitlines()), step
    )

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


def gin_hparams() -> dict:
  """{'configurable.parameter': value} of every gin setting in force so far (operative)."""
  out = {}
  with gin.config._OPERATIVE_CONFIG_LOCK:  # gin offers this table only as text otherwise
    for (scope, selector), params in gin.config._OPERATIVE_CONFIG.items():
      name = selector.rsplit(".", 1)[-1]
      if name == "gin.macro" or selector.endswith("gin.macro"):
        continue
      for param, value in params.items():
        out[f"{scope + '/' if scope else ''}{name}.{param}"] = value
  return out


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
