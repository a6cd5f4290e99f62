"""Atomic file writes: a reader never sees half a file (temp name, then rename)."""

from __future__ import annotations

import json
import os
import socket

import numpy as np


def write_text(path: str, text: str) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = temp_path(path)
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def temp_path(path: str) -> str:
  """A temporary name next to `path`, own to this process.

  In a multi-host run every process writes the same files to shared storage; one
  temporary name for all would let one process rename away another's file.
  """
  return f"{path}.tmp.{socket.gethostname()}.{os.getpid()}"


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def normal_permissions(path: str) -> None:
  """Gives a tempfile-made file or folder the mode a plain open / makedirs would have.

  tempfile creates them readable by the owner only (0600 / 0700); renamed into place
  they would keep that mode and lock collaborators out of a shared work directory.
  """
  mode = 0o777 if os.path.isdir(path) else 0o666
  os.chmod(path, mode & ~_umask())


def write_json(path: str, payload) -> None:
  write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=float))


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def write_npz(path: str, arrays: dict) -> None:
  """Uncompressed .npz of named arrays, written atomically."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = temp_path(path)
  with open(tmp, "wb") as f:
    np.savez(f, **arrays)
  os.replace(tmp, path)
