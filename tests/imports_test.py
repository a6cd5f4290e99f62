"""The package's import rules: jobs are thin drivers over library rooms (DESIGN.md).

(a) no job imports another job; (b) no library module imports a job, except the
entry point and the job registry; (c) every job driver stays short.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "gr_jax")
JOBS = "gr_jax.jobs"
# The entry point runs jobs; the gin job registry imports them so they register.
MAY_IMPORT_JOBS = {"gr_jax.main", "gr_jax.gin_utils"}
MAX_JOB_LINES = 120


def _modules() -> dict[str, str]:
  """{dotted module name: path} of every module under gr_jax/."""
  found = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        dotted = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
        found[dotted.removesuffix(".__init__")] = path
  return found


def _imports(module: str, path: str) -> list[tuple[int, str]]:
  """(line, imported module) of every import in the file, relative ones resolved."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")
        base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
      # `from gr_jax import jobs` / `from gr_jax.jobs import sft` name modules too.
      out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
      out.append((node.lineno, base))
  return out


def _is_job(name: str) -> bool:
  return name == JOBS or name.startswith(JOBS + ".")


MODULES = _modules()


def test_modules_found():
  assert "gr_jax.jobs.sft" in MODULES and "gr_jax.workdir" in MODULES


def test_no_job_imports_another_job():
  offending = []
  for module, path in MODULES.items():
    if not _is_job(module) or module == JOBS:
      continue
    for line, name in _imports(module, path):
      if _is_job(name) and name != module:
        offending.append(f"{os.path.relpath(path, ROOT)}:{line} imports {name}")
  assert not offending, "a job imports another job: " + "; ".join(offending)


def test_no_library_module_imports_a_job():
  offending = []
  for module, path in MODULES.items():
    if _is_job(module) or module in MAY_IMPORT_JOBS:
      continue
    for line, name in _imports(module, path):
      if _is_job(name):
        offending.append(f"{os.path.relpath(path, ROOT)}:{line} imports {name}")
  assert not offending, "library code imports a job: " + "; ".join(offending)


@pytest.mark.parametrize(
  "module", sorted(m for m in MODULES if _is_job(m) and m != JOBS), ids=lambda m: m
)
def test_job_driver_is_short(module):
  with open(MODULES[module]) as f:
    lines = len(f.read().splitlines())
  assert lines <= MAX_JOB_LINES, (
    f"{os.path.relpath(MODULES[module], ROOT)}: {lines} lines; a job is a thin driver "
    f"(at most {MAX_JOB_LINES}): move library code to its room"
  )
