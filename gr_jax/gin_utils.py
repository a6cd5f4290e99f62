"""Gin plumbing shared by the entry points: parsing with clear errors, the job registry.

A job is any gin-configurable function `fn(workdir: str)`; a run's gin file picks
it with `run.job = @name`. Jobs register themselves by being imported here: this
module is the job registry, the one library module that imports gr_jax.jobs.
"""

from __future__ import annotations

import os
import re

import gin

from gr_jax import errors, io_utils

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SEARCH_PATHS = (os.path.join(REPO_ROOT, "gin_configs"), REPO_ROOT)


def _import_jobs() -> None:
  # Importing registers every configurable a gin file may name.
  from gr_jax import jobs  # noqa: F401


def parse(gin_files, bindings, search_paths=()) -> None:
  """Parses gin files then bindings; raises errors.GinConfigError naming the culprit."""
  _import_jobs()
  for path in (*search_paths, *DEFAULT_SEARCH_PATHS):
    gin.add_config_file_search_path(path)
  for gin_file in gin_files:
    try:
      gin.parse_config_file(_resolve(gin_file, search_paths))
    except OSError as e:
      raise errors.GinConfigError(
        f"gin file '{gin_file}': cannot be read ({e.strerror or e})"
      ) from e
    except (ValueError, SyntaxError) as e:
      raise errors.GinConfigError(f"gin file '{gin_file}': {_one_line(e)}") from e
  for binding in bindings:
    try:
      gin.parse_config(binding)
    except (ValueError, SyntaxError) as e:
      raise errors.GinConfigError(f"gin binding '{binding}': {_one_line(e)}") from e
  gin.finalize()


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
def run(workdir: str, job=gin.REQUIRED):
  """Calls the configured job."""
  return job(workdir)


def run_job(workdir: str):
  """Runs `run.job`, turning config and data mistakes into errors.UserError."""
  try:
    return run(workdir)
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


def run_in_process(workdir: str, gin_files, bindings=()):
  """Parses `gin_files` + `bindings` and runs the job here, as `python -m gr_jax.main` would.

  For tests and notebooks; gin is cleared before and after, so calls do not leak
  bindings into each other.
  """
  gin.clear_config()
  parse(gin_files, bindings)
  try:
    return run_job(str(workdir))
  finally:
    gin.clear_config()


def write_operative_config(workdir: str, before_run: bool = False) -> None:
  """Saves the gin config in force, for reproducing the run."""
  name = "config.gin" if before_run else "operative_config.gin"
  text = gin.config_str() if before_run else gin.operative_config_str()
  io_utils.write_text(os.path.join(workdir, name), text)


def _one_line(e: BaseException) -> str:
  lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
  return " ".join(lines[:3]) if lines else type(e).__name__
