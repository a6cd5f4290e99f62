"""Gin plumbing shared by the entry points: parsing with clear errors, the job registry.

A job is any gin-configurable function `fn(workdir: str)`; a run's gin file picks
it with `run.job = @name`. Jobs register themselves by being imported here: this
module is the job registry, the one library module that imports gr_jax.jobs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tokenize

import gin
from absl import logging as absl_logging

from gr_jax import errors, fingerprint, io_utils, validation

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A checkout's gin_configs/, else the copy an install puts inside the package (setup.py).
_CHECKOUT_CONFIGS = os.path.join(REPO_ROOT, "gin_configs")
CONFIG_DIR = (
  _CHECKOUT_CONFIGS
  if os.path.isdir(_CHECKOUT_CONFIGS)
  else os.path.join(os.path.dirname(os.path.abspath(__file__)), "gin_configs")
)
# Its parent too: 'gin_configs/runs/x.gin' is found as well as 'runs/x.gin'.
DEFAULT_SEARCH_PATHS = (CONFIG_DIR, os.path.dirname(CONFIG_DIR))


def _import_jobs() -> None:
  # Importing registers every configurable a gin file may name.
  from gr_jax import jobs  # noqa: F401


# Config dataclasses built from a preset that passes every field: a gin binding of
# one would be silently overridden, so they are not configurable; the error says what is.
_SET_ELSEWHERE = {
  "WorldConfig": "the world is set by prepare_data.preset and prepare_data.overrides, "
  "e.g. prepare_data.overrides = {'title_noise': 0.5}",
  "DecoderConfig": "the generator is set by train_sft.model and train_sft.model_overrides, "
  "e.g. train_sft.model_overrides = {'dtype': 'bfloat16'}",
}

# Everything gin's parser raises for a malformed file or binding: bad syntax, unbalanced
# brackets (a tokenizer error), an unknown configurable, parameter or macro, a failed
# `import` line.
_PARSE_ERRORS = (ValueError, SyntaxError, tokenize.TokenError, ImportError, TypeError, KeyError)


def parse(gin_files, bindings, search_paths=()) -> None:
  """Parses gin files then bindings and checks the bound settings (gr_jax/validation.py).

  Raises:
    errors.GinConfigError: naming the file or binding at fault.
  """
  _import_jobs()
  for path in (*search_paths, *DEFAULT_SEARCH_PATHS):
    # One entry per path however many parses (the list is named in every include error).
    if path not in getattr(gin.config, "_LOCATION_PREFIXES", ()):
      gin.add_config_file_search_path(path)
  with _quiet_gin():
    for gin_file in gin_files:
      try:
        gin.parse_config_file(_resolve(gin_file, search_paths))
      except OSError as e:
        raise errors.GinConfigError(
          f"gin file '{gin_file}': cannot be read ({_one_line(e.strerror or e)})"
        ) from e
      except _PARSE_ERRORS as e:
        raise errors.GinConfigError(f"gin file '{gin_file}': {_one_line(e)}") from e
    for binding in bindings:
      try:
        gin.parse_config(binding)
      except _PARSE_ERRORS as e:
        raise errors.GinConfigError(f"gin binding '{binding}': {_one_line(e)}") from e
    try:
      gin.finalize()
    except _PARSE_ERRORS as e:  # e.g. a macro used but never defined
      raise errors.GinConfigError(f"gin config: {_one_line(e, max_lines=1)}") from e
  # Types and ranges, before the entry point writes anything or a job loads anything.
  validation.check_bindings(_find_configurable)


@contextlib.contextmanager
def _quiet_gin():
  """Silences gin's own ERROR lines (one per search path tried), so a failure stays one line."""
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    root.setLevel(level)


def _find_configurable(name: str):
  """The job function (or workdir.text_vocabulary) gin knows as `name`, for type checks."""
  import importlib
  import pkgutil

  from gr_jax import jobs
  from gr_jax import workdir as workdir_lib

  if name == "text_vocabulary":
    return workdir_lib.text_vocabulary
  for info in pkgutil.iter_modules(jobs.__path__):
    fn = getattr(importlib.import_module(f"gr_jax.jobs.{info.name}"), name, None)
    if callable(fn):
      return fn
  return None


def _resolve(gin_file: str, search_paths) -> str:
  """The gin file as given if it exists, else the first search path holding it."""
  if os.path.exists(gin_file):
    return gin_file
  for root in (*search_paths, *DEFAULT_SEARCH_PATHS):
    candidate = os.path.join(root, gin_file)
    if os.path.exists(candidate):
      return candidate
  raise OSError(2, "not found (looked in the working directory and gin_configs/)", gin_file)


@gin.configurable
def run(workdir: str, job=gin.REQUIRED, redo: bool = False):
  """Calls the configured job.

  Args:
    workdir: the run's work directory.
    job: the job function.
    redo: make again the stages whose recorded settings or inputs differ from this
      request (default: stop with an error listing the differences).
  """
  with fingerprint.redo(redo):
    return job(workdir)


def run_job(workdir: str):
  """Runs `run.job`, turning config and data mistakes into errors.UserError."""
  validation.check_combinations()
  try:
    result = run(workdir)
  except RuntimeError as e:
    match = re.search(r"Required bindings for `([^`]+)` not provided in config: (\[.*?\])", str(e))
    if match:
      raise errors.UserError(
        f"gin: missing required value(s) {match.group(2)} of '{match.group(1)}' "
        "(bind them in a gin file or with --gin_bindings)"
      ) from e
    raise
  except (errors.DataContractError, FileNotFoundError) as e:
    raise errors.UserError(_one_line(e)) from e
  check_bindings_took_effect()
  return result


def unused_bindings() -> tuple[list[str], list[str]]:
  """The bindings that had no effect so far: (overridden, never called).

  Overridden: the configurable was called, but every call passed that parameter
  itself. Never called: no call of the configurable (another job's setting, or a
  stage reused from an earlier run). Macros and scoped bindings are left out.
  """
  operative = {key: set(params) for key, params in gin.config._OPERATIVE_CONFIG.items()}
  overridden, never_called = [], []
  for (scope, selector), params in gin.config._CONFIG.items():
    if scope or selector.endswith("gin.macro"):
      continue
    name = selector.rsplit(".", 1)[-1]
    used = operative.get(("", selector))
    for param in params:
      if used is None:
        never_called.append(f"{name}.{param}")
      elif param not in used:
        overridden.append(f"{name}.{param}")
  return sorted(overridden), sorted(never_called)


def check_bindings_took_effect() -> None:
  """Stops on bindings the job overrode; names those of configurables it never called.

  Raises:
    errors.GinConfigError: naming the bindings that had no effect.
  """
  overridden, never_called = unused_bindings()
  if never_called:
    # A warning, not an error: one sizes file serves several jobs (launch/quickstart.sh),
    # and a stage reused from an earlier run skips its calls.
    absl_logging.warning("gin settings this job did not use: %s", ", ".join(never_called))
  if overridden:
    raise errors.GinConfigError(
      f"gin binding(s) {', '.join(overridden)} had no effect: the job sets these values "
      "itself (its parameters say which binding sets them)"
    )


def run_in_process(workdir: str, gin_files, bindings=()):
  """Parses `gin_files` + `bindings` and runs the job here, as `python -m gr_jax.main` would.

  For tests and notebooks; gin is cleared before and after, so calls do not leak
  bindings into each other.
  """
  gin.clear_config()
  try:
    parse(gin_files, bindings)  # a rejected binding must not leave gin locked either
    return run_job(str(workdir))
  finally:
    gin.clear_config()


def write_operative_config(workdir: str, before_run: bool = False) -> None:
  """Saves the gin config in force, for reproducing the run."""
  name = "config.gin" if before_run else "operative_config.gin"
  text = gin.config_str() if before_run else gin.operative_config_str()
  io_utils.write_text(os.path.join(workdir, name), text)


def _one_line(e, max_lines: int = 3) -> str:
  elsewhere = re.search(r"No configurable matching '(\w+)'", str(e))
  if elsewhere and elsewhere.group(1) in _SET_ELSEWHERE:
    name = elsewhere.group(1)
    return f"{name} takes no gin bindings: {_SET_ELSEWHERE[name]}"
  if isinstance(e, tokenize.TokenError) and len(e.args) == 2:
    return f"{e.args[0]} at line {e.args[1][0]}: unbalanced brackets or quotes"
  macro = re.search(r"No bindings specified for '([^'/]+)/gin\.macro'", str(e))
  if macro:
    return f"macro %{macro.group(1)} is used but never bound"
  lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
  text = " ".join(lines[:max_lines]) if lines else type(e).__name__
  # Python's ast messages carry object addresses; they say nothing to the user.
  return re.sub(r"<ast\.\w+ object at 0x[0-9a-f]+>", "value", text)
