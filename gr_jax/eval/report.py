"""Writes evaluation results: metrics.json, results.md (the paper's layout) and PNG plots."""

from __future__ import annotations

import os


def markdown_table(rows: list[dict], columns: list[str], *, title: str = "") -> str:
  """Rows of dicts -> a markdown table (numbers with 4 decimals)."""
  lines = [f"### {title}", ""] if title else []
  lines.append("| " + " | ".join(columns) + " |")
  lines.append("|" + "---|" * len(columns))
  for row in rows:
    cells = []
    for column in columns:
      value = row.get(column, "")
      cells.append(f"{value:.4f}" if isinstance(value, float) else str(value))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def relative_gain(value: float, baseline: float) -> str:
  if baseline <= 0:
    return "n/a"
  return f"{100.0 * (value - baseline) / baseline:+.2f}%"


def plot_curves(
  path: str,
  curves: dict[str, tuple[list, list]],
  *,
  xlabel: str,
  ylabel: str,
  title: str,
  bands: dict[str, tuple[list, list]] | None = None,
):
  """One line per name: {name: (xs, ys)} -> PNG (log x axis), written atomically.

  `bands` ({name: (lows, highs)}) shades each line's confidence interval.
  """
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  figure, axis = plt.subplots(figsize=(6, 4), dpi=120)
  for name, (xs, ys) in curves.items():
    (line,) = axis.plot(xs, ys, marker="o", label=name)
    if bands and name in bands:
      lows, highs = bands[name]
      axis.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
  axis.set_xscale("log")
  axis.set_xlabel(xlabel)
  axis.set_ylabel(ylabel)
  axis.set_title(title)
  axis.grid(True, alpha=0.3)
  axis.legend()
  save_figure(figure, path)


def save_figure(figure, path: str) -> None:
  """Writes a matplotlib figure to `path` as PNG, atomically, and closes it."""
  import matplotlib.pyplot as plt

  figure.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp.png"
  figure.savefig(tmp)
  plt.close(figure)
  os.replace(tmp, path)
