"""Atomic file writes: a reader never sees half a file (temp name, then rename)."""

from __future__ import annotations

import json
import os


def write_text(path: str, text: str) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def write_json(path: str, payload) -> None:
  write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=float))


def read_json(path: str):
  with open(path) as f:
    return json.load(f)
