"""Timing helpers shared by the benchmarks: warm-up, block_until_ready, median of N, writers.

Every benchmark builds a list of row dicts and hands them to `write_results`, which prints a
markdown table and writes benchmarks/results/<name>.json (rows + machine + load + command) and
benchmarks/results/<name>.md (the same table). Timings are wall-clock medians after warm-up calls
that absorb compilation; the load average is read before and after each benchmark because the
machine may be shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import gin
import jax
import numpy as np

from gr_jax.decoding import beam_search as beam_lib
from gr_jax.decoding import trie as trie_lib
from gr_jax.models import decoder
from gr_jax.models.token_layout import TokenLayout

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# The Zipf-skewed, cluster-split SID space of the paper (3 codebooks + group suffix).
PAPER_LEVEL_SIZES = (2048, 1024, 1024, 100)
# The paper's index: about 21M items in about 3M SIDs (7 items per SID on average).
PAPER_ITEMS_PER_SID = 7.0


def load_average() -> list[float]:
  """1, 5 and 15 minute load averages of the machine."""
  return [float(x) for x in os.getloadavg()]


def cpu_model() -> str:
  """The CPU model name from /proc/cpuinfo, or the platform's processor string."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
  """Where the numbers come from: CPU, cores, memory, JAX backend and devices."""
  pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  return {
    "cpu": cpu_model(),
    "cores": os.cpu_count(),
    "memory_gib": round(pages / 2**30, 1),
    "jax_version": jax.__version__,
    "backend": jax.default_backend(),
    "devices": [str(d) for d in jax.devices()],
    "python": platform.python_version(),
  }


def block(tree: Any) -> Any:
  """Waits until every array of `tree` is computed (JAX dispatch is asynchronous)."""
  return jax.block_until_ready(tree)


@gin.configurable(allowlist=["warmup", "repeats"])
def time_call(
  fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5
) -> dict[str, float | list[float]]:
  """Wall-clock seconds of `fn()` (its outputs blocked on), after `warmup` untimed calls.

  Args:
    fn: the call to time, no arguments (close over them).
    warmup: untimed calls first (compilation, caches).
    repeats: timed calls.

  Returns:
    {'median_s', 'min_s', 'max_s', 'times_s'}.

  Raises:
    ValueError: repeats < 1 or warmup < 0.
  """
  if repeats < 1 or warmup < 0:
    raise ValueError(f"time_call: need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
  for _ in range(warmup):
    block(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    block(fn())
    times.append(time.perf_counter() - start)
  return {
    "median_s": statistics.median(times),
    "min_s": min(times),
    "max_s": max(times),
    "times_s": times,
  }


def percentile(values: Sequence[float], q: float) -> float:
  """The q-th percentile (0..100) of `values`, linear interpolation."""
  return float(np.percentile(np.asarray(values, np.float64), q))


def peak_rss_mib() -> float:
  """Peak resident memory of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(argv: Sequence[str], timeout_s: float) -> tuple[str, float, float]:
  """Runs a Python child process and measures it from outside.

  Args:
    argv: arguments after the interpreter (e.g. ['-m', 'benchmarks.index_build', '--child']).
    timeout_s: kill the child after this many seconds.

  Returns:
    (stdout, wall seconds, peak RSS of that child in MiB, from wait4's rusage).

  Raises:
    RuntimeError: the child failed or timed out; its stderr tail is in the message.
  """
  repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *argv], stdout=out, stderr=err, cwd=repo_root)
    deadline = start + timeout_s
    while True:
      pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
      if pid:
        break
      if time.perf_counter() > deadline:
        proc.kill()
        os.wait4(proc.pid, 0)
        raise RuntimeError(f"child {argv} ran past {timeout_s} s")
      time.sleep(0.05)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    stdout, stderr = out.read(), err.read()
  if proc.returncode != 0:
    raise RuntimeError(f"child {argv} exited {proc.returncode}: {stderr[-2000:]}")
  return stdout, wall, usage.ru_maxrss / 1024


def format_value(value: Any) -> str:
  """Compact table cell: 4 significant digits for floats."""
  if isinstance(value, float):
    if value == 0 or 1e-3 <= abs(value) < 1e6:
      return f"{value:.4g}"
    return f"{value:.3e}"
  if isinstance(value, list | tuple):
    return "[" + ", ".join(format_value(v) for v in value) + "]"
  if isinstance(value, dict):
    return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
  return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
  """Rows as a GitHub markdown table over `columns` (missing cells are blank)."""
  lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
  for row in rows:
    lines.append("| " + " | ".join(format_value(row.get(c, "")) for c in columns) + " |")
  return "\n".join(lines)


def _jsonable(value: Any) -> Any:
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  return value


def write_results(
  name: str,
  rows: Sequence[dict[str, Any]],
  *,
  columns: Sequence[str],
  summary: dict[str, Any],
  settings: dict[str, Any],
  notes: Sequence[str] = (),
  out_dir: str = RESULTS_DIR,
  load_before: Sequence[float] | None = None,
) -> dict[str, Any]:
  """Prints the table and writes <out_dir>/<name>.json and <name>.md.

  Args:
    name: benchmark name (file stem).
    rows: one dict per measured configuration.
    columns: the row keys shown in the markdown table, in order.
    summary: headline figures (ratios against the targets).
    settings: the inputs of the run (sizes, flags).
    notes: sentences printed under the table (what was scaled down and why).
    out_dir: where the files go.
    load_before: load average read when the benchmark started.

  Returns:
    The JSON record that was written.
  """
  os.makedirs(out_dir, exist_ok=True)
  record = {
    "benchmark": name,
    "command": "python -m benchmarks." + name + " " + " ".join(sys.argv[1:]),
    "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "machine": machine_info(),
    "load_average_before": list(load_before) if load_before is not None else None,
    "load_average_after": load_average(),
    "settings": settings,
    "summary": summary,
    "rows": list(rows),
    "notes": list(notes),
  }
  record = _jsonable(record)
  with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
    json.dump(record, f, indent=2)
  table = markdown_table(rows, columns)
  summary_lines = [f"- {k}: {format_value(v)}" for k, v in record["summary"].items()]
  load = record["load_average_before"], record["load_average_after"]
  text = "\n".join(
    [
      f"### {name}",
      "",
      f"`{record['command'].strip()}` at {record['time_utc']} on {record['machine']['cpu']} "
      f"({record['machine']['cores']} cores, {record['machine']['backend']}); "
      f"load average (1/5/15 min) before {load[0]}, after {load[1]}.",
      "",
      table,
      "",
      *summary_lines,
      *(["", *[f"Note: {n}" for n in notes]] if notes else []),
      "",
    ]
  )
  with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
    f.write(text)
  print(text)
  return record


def ints(text: str) -> tuple[int, ...]:
  """'10,50,100' -> (10, 50, 100): a comma-separated flag value."""
  return tuple(int(part) for part in text.split(","))


def strs(text: str) -> tuple[str, ...]:
  """'tiny,small' -> ('tiny', 'small'): a comma-separated flag value."""
  return tuple(text.split(","))


@dataclasses.dataclass(frozen=True)
class Flag:
  """One benchmark-specific flag: `--num-sids` sets the run function's `num_sids`.

  Attributes:
    name: the run function's argument (the flag spells it with dashes).
    default: its value when the flag is not given (not parsed by `type`).
    type: parses the flag's text (e.g. int, `ints`); default: the default's type.
    help: flag help.
    choices: allowed values.
    action: an argparse action instead of a value (e.g. 'store_true').
  """

  name: str
  default: Any = None
  type: Callable[[str], Any] | None = None
  help: str | None = None
  choices: Sequence[str] | None = None
  action: str | None = None


def base_parser(description: str) -> argparse.ArgumentParser:
  """Parser with the flags every benchmark shares: --quick, --out-dir, --repeats, --gin."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
  parser.add_argument("--out-dir", default=RESULTS_DIR, help="where the JSON / md go")
  parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
  parser.add_argument("--gin", action="append", default=[], help="gin bindings")
  return parser


def add_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag]) -> None:
  """Adds each benchmark-specific flag to `parser`."""
  for flag in flags:
    option = "--" + flag.name.replace("_", "-")
    if flag.action:
      parser.add_argument(option, action=flag.action, help=flag.help)
      continue
    kind = flag.type or (type(flag.default) if flag.default is not None else str)
    parser.add_argument(
      option, type=kind, default=flag.default, help=flag.help, choices=flag.choices
    )


def run_main(
  run_fn: Callable[..., dict],
  doc: str,
  argv: Sequence[str] | None,
  flags: Sequence[Flag] = (),
  repeats: int = 5,
) -> dict:
  """A benchmark's command line: shared + own flags, gin bindings, then `run_fn(...)`.

  Args:
    run_fn: the benchmark's run function; gets quick, out_dir, repeats and one
      keyword per flag.
    doc: the module docstring (its first line is the help description).
    argv: command-line arguments (None: sys.argv).
    flags: the benchmark's own flags.
    repeats: default of --repeats.

  Returns:
    What `run_fn` returns (the record `write_results` wrote).
  """
  parser = base_parser(doc.splitlines()[0])
  parser.set_defaults(repeats=repeats)
  add_flags(parser, flags)
  args = parser.parse_args(argv)
  parse_gin(args.gin)
  values = {flag.name: getattr(args, flag.name) for flag in flags}
  return run_fn(quick=args.quick, out_dir=args.out_dir, repeats=args.repeats, **values)


def parse_gin(bindings: Sequence[str]) -> None:
  """Applies command-line gin bindings (e.g. 'build_trie_index.dense_level2_max_entries=0')."""
  if bindings:
    gin.parse_config(list(bindings))


def paper_item_sids(
  num_items: int,
  rng: np.random.Generator,
  *,
  level_sizes: tuple[int, ...] = PAPER_LEVEL_SIZES,
  items_per_sid: float = PAPER_ITEMS_PER_SID,
) -> tuple[np.ndarray, np.ndarray]:
  """A synthetic paper-shaped catalog: unique SIDs and each item's SID.

  The unique SIDs come from `random_paper_scale_sids` (Zipf categories, cluster split);
  every SID gets at least one item and the remaining items fall on SIDs with heavy-tailed weights.

  Args:
    num_items: N items.
    rng: numpy generator.
    level_sizes: (C_1, C_2, C_3, G) SID level sizes.
    items_per_sid: N / number of unique SIDs (7 in the paper: 21M items, 3M SIDs).

  Returns:
    (unique SIDs [S, 4] int32, item_sid [N, 4] int32).

  Raises:
    ValueError: num_items < 1.
  """
  if num_items < 1:
    raise ValueError(f"paper_item_sids: num_items must be >= 1, got {num_items}")
  num_sids = max(1, int(round(num_items / items_per_sid)))
  sids = paper_sids(num_sids, rng, level_sizes)
  weights = rng.pareto(1.5, num_sids) + 1.0  # [S] heavy-tailed SID popularity
  counts = rng.multinomial(num_items - num_sids, weights / weights.sum()) + 1  # [S]
  item_sid = np.repeat(sids, counts, axis=0)  # [N, 4]
  rng.shuffle(item_sid)
  return sids, item_sid


@gin.configurable(allowlist=["level_sizes", "num_categories", "max_cluster_items", "max_groups"])
def random_paper_scale_sids(
  num: int,
  rng: np.random.Generator,
  *,
  level_sizes: tuple[int, ...] = (2048, 1024, 1024, 100),
  num_categories: int = 1711,
  max_cluster_items: int = 50,
  max_groups: int = 100,
) -> np.ndarray:
  """Synthetic SIDs shaped like the paper's index, for benchmarks.

  Clusters (s1, s2, s3) put s1 on a Zipf-skewed category, s2 and s3 uniform; each cluster holds a
  heavy-tailed item count and is split into min(ceil(count / max_cluster_items), max_groups)
  groups, each group one SID (s1, s2, s3, g), as the paper's Algorithm 1 does.

  Args:
    num: number of unique SIDs wanted.
    rng: numpy random generator.
    level_sizes: (C_1, C_2, C_3, G) codebook sizes; the last is the group suffix.
    num_categories: how many level-1 codes categories occupy.
    max_cluster_items: T_max of the cluster split.
    max_groups: G_max of the cluster split.

  Returns:
    [num, 4] int32 unique SIDs in random order.

  Raises:
    ValueError: when the sizes cannot hold `num` SIDs or are inconsistent.
  """
  if len(level_sizes) != 4 or num_categories > level_sizes[0] or max_groups > level_sizes[3]:
    raise ValueError(
      f"random_paper_scale_sids: need 4 levels with num_categories <= C_1 and max_groups <= G, "
      f"got level_sizes={level_sizes}, num_categories={num_categories}, max_groups={max_groups}"
    )
  if num > num_categories * level_sizes[1] * level_sizes[2]:
    raise ValueError(f"random_paper_scale_sids: num={num} exceeds the cluster space")
  category_weights = 1.0 / np.arange(1, num_categories + 1)  # Zipf over categories
  category_weights /= category_weights.sum()
  # Each round draws clusters; more than `num` SIDs are kept, then a random `num` are returned.
  collected = np.zeros((0, 4), np.int32)
  while collected.shape[0] < num:
    draws = num  # duplicates and group expansion make a round land near `num` SIDs
    clusters = np.stack(
      [
        rng.choice(num_categories, draws, p=category_weights),
        rng.integers(0, level_sizes[1], draws),
        rng.integers(0, level_sizes[2], draws),
      ],
      axis=1,
    )  # [draws, 3]
    items = np.ceil(rng.pareto(1.2, draws) * 8 + 1)  # heavy-tailed items per cluster
    groups = np.minimum(np.ceil(items / max_cluster_items), max_groups).astype(np.int64)
    cluster_of_sid = np.repeat(np.arange(draws), groups)  # [sum(groups)]
    group_index = np.arange(cluster_of_sid.size) - np.repeat(np.cumsum(groups) - groups, groups)
    new = np.concatenate([clusters[cluster_of_sid], group_index[:, None]], axis=1)
    collected = trie_lib.unique_sids(np.concatenate([collected, new]), level_sizes)
  keep = rng.choice(collected.shape[0], num, replace=False)
  return collected[keep]


def paper_sids(num_sids: int, rng: np.random.Generator, level_sizes: tuple[int, ...]) -> np.ndarray:
  """[num_sids, 4] unique paper-shaped SIDs over `level_sizes` (categories and groups capped)."""
  return random_paper_scale_sids(
    num_sids,
    rng,
    level_sizes=tuple(level_sizes),
    num_categories=min(1711, level_sizes[0]),
    max_groups=min(100, level_sizes[3]),
  )


def scaled_level_sizes(quick: bool) -> tuple[int, ...]:
  """The paper's SID level sizes, or a tiny space of the same shape for --quick runs."""
  return (32, 16, 16, 8) if quick else PAPER_LEVEL_SIZES


def make_layout(level_sizes: tuple[int, ...], text_vocab_size: int) -> TokenLayout:
  """Token layout with `text_vocab_size` text pieces and the given SID levels."""
  return TokenLayout(text_vocab_size=text_vocab_size, sid_level_sizes=tuple(level_sizes))


def make_model(
  preset: str, layout: TokenLayout, seed: int = 0
) -> tuple[decoder.DecoderConfig, Any]:
  """A decoder preset over the layout's vocabulary and its random initial parameters."""
  config = decoder.decoder_preset(preset, layout.vocab_size)
  params = jax.jit(decoder.init_params, static_argnums=0)(config, jax.random.key(seed))
  return config, params


def random_prompts(rng: np.random.Generator, layout: TokenLayout, batch: int, length: int):
  """[batch, length] int32 prompts of random text tokens (no padding)."""
  pieces = rng.integers(0, max(layout.text_vocab_size, 1), (batch, length))
  return layout.text_tokens(pieces)


def make_decode(config: decoder.DecoderConfig, layout: TokenLayout, beam_size: int):
  """Jitted (params, trie or None, prompts [B, Tp]) -> (sids, scores, valid): prefill + search.

  The trie is an argument (a pytree), so one function serves constrained and unconstrained
  decoding; None compiles the unconstrained program.
  """

  def decode(params, trie, prompts):
    max_len = prompts.shape[1] + layout.num_sid_levels
    first_logits, cache = decoder.prefill(params, config, prompts, max_len)
    step_fn = lambda tokens, c: decoder.extend(params, config, tokens, c)
    return beam_lib.beam_search(
      step_fn, first_logits, cache, layout=layout, beam_size=beam_size, trie=trie
    )

  return jax.jit(decode)


def time_interleaved(
  fns: dict[str, Callable[[], Any]], *, warmup: int = 1, repeats: int = 5
) -> dict[str, dict[str, float | list[float]]]:
  """Times several calls round-robin (A B C A B C ...), so a load change hits all of them alike.

  Args:
    fns: name -> call to time (no arguments; outputs are blocked on).
    warmup: untimed rounds first.
    repeats: timed rounds.

  Returns:
    name -> {'median_s', 'min_s', 'max_s', 'times_s'}.

  Raises:
    ValueError: repeats < 1 or warmup < 0.
  """
  if repeats < 1 or warmup < 0:
    raise ValueError(f"time_interleaved: need repeats >= 1, warmup >= 0; got {repeats}, {warmup}")
  for _ in range(warmup):
    for fn in fns.values():
      block(fn())
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      block(fn())
      times[name].append(time.perf_counter() - start)
  return {
    name: {
      "median_s": statistics.median(t),
      "min_s": min(t),
      "max_s": max(t),
      "times_s": t,
    }
    for name, t in times.items()
  }


def paired_ratio(numerator_times: Sequence[float], denominator_times: Sequence[float]) -> float:
  """Median over rounds of numerator / denominator time, from `time_interleaved` rounds.

  Each round times both calls back to back, so a per-round ratio cancels a load change that
  lasts longer than one round; its median also drops the rounds a load spike split unevenly.
  """
  if len(numerator_times) != len(denominator_times) or not numerator_times:
    raise ValueError("paired_ratio: need the same, nonzero number of rounds on both sides")
  return statistics.median(n / d for n, d in zip(numerator_times, denominator_times))
