r"""Builds the gr_jax TFDS datasets: a beam-free stand-in for `tfds build`.

    python -m gr_jax.data.tfds.build gr_jax_world/tiny_catalog gr_jax_world/tiny_logs \
        --data_dir=~/tensorflow_datasets
    python -m gr_jax.data.tfds.build amazon_scientific --manual_dir=../shared/data/amazon_scientific
    python -m gr_jax.data.tfds.build --list

The `tfds build` command of tensorflow-datasets 4.9.10 cannot start here: its
entry point (tensorflow_datasets/scripts/cli/main.py) imports the
`convert_format` command, whose module subclasses `apache_beam.DoFn` at import
time, and the `build_croissant` command, which imports `mlcroissant`; neither
package is installed (apache-beam needs older protobuf / pillow / pyarrow than
the lock). TFDS's own build step does not need beam, so this module does what
`tfds build` does for our builders, with its common flags:

  positional  `<builder>[/<config>][:<version>]`; no config builds every config
              of the builder (for gr_jax_world that includes medium and paper)
  --data_dir  where datasets are written (default: TFDS's, $TFDS_DATA_DIR or
              ~/tensorflow_datasets)
  --manual_dir  the manual download directory (amazon_scientific; default
              $GR_JAX_AMAZON_DIR, else ../shared/data/amazon_scientific)
  --overwrite delete and rebuild datasets that are already built
  --list      print the builders and their configs

Every name is checked before anything is built. Each built (or already built)
dataset prints one line with its directory and the example count per split. A
user mistake (unknown builder or config, missing manual files, bad data) ends
with one line on stderr, `error: ...`, and exit status 2.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags, logging  # noqa: E402

from gr_jax import errors

DATA_DIR = flags.DEFINE_string(
  "data_dir", None, "TFDS data dir to write to (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)."
)
MANUAL_DIR = flags.DEFINE_string(
  "manual_dir", None, "Manual download directory, for builders that read local files."
)
OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Rebuild datasets that are already built.")
LIST = flags.DEFINE_boolean("list", False, "Print the builders and their configs, then exit.")


class BuildError(Exception):
  """A user mistake: unknown builder or config, missing manual files."""


@dataclasses.dataclass(frozen=True)
class BuilderSpec:
  """One of our TFDS builders and what it needs to build.

  Attributes:
    cls: the GeneratorBasedBuilder subclass (imported, hence registered).
    manual_files: files the manual directory must hold; empty if it needs none.
    default_manual_dir: where the manual files are when --manual_dir is unset.
    manual_env: environment variable that default_manual_dir reads first.
  """

  cls: type
  manual_files: tuple[str, ...] = ()
  default_manual_dir: Callable[[], str] | None = None
  manual_env: str = ""

  @property
  def manual_hint(self) -> str:
    return "pass --manual_dir" + (f" or set ${self.manual_env}" if self.manual_env else "")

  @property
  def name(self) -> str:
    return self.cls.name

  @property
  def config_names(self) -> list[str]:
    return [config.name for config in self.cls.BUILDER_CONFIGS]


def builder_specs() -> dict[str, BuilderSpec]:
  """Our builders by TFDS name; importing their modules registers them with TFDS."""
  from gr_jax.data.amazon import reader as amazon
  from gr_jax.data.tfds import amazon as amazon_tfds
  from gr_jax.data.tfds import world as world_tfds

  specs = [
    BuilderSpec(world_tfds.GrJaxWorld),
    BuilderSpec(
      amazon_tfds.AmazonScientific,
      manual_files=amazon.UnisrecFiles(amazon_tfds.AmazonScientific.DATASET).all,
      default_manual_dir=amazon_tfds.default_manual_dir,
      manual_env=amazon_tfds.MANUAL_DIR_ENV,
    ),
  ]
  return {spec.name: spec for spec in specs}


@dataclasses.dataclass(frozen=True)
class Target:
  """One builder config to build."""

  spec: BuilderSpec
  config: str
  version: str | None = None

  @property
  def name(self) -> str:
    return f"{self.spec.name}/{self.config}" + (f":{self.version}" if self.version else "")


def parse_targets(names: Sequence[str], specs: dict[str, BuilderSpec]) -> list[Target]:
  """Resolves `<builder>[/<config>][:<version>]` names; no config = every config.

  Raises:
    BuildError: no name, an unknown builder or an unknown config (naming the valid ones).
  """
  if not names:
    raise BuildError(
      "no dataset given: name one or more of "
      f"{', '.join(sorted(specs))} (optionally '/<config>'), or pass --list"
    )
  targets = []
  for raw in names:
    name, _, version = raw.partition(":")
    builder, _, config = name.partition("/")
    if builder not in specs:
      raise BuildError(f"unknown builder '{builder}' in '{raw}'; known: {', '.join(sorted(specs))}")
    spec = specs[builder]
    if config and config not in spec.config_names:
      raise BuildError(
        f"{builder} has no config '{config}'; valid configs: {', '.join(spec.config_names)}"
      )
    for each in [config] if config else spec.config_names:
      target = Target(spec, each, version or None)
      if target not in targets:
        targets.append(target)
  return targets


def resolve_manual_dir(spec: BuilderSpec, manual_dir: str | None) -> str | None:
  """The manual directory a builder will read, checked to hold its files.

  Raises:
    BuildError: the directory is missing or lacks files (naming path and files).
  """
  if not spec.manual_files:
    return None
  path = os.path.abspath(os.path.expanduser(manual_dir or spec.default_manual_dir()))
  missing = [f for f in spec.manual_files if not os.path.isfile(os.path.join(path, f))]
  if missing:
    if manual_dir:
      where = "--manual_dir"
    elif spec.manual_env and os.environ.get(spec.manual_env):
      where = f"${spec.manual_env}"
    else:
      where = "the default manual dir"
    if not os.path.isdir(path):
      state = "does not exist"
    elif len(missing) == len(spec.manual_files):
      state = "holds none of them"
    else:
      state = f"lacks {', '.join(missing)}"
    raise BuildError(
      f"{spec.name} needs {', '.join(spec.manual_files)} in its manual dir; "
      f"{where} '{path}' {state} ({spec.manual_hint})"
    )
  return path


def make_builder(target: Target, data_dir: str | None, manual_dir: str | None):
  """Instantiates one builder config (nothing is built yet).

  Raises:
    BuildError: TFDS rejects the version or config.
  """
  kwargs = {"config": target.config, "data_dir": data_dir}
  if target.version:
    kwargs["version"] = target.version
  if manual_dir:
    kwargs["manual_dir"] = manual_dir
  try:
    return target.spec.cls(**kwargs)
  except (AssertionError, ValueError) as e:
    raise BuildError(f"{target.name}: {e}") from e


def is_built(builder) -> bool:
  """Whether the builder's version dir holds a finished dataset (quietly, unlike is_prepared)."""
  return os.path.isfile(os.path.join(os.fspath(builder.data_path), "dataset_info.json"))


def split_counts(builder) -> dict[str, int]:
  return {name: split.num_examples for name, split in builder.info.splits.items()}


def build(
  names: Sequence[str],
  data_dir: str | None = None,
  manual_dir: str | None = None,
  overwrite: bool = False,
  echo: Callable[[str], None] = print,
) -> dict[str, dict[str, int]]:
  """Builds the named datasets (all names are checked first).

  Args:
    names: `<builder>[/<config>][:<version>]` dataset names.
    data_dir: TFDS data dir; None = TFDS's default.
    manual_dir: manual download dir for builders that need one.
    overwrite: rebuild datasets that are already built.
    echo: where the one-line report per dataset goes.

  Returns:
    {'<builder>/<config>': {split: num_examples}} per dataset.

  Raises:
    BuildError: a user mistake, found before anything is built.
  """
  import tensorflow_datasets as tfds

  specs = builder_specs()
  data_dir = os.path.abspath(os.path.expanduser(data_dir)) if data_dir else None
  plan = []  # (target, builder, manual dir or None, whether to build)
  for target in parse_targets(names, specs):
    builder = make_builder(target, data_dir, None)
    todo = overwrite or not is_built(builder)
    manual = resolve_manual_dir(target.spec, manual_dir) if todo else None
    if manual:
      builder = make_builder(target, data_dir, manual)
    plan.append((target, builder, manual, todo))
  results = {}
  for target, builder, manual, todo in plan:
    if not todo:
      status = "already built (--overwrite rebuilds)"
    else:
      config = tfds.download.DownloadConfig(manual_dir=manual)
      if overwrite:
        config.download_mode = tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
      start = time.perf_counter()
      builder.download_and_prepare(download_config=config)
      status = f"built in {time.perf_counter() - start:.1f} s"
    counts = split_counts(builder)
    results[f"{target.spec.name}/{target.config}"] = counts
    listed = ", ".join(f"{split}={n}" for split, n in counts.items())
    echo(f"{builder.info.full_name}: {status} -> {builder.data_dir} ({listed})")
  return results


def list_lines() -> list[str]:
  """`--list` output: each builder, its configs and what it needs."""
  lines = []
  for name, spec in sorted(builder_specs().items()):
    need = f"; reads manual files: {spec.manual_hint}" if spec.manual_files else ""
    lines.append(f"{name} (version {spec.cls.VERSION}{need})")
    lines += [f"  {name}/{c.name}: {c.description}" for c in spec.cls.BUILDER_CONFIGS]
  return lines


def main(argv: list[str]) -> None:
  try:
    if LIST.value:
      print("\n".join(list_lines()))
      return
    build(argv[1:], DATA_DIR.value, MANUAL_DIR.value, OVERWRITE.value)
  except (BuildError, errors.DataContractError) as e:  # bad rows name file, row, field
    _fail(str(e).splitlines()[0])  # gin appends an "In call to configurable" line


def _fail(message: str) -> None:
  logging.flush()
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def console_main() -> None:
  flags.FLAGS.set_default("logtostderr", True)
  app.run(main)


if __name__ == "__main__":
  console_main()
