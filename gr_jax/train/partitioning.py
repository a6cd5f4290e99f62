"""Device mesh and logical-axis rules (t5x style).

Layers name their axes with logical names ('batch', 'embed', 'mlp', ...); one
ordered rule list, kept in gin, maps each logical name to a mesh axis (or to
None = replicated). The first rule that names a logical axis wins.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "model")

LogicalRules = Sequence[tuple[str, str | tuple[str, ...] | None]]

# Data parallel over ('data', 'fsdp'); parameters fully sharded over 'fsdp' on the
# embedding axis; tensor parallel over 'model' on mlp / heads / vocab.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
  ("batch", ("data", "fsdp")),
  ("embed", "fsdp"),
  ("mlp", "model"),
  ("heads", "model"),
  ("kv", None),
  ("head_dim", None),
  ("vocab", "model"),
  ("length", None),
  ("beam", None),
  ("codebook", None),
  ("latent", None),
  ("levels", None),
  ("items", ("data", "fsdp")),
)


@gin.configurable
def mesh_shape(data: int = -1, fsdp: int = 1, model: int = 1) -> tuple[int, int, int]:
  """Mesh axis sizes; one axis may be -1 to take all remaining devices."""
  sizes = [data, fsdp, model]
  num_devices = jax.device_count()
  if sizes.count(-1) > 1:
    raise ValueError(
      f"mesh_shape: at most one axis may be -1, got data={data} fsdp={fsdp} model={model}"
    )
  known = int(np.prod([s for s in sizes if s != -1]))
  if known <= 0 or num_devices % known:
    raise ValueError(
      f"mesh_shape: data={data} fsdp={fsdp} model={model} does not divide {num_devices} devices"
    )
  sizes = [num_devices // known if s == -1 else s for s in sizes]
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(
      f"mesh_shape: data*fsdp*model = {int(np.prod(sizes))} but there are {num_devices} devices"
    )
  return tuple(sizes)


def make_mesh(shape: tuple[int, int, int] | None = None) -> Mesh:
  """A Mesh with axes ('data', 'fsdp', 'model') (Auto axes), laid out on the topology.

  Without `shape`, the gin-configured `mesh_shape` over all devices; with one, the
  first prod(shape) devices (e.g. (1, 1, 1) for a single-device reference run).
  `jax.make_mesh` orders the devices so that neighbours on each mesh axis are
  neighbours on the interconnect (a ring per axis on TPU), where a reshape of
  `jax.devices()` would follow device ids.
  """
  shape = tuple(shape) if shape is not None else mesh_shape()
  count = int(np.prod(shape))
  if count > jax.device_count():
    raise ValueError(f"mesh shape {shape} needs {count} devices, have {jax.device_count()}")
  # Auto axes: shardings come from the logical rules, as with Mesh(...); make_mesh's
  # default would be Explicit axes.
  return jax.make_mesh(
    shape,
    MESH_AXES,
    axis_types=(AxisType.Auto,) * len(MESH_AXES),
    devices=jax.devices()[:count],
  )


@gin.configurable
def logical_rules(rules: LogicalRules = DEFAULT_RULES) -> tuple:
  """The ordered (logical axis, mesh axis) rule list; override it in gin."""
  return tuple((name, tuple(axis) if isinstance(axis, list) else axis) for name, axis in rules)


def logical_to_sharding(logical_spec_tree, mesh: Mesh, rules: LogicalRules):
  """Tree of logical PartitionSpecs -> tree of NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(logical_spec_tree, mesh, rules)


def batch_sharding(mesh: Mesh, rules: LogicalRules) -> NamedSharding:
  """Sharding of an array whose leading axis is the global batch."""
  spec = nn.logical_to_mesh_axes(("batch",), rules)
  return NamedSharding(mesh, PartitionSpec(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())
