"""Stage records: what configuration and which inputs made a stage, and whether it finished.

Every stage (data, tokenizer, each SFT stage, RL) keeps `stage.json` in its folder:

    {"stage": ..., "config": {...}, "inputs": {...}, "finished": bool, "id": "..."}

`config` holds the settings that change the stage's result (not logging knobs);
`inputs` the fingerprints of what it read: data files, SID artefacts, and the `id`
of the parent stage whose checkpoint it started from. The id is a hash of the
request, chained with the previous id on a redo, so a redone parent is seen as
changed even with equal settings, and every process of a multi-host run computes
the same id.

A file's fingerprint is its size plus a SHA-256 of its bytes: all of them for files
up to 4 MiB, else three 1 MiB samples (start, middle, end). It is cheap on huge
files and still catches any rewrite of an npz (sizes and headers move).

A rerun whose request differs from the record stops with errors.StageMismatchError
listing the differences; `run.redo = True` clears the stage and makes it again. A
consumer refuses an input stage that did not finish or was made from other inputs.
Folders written by an older version (no stage.json) are accepted unchecked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator

from absl import logging

from gr_jax import errors, io_utils

STAGE_FILE = "stage.json"
_SAMPLE = 1 << 20
REDO_HINT = "--gin_bindings='run.redo = True'"

_redo = False


@contextlib.contextmanager
def redo(enabled: bool) -> Iterator[None]:
  """While active, stages whose record differs are cleared and made again."""
  global _redo
  previous, _redo = _redo, bool(enabled)
  try:
    yield
  finally:
    _redo = previous


def file_fingerprint(path: str) -> str:
  """'<size>:<sha256 prefix>' of a file (module docstring), or 'missing'."""
  if not os.path.exists(path):
    return "missing"
  size = os.path.getsize(path)
  digest = hashlib.sha256(str(size).encode())
  with open(path, "rb") as f:
    if size <= 4 * _SAMPLE:
      digest.update(f.read())
    else:
      for offset in (0, size // 2, size - _SAMPLE):
        f.seek(offset)
        digest.update(f.read(_SAMPLE))
  return f"{size}:{digest.hexdigest()[:16]}"


def files_fingerprint(paths) -> str:
  return ",".join(file_fingerprint(p) for p in paths)


def _normalise(value):
  # Tuples and lists, int keys and str keys: compared as JSON sees them.
  return json.loads(json.dumps(value, sort_keys=True, default=str))


def read_record(folder: str) -> dict | None:
  path = os.path.join(folder, STAGE_FILE)
  return io_utils.read_json(path) if os.path.exists(path) else None


def _flatten(value, prefix: str) -> dict:
  """{'a.b.c': leaf} of nested dicts (JSON strings of dicts included), for short diffs."""
  if isinstance(value, str) and value.startswith("{"):
    with contextlib.suppress(ValueError):
      value = json.loads(value)
  if isinstance(value, dict) and value:
    out = {}
    for key, v in value.items():
      out.update(_flatten(v, f"{prefix}.{key}"))
    return out
  return {prefix: value}


def _digest(value) -> str:
  return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:32]


def _differences(record: dict, wanted: dict) -> list[str]:
  old, new = {}, {}
  for part in ("config", "inputs"):
    old.update(_flatten(record.get(part, {}), part))
    new.update(_flatten(wanted[part], part))
  return [
    f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
    for key in sorted(set(old) | set(new))
    if old.get(key) != new.get(key)
  ]


class Stage:
  """The record of one stage in `folder` (see the module docstring)."""

  def __init__(self, what: str, folder: str, config: dict, inputs: dict):
    self.what, self.folder = what, folder
    self.wanted = {"config": _normalise(config), "inputs": _normalise(inputs)}
    self.id = _digest(self.wanted)

  def reuse(self, *, legacy_finished: bool, clear: Callable[[], None] | None = None) -> bool:
    """True when the stage finished with this very request (nothing to do).

    Otherwise the stage is to be run (or resumed): its record is written unfinished.

    Args:
      legacy_finished: the stage's own finished marker exists (folders of older versions
        carry no record and are reused unchecked).
      clear: deletes the stage's outputs, for redo (default: the whole folder).

    Raises:
      errors.StageMismatchError: the recorded request differs and redo is off.
    """
    record = read_record(self.folder)
    if record is None and legacy_finished:
      logging.warning("%s: no %s (older version); reused unchecked", self.what, STAGE_FILE)
      return True
    if record is not None:
      diff = _differences(record, self.wanted)
      if not diff:
        self.id = record.get("id", self.id)
        if record.get("finished"):
          return True
      elif not _redo:
        state = "finished" if record.get("finished") else "unfinished"
        raise errors.StageMismatchError(
          f"{self.what} in {self.folder} ({state}) was made with other settings or inputs: "
          f"{'; '.join(diff[:6])}; add {REDO_HINT} to redo it (and the stages that used it), "
          "or use another --workdir"
        )
      else:
        logging.warning("%s: redo (%s)", self.what, "; ".join(diff[:6]))
        self.id = _digest([self.wanted, record.get("id")])
        (clear or (lambda: shutil.rmtree(self.folder, ignore_errors=True)))()
    self._write(self.folder, finished=False)
    return False

  def finish(self, folder: str | None = None) -> None:
    """Marks the stage finished (in `folder`, default its own)."""
    self._write(folder or self.folder, finished=True)

  def _write(self, folder: str, finished: bool) -> None:
    os.makedirs(folder, exist_ok=True)
    record = {"stage": self.what, **self.wanted, "finished": finished, "id": self.id}
    io_utils.write_json(os.path.join(folder, STAGE_FILE), record)


def require(what: str, folder: str, inputs: dict, *, legacy_finished: bool) -> dict | None:
  """Checks that a stage a consumer reads finished, from the inputs it reads too.

  Args:
    what: the stage, as the user knows it (e.g. 'SFT stage cq_sid/q2sid').
    folder: its folder.
    inputs: {key: fingerprint} of inputs the consumer also uses (compared when recorded).
    legacy_finished: its own finished marker exists (folder of an older version).

  Returns:
    The record (None for a folder of an older version).

  Raises:
    errors.ArtefactError: the stage did not finish.
    errors.StageMismatchError: it was made from other inputs than the consumer's.
  """
  record = read_record(folder)
  if record is None:
    if legacy_finished:
      return None
    raise errors.ArtefactError(f"{what}: {folder} holds no finished stage; run its job first")
  if not record.get("finished"):
    raise errors.ArtefactError(
      f"{what} in {folder} did not finish (stopped, preempted or failed); rerun its job "
      "to finish it before using it"
    )
  recorded = record.get("inputs", {})
  for key, value in _normalise(inputs).items():
    if key in recorded and recorded[key] != value:
      raise errors.StageMismatchError(
        f"{what} in {folder} was made from another {key} than this work directory holds now "
        f"({recorded[key]} vs {value}); redo it with {REDO_HINT}"
      )
  return record
