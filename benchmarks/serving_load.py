"""Benchmark 11: the HTTP retrieval server under N concurrent clients, beside the direct call.

The server (`gr_jax/serving/server.py`, dynamic batching into the compiled batch shape) is
started in-process on a free loopback port; `--clients` threads each send `/retrieve`
requests back to back over one keep-alive connection, for at most `--requests-per-client`
requests and `--max-setting-s` seconds per beam size. Beside it, in the same run and on the
same loaded model, the direct `Retriever.decode` of one full compiled batch is timed: the
server's overhead is its p50 latency over the direct call's, and the direct QPS over the
server's. Latency is client wall time (JSON, HTTP, queueing, batching, decode, expansion).

The model is a trained work directory (`--workdir`, e.g. the quickstart's
workdir/quickstart); without one, a tiny world run is trained first (a minute or two on a
CPU) with the generator preset `--model` (default tiny; qwen05b on a GPU), so the figures
then are that model's, on a 1,000-item catalog.

  python -m benchmarks.serving_load --workdir=workdir/quickstart --clients 8
  python -m benchmarks.serving_load --model qwen05b --train-steps 2 --clients 32 --batch-size 32
  python -m benchmarks.serving_load --quick
"""

from __future__ import annotations

import http.client
import json
import tempfile
import threading
import time

import numpy as np

from benchmarks import common
from gr_jax import gin_utils
from gr_jax.serving import server, service

NAME = "serving_load"
COLUMNS = ("mode", "beams", "clients", "requests", "qps", "mean_ms", "p50_ms", "p99_ms")
QUERIES = ("red running shoes", "", "wireless earbuds", "summer dress", "kids toys", "laptop")
TINY_RUN = [
  "prepare_data.preset = 'tiny'",
  "CODEBOOK_SIZES = (64, 8, 8)",
  "TrainerConfig.progress_bar = False",
  "train_sft.prompt_len = 16",
  "train_sft.batch_size = 32",
  "train_sft.stages = ('uq2sid',)",
  "text_vocabulary.vocab_size = 300",
]


def train_tiny_run(workdir: str, steps: int, model: str = "tiny") -> None:
  """Data, CQ-SID and a UQ2SID generator (decoder preset `model`) of the tiny world."""
  run = [
    *TINY_RUN,
    f"train_sft.model = '{model}'",
    f"train_sft.stage_steps = {{'uq2sid': {steps}}}",
  ]
  gin_utils.run_in_process(workdir, ["runs/data.gin"], run)
  gin_utils.run_in_process(
    workdir,
    ["runs/tokenizer.gin", "sid/cq_sid.gin"],
    [*run, "train_tokenizer.name = 'cq_sid'", f"TrainerConfig.num_steps = {steps}"],
  )
  gin_utils.run_in_process(workdir, ["runs/sft.gin"], [*run, "train_sft.tokenizer = 'cq_sid'"])


def _row(mode, beams, clients, latencies_s, elapsed_s, answered) -> dict:
  ms = 1e3 * np.asarray(latencies_s)
  return {
    "mode": mode,
    "beams": beams,
    "clients": clients,
    "requests": answered,
    "qps": answered / elapsed_s,
    "mean_ms": float(ms.mean()),
    "p50_ms": common.percentile(ms, 50),
    "p99_ms": common.percentile(ms, 99),
  }


def direct_row(svc, beams: int, calls: int, max_seconds: float) -> dict:
  """Back-to-back `Retriever.decode` calls of one full compiled batch."""
  requests = [
    svc.parse({"query": QUERIES[i % len(QUERIES)], "user_id": i, "beam_size": beams})
    for i in range(svc.batch_size)
  ]
  prompts = svc.prompt_builder(requests)
  svc.retriever.decode(prompts, beams)  # compiled at start-up; one untimed call
  latencies, start = [], time.perf_counter()
  for _ in range(calls):
    begin = time.perf_counter()
    svc.retriever.decode(prompts, beams)
    latencies.append(time.perf_counter() - begin)
    if time.perf_counter() - start > max_seconds:
      break
  elapsed = time.perf_counter() - start
  return _row("direct", beams, 1, latencies, elapsed, len(latencies) * len(prompts))


def server_row(port: int, beams: int, clients: int, per_client: int, max_seconds: float) -> dict:
  """`clients` threads sending /retrieve back to back; bounded in count and time."""
  latencies: list[float] = []
  failures: list[str] = []
  lock = threading.Lock()
  deadline = time.monotonic() + max_seconds

  def client(index: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
      for i in range(per_client):
        if time.monotonic() > deadline:
          return
        body = {"query": QUERIES[(index + i) % len(QUERIES)], "user_id": index, "beam_size": beams}
        begin = time.perf_counter()
        headers = {"Content-Type": "application/json"}
        connection.request("POST", "/retrieve", json.dumps(body), headers)
        response = connection.getresponse()
        payload = response.read()
        took = time.perf_counter() - begin
        with lock:
          if response.status == 200:
            latencies.append(took)
          else:
            failures.append(payload.decode()[:200])
    finally:
      connection.close()

  threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
  start = time.perf_counter()
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(timeout=max_seconds + 300)
  elapsed = time.perf_counter() - start
  if failures:
    raise RuntimeError(f"{len(failures)} requests failed, first: {failures[0]}")
  return _row("server", beams, clients, latencies, elapsed, len(latencies))


def run_serving_load(
  *,
  quick: bool,
  out_dir: str,
  repeats: int,
  workdir: str,
  tokenizer: str,
  stage: str,
  beams: tuple[int, ...],
  clients: int,
  requests_per_client: int,
  batch_size: int,
  max_wait_ms: float,
  max_setting_s: float,
  train_steps: int,
  model: str,
) -> dict:
  load_before = common.load_average()
  if quick:
    beams, clients, requests_per_client, max_setting_s = (4, 8), 4, 3, 20.0
    train_steps = min(train_steps, 5)
  trained_here = not workdir
  build_s = 0.0
  if trained_here:
    workdir = tempfile.mkdtemp(prefix="serving_load_")
    start = time.perf_counter()
    train_tiny_run(workdir, train_steps, model)
    build_s = time.perf_counter() - start
  loader = lambda: service.load_service(
    workdir, tokenizer, stage, beam_sizes=beams, batch_size=batch_size
  )
  state = server.ServingState(loader, max_wait_ms=max_wait_ms)
  start = time.perf_counter()
  state.load()  # compiles every beam size (readiness)
  ready_s = time.perf_counter() - start
  http_server, _ = server.start_server(state, load=False)
  rows = []
  try:
    for beam in beams:
      direct = direct_row(state.service, beam, max(repeats, 3), max_setting_s)
      served = server_row(http_server.port, beam, clients, requests_per_client, max_setting_s)
      rows += [direct, served]
      print(
        f"beam {beam}: direct {direct['qps']:.1f} QPS p50 {direct['p50_ms']:.1f} ms; server "
        f"{served['qps']:.1f} QPS p50 {served['p50_ms']:.1f} ms p99 {served['p99_ms']:.1f} ms"
      )
  finally:
    server.stop_server(http_server)
  by = {(r["mode"], r["beams"]): r for r in rows}
  summary = {
    "server_qps": {b: by["server", b]["qps"] for b in beams},
    "server_p50_ms": {b: by["server", b]["p50_ms"] for b in beams},
    "server_p99_ms": {b: by["server", b]["p99_ms"] for b in beams},
    "p50_over_direct": {b: by["server", b]["p50_ms"] / by["direct", b]["p50_ms"] for b in beams},
    "direct_qps_over_server": {b: by["direct", b]["qps"] / by["server", b]["qps"] for b in beams},
    "paper": "200 QPS on 8 GPUs, 40 ms average",
  }
  settings = {
    "quick": quick,
    "workdir": f"tiny world, {model} generator trained here" if trained_here else workdir,
    "tokenizer": tokenizer,
    "stage": stage,
    "version": state.service.version,
    "beams": beams,
    "clients": clients,
    "requests_per_client": requests_per_client,
    "batch_size": state.service.batch_size,
    "max_wait_ms": max_wait_ms,
    "max_setting_s": max_setting_s,
    "train_s": build_s,
    "ready_s": ready_s,
  }
  notes = [
    "direct: Retriever.decode of one full compiled batch (prompts in, SIDs out), requests = "
    "calls x batch; server: client wall time of POST /retrieve (JSON, HTTP, queueing, "
    "batching, decode, SID -> item expansion), one keep-alive connection per client.",
  ]
  return common.write_results(
    NAME,
    rows,
    columns=COLUMNS,
    summary=summary,
    settings=settings,
    notes=notes,
    out_dir=out_dir,
    load_before=load_before,
  )


def main(argv=None) -> dict:
  flags = (
    common.Flag("workdir", "", str, "trained work directory (empty: train a tiny run first)"),
    common.Flag("tokenizer", "cq_sid"),
    common.Flag("stage", "uq2sid"),
    common.Flag("beams", (20, 50, 100), common.ints),
    common.Flag("clients", 8),
    common.Flag("requests_per_client", 40),
    common.Flag("batch_size", 8),
    common.Flag("max_wait_ms", 5.0),
    common.Flag("max_setting_s", 60.0, float, "cap on each beam's client loop"),
    common.Flag("train_steps", 30, int, "steps of the tiny run trained without --workdir"),
    common.Flag("model", "tiny", str, "decoder preset of the run trained without --workdir"),
  )
  return common.run_main(run_serving_load, __doc__, argv, flags, repeats=10)


if __name__ == "__main__":
  main()
