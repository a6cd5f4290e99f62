"""Settings checked when a job starts, before any data or model is loaded.

Two checks run on every binding the user made (files, --gin_bindings, macros
resolved), so that a mistake costs one `error:` line instead of a traceback after
minutes of loading:

* types: a binding of a job function or of a config dataclass listed in `CHECKED`
  must match the parameter's annotation (int, float, bool, str, tuples of int or
  str, dict, optionally None);
* ranges: the bindings in `RANGES` (batch sizes, beams, steps, sizes) must satisfy
  their rule.

Unbound parameters keep their (valid) defaults and are not checked; scoped bindings
(`scope/name.param`) are left to the job.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers

import gin

from gr_jax import errors


def _at_least(low: int):
  def rule(value):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
      return f"must be an integer >= {low}"
    return None

  return rule


def _ints_at_least(low: int, allow_empty: bool = False):
  def rule(value):
    if not isinstance(value, (tuple, list)) or (not value and not allow_empty):
      return f"must be a {'' if allow_empty else 'non-empty '}tuple of integers >= {low}"
    for v in value:
      if _at_least(low)(v):
        return f"must be a tuple of integers >= {low} (got {v!r})"
    return None

  return rule


def _positive_number(value):
  if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value > 0:
    return "must be a number > 0"
  return None


def _dict_of(rule):
  def check(value):
    if value is None:
      return None
    if not isinstance(value, dict):
      return "must be a dict"
    for key, v in value.items():
      problem = rule(v)
      if problem:
        return f"entry {key!r}: {problem}"
    return None

  return check


POSITIVE = _at_least(1)
BEAMS = _ints_at_least(1)

RANGES = {
  "TrainerConfig.num_steps": POSITIVE,
  "TrainerConfig.log_every": POSITIVE,
  "TrainerConfig.checkpoint_every": POSITIVE,
  "TrainerConfig.eval_every": _at_least(0),
  "TrainerConfig.max_to_keep": POSITIVE,
  "TrainerConfig.profile_steps": lambda v: (
    None
    if v is None or (isinstance(v, (tuple, list)) and len(v) == 2 and 0 <= v[0] < v[1])
    else "must be (first, stop) with 0 <= first < stop, or None"
  ),
  "regression_batches.batch_size": POSITIVE,
  "prepare_data.preset": lambda v: None if isinstance(v, str) and v else "must be a preset name",
  "prepare_data.on_error": lambda v: (
    None if v in ("raise", "skip") else "must be 'raise' or 'skip'"
  ),
  "save_catalog.max_text_chars": POSITIVE,
  "save_logs.max_text_chars": POSITIVE,
  "TokenizerConfig.codebook_sizes": _ints_at_least(2),
  "TokenizerConfig.latent_dim": POSITIVE,
  "TokenizerConfig.encoder_hidden": _ints_at_least(1, allow_empty=True),
  "TokenizerConfig.decoder_hidden": _ints_at_least(1, allow_empty=True),
  "train_tokenizer.batch_size": POSITIVE,
  "train_tokenizer.assign_batch_size": POSITIVE,
  "train_tokenizer.two_tower_steps": POSITIVE,
  "train_sft.batch_size": POSITIVE,
  "train_sft.prompt_len": POSITIVE,
  "train_sft.stages": lambda v: None if isinstance(v, (tuple, list)) and v else "must be non-empty",
  "train_sft.stage_steps": _dict_of(POSITIVE),
  "train_sft.stage_learning_rates": _dict_of(_positive_number),
  "train_sft.mixture_rates": _dict_of(_positive_number),
  "evaluate.beam_sizes": BEAMS,
  "evaluate.curve_beam_sizes": _ints_at_least(1, allow_empty=True),
  "evaluate.truncation_beam_sizes": _ints_at_least(1, allow_empty=True),
  "evaluate.truncation_items": POSITIVE,
  "evaluate.max_requests": POSITIVE,
  "evaluate.bootstrap_resamples": POSITIVE,
  "evaluate_seqrec.beam_sizes": BEAMS,
  "evaluate_seqrec.ks": BEAMS,
  "train_rl.batch_size": POSITIVE,
  "train_rl.learning_rate": _positive_number,
  "train_rl.eval_requests": POSITIVE,
  "train_rl.eval_beam_sizes": BEAMS,
  "assign_items.batch_size": POSITIVE,
  "text_vocabulary.vocab_size": _at_least(16),
}

# Configurables whose bound parameters are type-checked against their annotations.
CHECKED = (
  "prepare_data",
  "train_tokenizer",
  "train_sft",
  "evaluate",
  "evaluate_seqrec",
  "train_rl",
  "assign_items",
  "TrainerConfig",
  "TokenizerConfig",
  "text_vocabulary",
)

_MISSING = object()


def _bound(selector: str):
  """The value bound to `selector` (macros resolved), or _MISSING when unbound/a reference."""
  try:
    value = gin.query_parameter(selector)
  except ValueError:
    return _MISSING
  for _ in range(10):  # a macro may name another macro
    if not isinstance(value, gin.config.ConfigurableReference):
      return value
    if not value.scoped_selector.endswith("gin.macro"):
      return _MISSING  # @configurable: built by gin, not a plain value
    value = gin.query_parameter("%" + value.scoped_selector.split("/")[0])
  return _MISSING


_TYPES = {
  "int": lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
  "float": lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
  "bool": lambda v: isinstance(v, bool),
  "str": lambda v: isinstance(v, str),
  "dict": lambda v: isinstance(v, dict),
  "None": lambda v: v is None,
  "tuple[int, ...]": lambda v: isinstance(v, (tuple, list)) and all(_TYPES["int"](x) for x in v),
  "tuple[str, ...]": lambda v: isinstance(v, (tuple, list)) and all(_TYPES["str"](x) for x in v),
}


def _type_problem(annotation: str, value) -> str | None:
  """Why `value` does not fit `annotation` (a string annotation), or None."""
  options = [a.strip() for a in annotation.split("|")]
  if any(a not in _TYPES for a in options):
    return None  # annotation this check does not model: left to the job
  if any(_TYPES[a](value) for a in options):
    return None
  return f"must be of type {annotation}, got {type(value).__name__}"


def _parameters(name: str, find) -> dict[str, str]:
  """{parameter: annotation string} of configurable `name` (a job or a config dataclass)."""
  from gr_jax.sid import rqvae
  from gr_jax.train import trainer

  configs = {"TrainerConfig": trainer.TrainerConfig, "TokenizerConfig": rqvae.TokenizerConfig}
  if name in configs:
    return {f.name: str(f.type) for f in dataclasses.fields(configs[name])}
  fn = find(name)
  if fn is None:
    return {}
  return {
    p.name: str(p.annotation)
    for p in inspect.signature(fn).parameters.values()
    if p.annotation is not inspect.Parameter.empty
  }


def check_bindings(find=lambda name: None) -> None:
  """Checks the bound settings (module docstring) before a job starts.

  Args:
    find: configurable name -> its function, or None (the job registry, gin_utils,
      supplies it: library modules do not import jobs).

  Raises:
    errors.GinConfigError: naming the binding, its value and what was expected.
  """
  for name in CHECKED:
    for param, annotation in _parameters(name, find).items():
      value = _bound(f"{name}.{param}")
      if value is _MISSING:
        continue
      problem = _type_problem(annotation, value)
      if problem:
        raise errors.GinConfigError(f"gin binding {name}.{param} = {value!r}: {problem}")
  for selector, rule in RANGES.items():
    value = _bound(selector)
    if value is _MISSING:
      continue
    problem = rule(value)
    if problem:
      raise errors.GinConfigError(f"gin binding {selector} = {value!r}: {problem}")


# Settings a job replaces with its own (dataclasses.replace, which gin does not see):
# {job: {binding: what sets it instead}}.
SET_BY_JOB = {
  "train_sft": {
    "TrainerConfig.num_steps": "train_sft.stage_steps",
    "TrainerConfig.init_checkpoint": "the previous stage (or train_sft.init_from_hf)",
  },
  "train_rl": {
    "TrainerConfig.seed": "train_rl.seed",
    "TrainerConfig.init_checkpoint": "train_rl.init_stage",
  },
}


def _job_name() -> str | None:
  try:
    job = gin.query_parameter("run.job")
  except ValueError:
    return None
  return getattr(getattr(job, "configurable", None), "name", None)


def check_combinations() -> None:
  """Settings that are only wrong together; checked when a job starts (a run file parsed
  alone may leave a value to the command line).

  Raises:
    errors.GinConfigError: naming the bindings.
  """
  if _bound("train_sft.model") == "hf" and _bound("train_sft.init_from_hf") in (_MISSING, None):
    raise errors.GinConfigError(
      "gin binding train_sft.model = 'hf': the model is taken from a checkpoint; bind "
      "train_sft.init_from_hf to a Hugging Face Qwen2 folder"
    )
  for selector, instead in SET_BY_JOB.get(_job_name(), {}).items():
    if _bound(selector) is not _MISSING:
      raise errors.GinConfigError(
        f"gin binding {selector}: job {_job_name()} sets it from {instead}; bind that instead"
      )
