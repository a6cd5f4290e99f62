#!/usr/bin/env bash
# Installs (first run) and runs the whole test suite on 8 virtual CPU devices.
# Extra arguments go to pytest, e.g. `bash launch/test.sh tests/trie_test.py -k dense`.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
"$VENV_PY" -m ruff check gr_jax tests benchmarks launch
"$VENV_PY" -m ruff format --check gr_jax tests benchmarks launch
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=8"
set +e
"$VENV_PY" -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
