"""Learning curves of RL runs: rewards, guard rails and valid metrics against the step."""

from __future__ import annotations

from gr_jax.eval import report, rl_table
from gr_jax.train import metric_writers

# (prefix, metric, panel title): what the trainer logs for an EG-GRPO run.
PANELS = (
  ("train", "reward_mean_sampled", "mean reward of sampled SIDs"),
  ("train", "kl", "KL to the SFT model (k3)"),
  ("train", "entropy_proxy", "entropy proxy (-mean log p of samples)"),
  ("train", "clip_fraction", "clip fraction"),
  ("train", "zero_spread_share", "share of zero-spread groups"),
  ("train", "sample_valid_rate", "valid share of sampled SIDs"),
  ("eval", "clk@1", "valid clk@1"),
  ("eval", "clk@10", "valid clk@10"),
  ("eval", "exp@10", "valid exp@10"),
  ("eval", "onclk@1", "valid online clicks@1 (simulated users)"),
  ("eval", "onclk@10", "valid online clicks@10 (simulated users)"),
)
LINE_STYLES = ("-", "--", ":", "-.")


def plot_rl_curves(runs: dict[str, str], path: str) -> bool:
  """One panel per PANELS entry, one line per run ({name: tb logdir}) -> PNG at `path`.

  Returns:
    False (and writes nothing) when no run has a history.
  """
  histories = {name: metric_writers.read_history(logdir) for name, logdir in runs.items()}
  histories = {name: h for name, h in histories.items() if h}
  if not histories:
    return False
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  # One colour per variant and one line style per seed, in every panel, also where a
  # run lacks a metric: runs named <variant>_s<seed> read as seeds of one method.
  names = {name: rl_table.variant_and_seed(name) for name in histories}
  variants = sorted({variant for variant, _ in names.values()})
  seeds = sorted({seed for _, seed in names.values()})
  styles = {
    name: (f"C{variants.index(variant) % 10}", LINE_STYLES[seeds.index(seed) % len(LINE_STYLES)])
    for name, (variant, seed) in names.items()
  }
  rows = -(-len(PANELS) // 3)
  figure, axes = plt.subplots(rows, 3, figsize=(13, 3.3 * rows), dpi=100)
  for axis, (prefix, metric, title) in zip(axes.flat, PANELS):
    for name, history in sorted(histories.items()):
      points = history.get(prefix, {}).get(metric)
      if points:
        xs, ys = [s for s, _ in points], [v for _, v in points]
        color, style = styles[name]
        axis.plot(xs, ys, label=name, linewidth=1, color=color, linestyle=style)
    axis.set_title(title, fontsize=10)
    axis.set_xlabel("step", fontsize=8)
    axis.grid(True, alpha=0.3)
  for axis in axes.flat[len(PANELS) :]:
    axis.set_visible(False)
  axes.flat[0].legend(fontsize=7)
  report.save_figure(figure, path)
  return True
