"""A small, real regression task: the trainer's smoke test and worked example.

A two-layer MLP learns a fixed random teacher network on Gaussian inputs. Its
weights carry logical axis names, so on a (data, model) mesh the hidden layer
is tensor-parallel and the batch data-parallel, exactly like the generator.
"""

from __future__ import annotations

import flax.linen as nn
import gin
import jax.numpy as jnp
import numpy as np


class Mlp(nn.Module):
  hidden_dim: int
  out_dim: int

  @nn.compact
  def __call__(self, x):  # [batch, in]
    w1 = self.param(
      "w1",
      nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp")),
      (x.shape[-1], self.hidden_dim),
    )
    w2 = self.param(
      "w2",
      nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("mlp", "embed")),
      (self.hidden_dim, self.out_dim),
    )
    h = nn.gelu(x @ w1)  # [batch, hidden]
    h = nn.with_logical_constraint(h, ("batch", "mlp"))
    return h @ w2  # [batch, out]


@gin.configurable
class RegressionTask:
  """MSE regression of `Mlp` onto a teacher; implements the TrainTask protocol."""

  def __init__(self, in_dim: int = 16, hidden_dim: int = 64, out_dim: int = 8):
    self.in_dim, self.out_dim = in_dim, out_dim
    self.model = Mlp(hidden_dim, out_dim)

  def init(self, rng, batch):
    return self.model.init(rng, jnp.asarray(batch["x"]))

  def loss(self, variables, batch, rng):
    del rng
    pred = self.model.apply(variables, batch["x"])  # [batch, out]
    mse = jnp.mean((pred - batch["y"]) ** 2)
    return mse, ({"mse": mse}, {})


@gin.configurable
def regression_batches(batch_size: int = 32, in_dim: int = 16, out_dim: int = 8, seed: int = 0):
  """Step-indexed batches from a fixed teacher: batch `step` is always the same."""
  teacher = np.random.default_rng(seed).normal(size=(in_dim, out_dim)).astype(np.float32)

  def batch_fn(step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, step])
    x = rng.normal(size=(batch_size, in_dim)).astype(np.float32)
    return {"x": x, "y": np.tanh(x @ teacher)}

  return batch_fn
