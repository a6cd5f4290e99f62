"""Benchmark 4: index build for 21M items: SID -> items CSR tables and the device trie.

The parent writes a synthetic paper-shaped item -> SID array (21M items, ~3M SIDs) to a temporary
.npy file, then runs a fresh child process that loads it and builds
`sid.tables.build_sid_tables` (CSR) and `trie.build_trie_index` (over the tables' unique SIDs, as
the Retriever does). The child reports its own step times; the parent reads the child's peak RSS
from wait4, so the memory figure covers the whole build (the Python + JAX runtime and the loaded
input included; the child's RSS before the build is reported beside it). The target:
<= 30 s and <= 2 GB.

  python -m benchmarks.index_build           # 21M items
  python -m benchmarks.index_build --quick
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import gin
import numpy as np

from benchmarks import common

NAME = "index_build"
COLUMNS = (
  "items",
  "num_sids",
  "tables_s",
  "trie_s",
  "total_s",
  "rss_before_build_mib",
  "peak_rss_mib",
  "build_rss_mib",
)


def child_build(path: str, level_sizes: tuple[int, ...]) -> dict:
  """In the child: loads item_sid, builds both indexes, returns timings (seconds)."""
  import jax

  from gr_jax.decoding import trie as trie_lib
  from gr_jax.sid import tables

  jax.block_until_ready(jax.numpy.zeros(1))  # runtime up before the baseline reading
  item_sid = np.load(path)
  rss_before = common.peak_rss_mib()
  start = time.perf_counter()
  sid_tables = tables.build_sid_tables(item_sid, level_sizes)
  tables_s = time.perf_counter() - start
  start = time.perf_counter()
  trie = jax.block_until_ready(trie_lib.build_trie_index(sid_tables.sids, level_sizes))
  trie_s = time.perf_counter() - start
  return {
    "items": int(item_sid.shape[0]),
    "num_sids": int(sid_tables.num_sids),
    "trie_sids": int(trie.num_sids),
    "tables_s": tables_s,
    "trie_s": trie_s,
    "rss_before_build_mib": rss_before,
  }


@gin.configurable(denylist=["out_dir", "load_before"])
def run_index_build(
  *,
  quick: bool = False,
  out_dir: str = common.RESULTS_DIR,
  repeats: int = 1,
  items: int = 21_000_000,
  seed: int = 0,
  timeout_s: float = 900.0,
  load_before=None,
) -> dict:
  """Builds the indexes of `items` items in child processes and records time and memory.

  Args:
    quick: a few thousand items in a tiny SID space (smoke test).
    out_dir: where <name>.json / .md go.
    repeats: child runs (each a fresh process); the median time and the largest peak are kept.
    items: catalog size.
    seed: data seed.
    timeout_s: per child.
    load_before: load average at start (default: read now).

  Returns:
    The written JSON record.
  """
  load_before = load_before or common.load_average()
  level_sizes = common.scaled_level_sizes(quick)
  if quick:
    items = 3000
  _, item_sid = common.paper_item_sids(items, np.random.default_rng(seed), level_sizes=level_sizes)
  runs = []
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "item_sid.npy")
    np.save(path, item_sid)
    del item_sid
    sizes = ",".join(str(s) for s in level_sizes)
    for _ in range(max(1, repeats)):
      stdout, wall, peak = common.run_child(
        ["-m", "benchmarks.index_build", "--child", path, "--level-sizes", sizes], timeout_s
      )
      run = json.loads(stdout.strip().splitlines()[-1])
      run.update(child_wall_s=wall, peak_rss_mib=peak, load_average=common.load_average())
      runs.append(run)
  best = sorted(runs, key=lambda r: r["tables_s"] + r["trie_s"])[len(runs) // 2]
  row = {
    **best,
    "total_s": best["tables_s"] + best["trie_s"],
    "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
    "build_rss_mib": max(r["peak_rss_mib"] - r["rss_before_build_mib"] for r in runs),
  }
  summary = {
    "build_s": row["total_s"],
    "target_s": 30.0,
    "peak_rss_gib": row["peak_rss_mib"] / 1024,
    "build_only_rss_gib": row["build_rss_mib"] / 1024,
    "target_gib": 2.0,
  }
  settings = {"quick": quick, "items": items, "level_sizes": level_sizes, "repeats": repeats}
  notes = [
    "peak_rss_mib: the child's whole peak (runtime + loaded input + build, from wait4); "
    "build_rss_mib: peak minus the RSS after imports and loading the input.",
    "The trie build includes the copy of its tables to the (CPU) device.",
  ]
  return common.write_results(
    NAME,
    [row],
    columns=COLUMNS,
    summary=summary,
    settings=settings,
    notes=notes,
    out_dir=out_dir,
    load_before=load_before,
  )


def _run(*, child: str | None, level_sizes: tuple[int, ...] | None, **kwargs) -> dict | None:
  """The parent benchmark, or (--child) one index build whose stats go to stdout as JSON."""
  if child:
    print(json.dumps(child_build(child, level_sizes)))
    return None
  return run_index_build(**kwargs)


def main(argv=None) -> dict | None:
  flags = (
    common.Flag("items", 21_000_000),
    common.Flag("child", None, str, argparse.SUPPRESS),
    common.Flag("level_sizes", None, common.ints, argparse.SUPPRESS),
  )
  return common.run_main(_run, __doc__, argv, flags, repeats=1)


if __name__ == "__main__":
  main()
