"""User-facing errors: a mistake in what the user asked for, shown as one line with exit 2.

`gr_jax.main` turns any `UserError` into `error: <message>` on stderr and exit
status 2. The subclasses say where the mistake sits; every message names the
file, row, field, flag or binding at fault and what was expected.
"""

from __future__ import annotations


class UserError(ValueError):
  """A mistake in what the user asked for (config, data, paths), to be shown in one line."""


class GinConfigError(UserError):
  """A gin file or binding is wrong; the message names it."""


class DataContractError(UserError):
  """A row breaks the data contract; the message names dataset, row and field."""


class NonFiniteError(UserError):
  """Training produced NaN/Inf weights, optimizer state or loss; nothing non-finite was saved.

  The message names the step, the checkpoint directory and the last finite checkpoint
  (the one a rerun resumes from).
  """


class StageMismatchError(UserError):
  """A finished stage or its input was made with another configuration or input; the
  message lists what differs and the knob that redoes the stage."""


class ArtefactError(UserError):
  """An artefact file is missing, unfinished, truncated or of the wrong shape; named."""


class EmptyDatasetError(UserError):
  """A job's dataset (or the split it reads) holds no usable row."""


class RetrieverInputError(UserError):
  """A Retriever was given inputs it cannot serve (bad ids, empty batch, bad beam size)."""


class DistributedConfigError(UserError):
  """The multi-host environment variables are inconsistent; the message names them."""


def contract_error(dataset: str, row: int | str, field: str, problem: str) -> DataContractError:
  """The error for one bad field of one row of `dataset`."""
  return DataContractError(f"{dataset}: row {row}: field '{field}': {problem}")
