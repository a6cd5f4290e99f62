"""Supervised fine-tuning of the generator: cross-entropy on the target SID tokens only."""

from __future__ import annotations

import gin
import jax.numpy as jnp
import optax

from gr_jax.models import decoder


@gin.configurable
class SftTask:
  """TrainTask of the generator on fixed-layout examples (see data/seqio_tasks.py).

  Batch: tokens [B, P + L] int32 (left-padded prompt, then L SID tokens) and
  loss_weights [B, P + L] (1 exactly on the last L positions).
  """

  def __init__(self, model_config: decoder.DecoderConfig, num_sid_levels: int):
    self.model_config = model_config
    self.num_sid_levels = num_sid_levels
    self.model = decoder.Decoder(model_config)

  def init(self, rng, batch):
    return self.model.init(rng, jnp.asarray(batch["tokens"][:1, :-1]))

  def loss(self, variables, batch, rng):
    del rng
    levels = self.num_sid_levels
    tokens = batch["tokens"]
    inputs = tokens[:, :-1]  # [B, T-1]; the last L inputs predict the L SID tokens
    targets = tokens[:, -levels:]  # [B, L]
    weights = batch["loss_weights"][:, -levels:].astype(jnp.float32)  # [B, L]
    logits = self.model.apply(
      variables, inputs, levels, method=decoder.Decoder.target_logits
    )  # [B, L, V]
    token_loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # [B, L]
    loss = jnp.sum(token_loss * weights) / jnp.maximum(jnp.sum(weights), 1.0)
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)  # [B, L]
    metrics = {
      "token_accuracy": jnp.sum(correct * weights) / jnp.maximum(jnp.sum(weights), 1.0),
      # Teacher-forced exact match of the whole SID.
      "sid_accuracy": jnp.mean(jnp.prod(jnp.where(weights > 0, correct, 1.0), axis=-1)),
      "first_level_accuracy": jnp.mean(correct[:, 0]),
    }
    return loss, (metrics, {})
