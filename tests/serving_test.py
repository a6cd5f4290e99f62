"""The retrieval service: request API, constraints, batching, export, and the HTTP server.

One tiny trained work directory (tiny world, CQ-SID, a UQ2SID generator of a few steps) is
built once for the module (about a minute and a half; those tests are marked slow); the
server tests start the real server on a free loopback port and send real HTTP requests,
every loop bounded in count and time.
"""

import functools
import http.client
import json
import subprocess
import threading
import time

import numpy as np
import pytest
from conftest import PYTHON, python_env

from gr_jax import gin_utils
from gr_jax import workdir as workdir_lib
from gr_jax.data import schema
from gr_jax.eval import protocol
from gr_jax.models.token_layout import TokenLayout
from gr_jax.serving import batcher, constraints, export, request, server, service

TINY = [
  "prepare_data.preset = 'tiny'",
  "CODEBOOK_SIZES = (64, 8, 8)",
  "TrainerConfig.progress_bar = False",
  "TrainerConfig.log_every = 10",
  "train_sft.model = 'tiny'",
  "train_sft.prompt_len = 16",
  "train_sft.batch_size = 32",
  "train_sft.stages = ('uq2sid',)",
  "train_sft.stage_steps = {'uq2sid': 10}",
  "text_vocabulary.vocab_size = 300",
]
BEAMS = (4, 8)
WAIT_S = 120.0


# ---------------------------------------------------------------------------- unit level


def _catalog() -> schema.Catalog:
  return schema.Catalog(
    title=np.array(["a", "b", "c", "d", "e", "f"], object),
    category_path=np.array([("x",)] * 6 + [None], object)[:-1],
    category_id=np.array([0, 0, 1, 1, 2, -1], np.int32),
    brand=np.array(["p", "q", "p", "q", "p", ""], object),
    efficiency_score=np.array([0.1, 0.9, 0.5, 0.3, 0.7, 0.2], np.float32),
    category_names=np.array(["shoes", "hats", "bags"], object),
  )


def _logs() -> schema.SearchLogs:
  pad = schema.PAD_ITEM
  return schema.SearchLogs(
    request_id=np.array([0, 1, 2], np.int64),
    user_id=np.array([7, 7, 9], np.int32),
    user_profile=np.array([[1, 2], [1, 3], [0, 0]], np.int32),
    recent_clicks=np.array([[pad, 1], [1, 2], [pad, pad]], np.int32),
    query=np.array(["a", "b", "c"], object),
    exposed=np.full((3, 1), pad, np.int32),
    clicked=np.full((3, 1), pad, np.int32),
    purchased=np.full((3, 1), pad, np.int32),
    split=np.zeros(3, np.int8),
  )


def _parser() -> request.RequestParser:
  layout = TokenLayout(text_vocab_size=10, sid_level_sizes=(4, 2))
  return request.RequestParser(
    _catalog(),
    request.UserDirectory(_logs()),
    layout,
    max_beam_size=8,
    default_beam_size=4,
  )


def test_parser_fills_known_users_and_treats_unknown_users_as_anonymous():
  parser = _parser()
  known = parser.parse({"query": "x", "user_id": 7})
  assert known.profile == (1, 3) and known.recent_clicks == (1, 2)  # the latest request
  own = parser.parse({"query": "x", "user_id": 7, "recent_clicks": [4]})
  assert own.recent_clicks == (4,) and own.profile == (1, 3)
  unknown = parser.parse({"query": "", "user_id": 12345})
  assert unknown.profile is None and unknown.recent_clicks is None
  assert unknown.beam_size == 4 and unknown.max_items == 100


@pytest.mark.parametrize(
  "body, field",
  [
    ([], "request"),
    ({}, "query"),
    ({"query": 3}, "query"),
    ({"query": "x", "colour": 1}, "colour"),
    ({"query": "x", "recent_clicks": [0, 99]}, "recent_clicks[1]"),
    ({"query": "x", "recent_clicks": "1"}, "recent_clicks"),
    ({"query": "x", "beam_size": 9}, "beam_size"),
    ({"query": "x", "beam_size": True}, "beam_size"),
    ({"query": "x", "profile": {"gender": 5, "age_band": 0}}, "gender"),
    ({"query": "x", "categories": ["boots"]}, "categories[0]"),
    ({"query": "x", "categories": [3]}, "categories[0]"),
    ({"query": "x", "exclude_items": [-1]}, "exclude_items[0]"),
    ({"query": "x", "min_efficiency": "low"}, "min_efficiency"),
    ({"query": "x", "brands": [1]}, "brands"),
  ],
)
def test_parser_names_the_bad_field(body, field):
  with pytest.raises(request.RequestError, match=field.replace("[", r"\[").replace("]", r"\]")):
    _parser().parse(body)


def test_check_prompts_rejects_empty_batches_and_tokens_outside_the_vocabulary():
  layout = TokenLayout(text_vocab_size=10, sid_level_sizes=(4, 2))
  with pytest.raises(request.RequestError, match="non-empty"):
    request.check_prompts(np.zeros((0, 3), np.int32), layout)
  with pytest.raises(request.RequestError, match="row 1 token 2"):
    request.check_prompts(np.array([[0, 1, 2], [0, 1, layout.vocab_size]]), layout)


def test_constraints_map_categories_to_first_codes_and_filter_items():
  item_sid = np.array([[0, 0], [0, 1], [1, 0], [2, 0], [3, 0], [3, 1]], np.int32)
  rules = constraints.CatalogConstraints(_catalog(), item_sid, first_level_size=4)
  np.testing.assert_array_equal(rules.allowed_first((1,)), [False, True, True, False])
  np.testing.assert_array_equal(rules.allowed_first(None), [True] * 4)
  items = np.array([0, 1, 2, 3, 4, 5, schema.PAD_ITEM])
  keep = lambda **kw: items[rules.keep(items, constraints.ItemFilter(**kw))].tolist()
  assert keep() == [0, 1, 2, 3, 4, 5]
  assert keep(categories=(0, 2)) == [0, 1, 4]
  assert keep(exclude_items=(1, 4)) == [0, 2, 3, 5]
  assert keep(brands=("p",)) == [0, 2, 4]
  assert keep(min_efficiency=0.3, max_efficiency=0.7) == [2, 3, 4]


def test_batcher_gathers_concurrent_items_and_survives_a_failing_batch():
  sizes = []

  def process(items):
    sizes.append(len(items))
    if "boom" in items:
      raise RuntimeError("boom")
    time.sleep(0.01)
    return [2 * item for item in items]

  queue = batcher.DynamicBatcher(process, max_batch=4, max_wait_ms=50)
  try:
    futures = [queue.submit(i) for i in range(10)]
    assert [f.result(timeout=10) for f in futures] == [2 * i for i in range(10)]
    assert max(sizes) == 4 and len(sizes) < 10
    with pytest.raises(RuntimeError, match="boom"):
      queue.submit("boom").result(timeout=10)
    assert queue.submit(5).result(timeout=10) == 10
  finally:
    queue.stop()


# ------------------------------------------------------------------ on a trained work dir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = tmp_path_factory.mktemp("serving_run")
  gin_utils.run_in_process(path, ["runs/data.gin"], TINY)
  gin_utils.run_in_process(
    path,
    ["runs/tokenizer.gin", "sid/cq_sid.gin"],
    [*TINY, "train_tokenizer.name = 'cq_sid'", "TrainerConfig.num_steps = 10"],
  )
  gin_utils.run_in_process(path, ["runs/sft.gin"], [*TINY, "train_sft.tokenizer = 'cq_sid'"])
  return str(path)


@pytest.fixture(scope="module")
def api(workdir):
  loaded = service.load_service(workdir, "cq_sid", "uq2sid", beam_sizes=BEAMS, batch_size=8)
  loaded.warmup()
  return loaded


@pytest.mark.slow
def test_api_prompts_and_sids_are_the_evaluation_ones(workdir, api):
  catalog, logs = workdir_lib.load_data(workdir)
  sample = logs.select(protocol.sample_requests(logs, "test", 12, seed=0))
  generator, _ = workdir_lib.load_generator(workdir_lib.sft_dir(workdir, "cq_sid", "uq2sid"))
  vocab = workdir_lib.text_vocabulary(workdir).as_seqio_vocabulary()
  item_sid = api.retriever.sid_tables.item_sid
  eval_prompts = protocol.request_prompts(
    "uq2sid", catalog, sample, "test", item_sid, vocab, generator
  )
  requests = request.requests_from_logs(sample, beam_size=8)
  np.testing.assert_array_equal(api.prompt_builder(requests), eval_prompts)
  sids, _, valid = api.retriever.decode(eval_prompts, 8)
  for row, result in enumerate(api.retrieve(requests)):
    np.testing.assert_array_equal(result.sids, sids[row][valid[row]])
    assert result.items and all(tuple(item_sid[i.item]) == i.sid for i in result.items)


@pytest.mark.slow
def test_category_allow_list_runs_on_device_and_filters_apply_after_expansion(api):
  catalog_category = api.constraints.category_id
  wanted = int(catalog_category[0])
  plain = api.retrieve([api.parse({"query": "", "max_items": 50})])[0]
  only = api.retrieve([api.parse({"query": "", "categories": [wanted], "max_items": 50})])[0]
  # CQ-SID: the level-0 code is the category, so every beam starts inside it.
  assert only.items and all(catalog_category[i.item] == wanted for i in only.items)
  assert set(only.sids[:, 0]) <= set(np.flatnonzero(api.constraints.allowed_first((wanted,))))
  excluded = [plain.items[0].item, plain.items[1].item]
  rest = api.retrieve([api.parse({"query": "", "exclude_items": excluded, "max_items": 50})])[0]
  assert not {i.item for i in rest.items} & set(excluded)
  cap = float(np.median(api.retriever.efficiency_score))
  cheap = api.retrieve([api.parse({"query": "", "max_efficiency": cap})])[0]
  assert all(api.retriever.efficiency_score[i.item] <= cap for i in cheap.items)


@pytest.mark.slow
def test_beam_sizes_round_up_to_a_compiled_one_and_are_cut(api):
  small, compiled = api.retrieve(
    [api.parse({"query": "", "beam_size": 3}), api.parse({"query": "", "beam_size": 4})]
  )
  assert small.compiled_beam_size == 4 and len(small.sids) <= 3
  # The first 3 beams of the beam-4 search (a wider search may rank differently).
  np.testing.assert_array_equal(small.sids, compiled.sids[: len(small.sids)])


@pytest.mark.slow
def test_exported_decode_returns_the_in_process_sids(workdir, api, tmp_path):
  out = export.export_decode(
    api.retriever,
    str(tmp_path / "export"),
    prompt_len=api.prompt_builder.prompt_len,
    beam_sizes=(8,),
    task="uq2sid",
    tokenizer="cq_sid",
  )
  exported = export.load_exported_service(workdir, out)
  requests = [
    api.parse({"query": "", "user_id": 0}),
    api.parse({"query": "shoes", "categories": [1]}),
    api.parse({"query": "a b c " * 50, "beam_size": 8}),
  ]
  want = api.decode(requests, 8)
  got = exported.decode(requests, 8)
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_allclose(got[1], want[1], rtol=1e-5)


# ----------------------------------------------------------------------------- over HTTP


def _call(port, method, path, body=None, raw: bytes | None = None):
  connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
  try:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"} if data is not None else {}
    connection.request(method, path, body=data, headers=headers)
    response = connection.getresponse()
    return response.status, json.loads(response.read() or b"{}")
  finally:
    connection.close()


def _wait_for(condition, what: str):
  deadline = time.monotonic() + WAIT_S
  while time.monotonic() < deadline:
    if condition():
      return
    time.sleep(0.2)
  raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def live(workdir):
  loader = functools.partial(
    service.load_service, workdir, "cq_sid", "uq2sid", beam_sizes=(8,), batch_size=8
  )
  state = server.ServingState(loader, max_wait_ms=20)
  http_server, _ = server.start_server(state)
  assert _call(http_server.port, "GET", "/healthz")[0] == 200
  _wait_for(lambda: _call(http_server.port, "GET", "/readyz")[0] == 200, "readiness")
  yield http_server
  server.stop_server(http_server)


@pytest.mark.slow
def test_concurrent_clients_are_batched_and_get_the_direct_answer(live, api):
  port, state = live.port, live.state
  batches_before = state.batcher.batches
  bodies = [
    {"query": q, "user_id": u, "beam_size": 8, "max_items": 20}
    for q in ("", "red", "shoe")
    for u in (0, 1)
  ]
  replies = [None] * 16

  def client(i):
    replies[i] = _call(port, "POST", "/retrieve", bodies[i % len(bodies)])

  threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(timeout=WAIT_S)
  assert all(status == 200 for status, _ in replies)
  assert state.batcher.batches - batches_before < 16  # some requests shared a batch
  for i, (_, payload) in enumerate(replies):
    direct = api.retrieve([api.parse(bodies[i % len(bodies)])])[0]
    assert payload["sids"] == direct.sids.tolist()
    assert [x["item"] for x in payload["items"]] == [x.item for x in direct.items]


@pytest.mark.slow
def test_malformed_requests_get_a_4xx_naming_the_problem_and_the_server_lives_on(live):
  port = live.port
  cases = [
    ("POST", "/retrieve", b"{not json", 400, "not JSON"),
    ("POST", "/retrieve", b"[1, 2]", 400, "JSON object"),
    ("POST", "/retrieve", b'{"user_id": 1}', 400, "query"),
    ("POST", "/retrieve", b'{"query": "x", "recent_clicks": [99999999]}', 400, "recent_clicks"),
    ("POST", "/retrieve", b'{"query": "x", "beam_size": 1000}', 400, "beam_size"),
    ("POST", "/retrieve", b"\xff\xfe", 400, "not JSON"),
    ("POST", "/retrieve", b" " * (server.MAX_BODY_BYTES + 1), 413, "at most"),
    ("GET", "/retrieve", None, 405, "POST"),
    ("GET", "/nowhere", None, 404, "no such endpoint"),
  ]
  for method, path, raw, status, message in cases:
    got, payload = _call(port, method, path, raw=raw)
    assert got == status and message in payload["error"], (path, raw and raw[:40], payload)
  assert _call(port, "GET", "/healthz")[0] == 200
  assert _call(port, "POST", "/retrieve", {"query": "x"})[0] == 200


@pytest.mark.slow
def test_unknown_users_and_empty_or_very_long_queries_are_answered(live):
  port = live.port
  status, anonymous = _call(port, "POST", "/retrieve", {"query": "hat", "user_id": 10**9})
  assert status == 200
  status, plain = _call(port, "POST", "/retrieve", {"query": "hat"})
  assert status == 200 and anonymous["sids"] == plain["sids"]
  for query in ("", "long query " * 20000):
    status, payload = _call(port, "POST", "/retrieve", {"query": query})
    assert status == 200 and payload["items"], query[:20]


@pytest.mark.slow
def test_reload_under_load_swaps_without_failed_requests(live):
  port, state = live.port, live.state
  loads_before = state.loads
  failures, answered = [], [0]
  stop = threading.Event()

  def client():
    deadline = time.monotonic() + WAIT_S
    for _ in range(2000):
      if stop.is_set() or time.monotonic() > deadline:
        return
      status, payload = _call(port, "POST", "/retrieve", {"query": "boots"})
      answered[0] += 1
      if status != 200:
        failures.append(payload)

  threads = [threading.Thread(target=client) for _ in range(3)]
  for thread in threads:
    thread.start()
  try:
    assert _call(port, "POST", "/reload")[0] == 202
    assert _call(port, "POST", "/reload")[0] == 409  # one reload at a time
    _wait_for(lambda: state.loads > loads_before and not state.reloading, "the reload")
    during = answered[0]
    time.sleep(0.5)
  finally:
    stop.set()
    for thread in threads:
      thread.join(timeout=WAIT_S)
  assert not failures and during > 0
  assert _call(port, "GET", "/readyz")[1]["last_reload_error"] is None


def test_serve_entry_point_fails_in_one_line_on_a_missing_work_dir(tmp_path):
  result = subprocess.run(
    [PYTHON, "-m", "gr_jax.serve", f"--workdir={tmp_path}", "--port=0"],
    env=python_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: ")
