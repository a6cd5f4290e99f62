"""Sequence training of the generator: one causal pass over a user's whole history.

A user's item sequence becomes one token sequence

    BOS, SID(item 1), SID(item 2), ..., SID(item n)      (L SID tokens per item)

left-padded with PAD_ID. Training takes the user's train sequence (the longest train
history plus its target, as SASRec trains: `sasrec_task.training_examples`, so valid and
test targets never enter) and scores every SID token in one forward pass: item k's L
tokens are predicted from BOS and items 1..k-1, item 1's from BOS alone. This is the
generator's counterpart of SASRec's loss at every position.

A request's prompt is BOS + the SIDs of its newest `max_items` history items, so a
constrained beam search over the next L tokens continues a training sequence exactly;
`sequence_prompts` has the signature of `eval.seqrec.seqrec_prompts` and plugs into the
seqrec evaluation. `max_items` follows from the generator's prompt length:
prompt_len = 1 + max_items * L.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from gr_jax.data import schema
from gr_jax.models import decoder, sasrec_task
from gr_jax.models.generator import Generator
from gr_jax.models.token_layout import BOS_ID, PAD_ID, TokenLayout


def prompt_len(max_items: int, layout: TokenLayout) -> int:
  """Prompt tokens of a history of up to `max_items` items: BOS + their SIDs."""
  return 1 + max_items * layout.num_sid_levels


def max_history_items(generator: Generator) -> int:
  """History items a generator's prompt holds (inverse of `prompt_len`)."""
  return (generator.prompt_len - 1) // generator.layout.num_sid_levels


def item_tokens(items: np.ndarray, item_sid: np.ndarray, layout: TokenLayout) -> np.ndarray:
  """Item sequences -> token sequences (module docstring).

  Args:
    items: [R, H] item ids, newest last, left-padded with PAD_ITEM.
    item_sid: [N, L] SID codes.
    layout: token layout.

  Returns:
    [R, 1 + H * L] int32: PAD_ID, then BOS, then each real item's L SID tokens.
  """
  num_rows, width = items.shape
  levels = layout.num_sid_levels
  real = items != schema.PAD_ITEM  # [R, H]
  sids = layout.sid_to_tokens(item_sid[np.maximum(items, 0)]).astype(np.int32)  # [R, H, L]
  sids = np.where(real[..., None], sids, PAD_ID).reshape(num_rows, width * levels)
  tokens = np.concatenate([np.full((num_rows, 1), PAD_ID, np.int32), sids], axis=1)
  # BOS goes right before the first real SID token (the rows are left-padded).
  first = tokens.shape[1] - real.sum(-1) * levels  # [R]
  tokens[np.arange(num_rows), first - 1] = BOS_ID
  return tokens


def training_examples(
  logs: schema.SearchLogs, item_sid: np.ndarray, layout: TokenLayout, max_items: int
) -> dict[str, np.ndarray]:
  """One example per user with train rows: its train sequence of up to max_items + 1 items.

  Returns:
    {'tokens': [U, 1 + (max_items + 1) * L] int32, 'loss_weights': same shape float32
     (1.0 exactly at SID tokens), 'lengths': [U] real tokens, 'user': [U]}.
  """
  users = sasrec_task.training_examples(logs, max_items)
  # inputs = sequence[:-1] left-padded to max_items; the last target completes it.
  sequences = np.concatenate([users["inputs"], users["targets"][:, -1:]], axis=1)
  tokens = item_tokens(sequences, item_sid, layout)
  loss_weights = ((tokens != PAD_ID) & (tokens != BOS_ID)).astype(np.float32)
  return {
    "tokens": tokens,
    "loss_weights": loss_weights,
    "lengths": (tokens != PAD_ID).sum(-1),
    "user": users["user"],
  }


def sequence_prompts(catalog, logs, split: str, item_sid, vocab, generator: Generator):
  """(prompts [R, prompt_len] int32, targets [R]) of one split, in file order.

  The signature of `eval.seqrec.seqrec_prompts` (catalog and vocab are not needed).
  """
  del catalog, vocab
  histories, targets = sasrec_task.split_requests(logs, split, max_history_items(generator))
  return item_tokens(histories, item_sid, generator.layout), targets


def bucket_widths(max_items: int, layout: TokenLayout) -> tuple[int, ...]:
  """Token widths of the length buckets: 4, 8, 16, ... items, then max_items + 1."""
  counts, count = [], 4
  while count < max_items + 1:
    counts.append(count)
    count *= 2
  return tuple(1 + c * layout.num_sid_levels for c in [*counts, max_items + 1])


class SequenceTask:
  """TrainTask of sequence training. Batch: tokens, loss_weights [B, T] (module docstring)."""

  def __init__(self, model_config: decoder.DecoderConfig):
    self.model_config = model_config
    self.model = decoder.Decoder(model_config)

  def init(self, rng, batch):
    return self.model.init(rng, jnp.asarray(batch["tokens"][:1, :-1]))

  def token_losses(self, variables, tokens, dropout_rng=None):
    """[B, T] tokens -> ([B, T-1] cross-entropy of token t+1, [B, T-1] its argmax hit).

    With `dropout_rng` the decoder's dropout (DecoderConfig.dropout) is on.
    """
    rngs = {"dropout": dropout_rng} if dropout_rng is not None else {}
    logits = self.model.apply(variables, tokens[:, :-1], rngs=rngs)  # [B, T-1, V]
    targets = tokens[:, 1:]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return losses, (jnp.argmax(logits, -1) == targets).astype(jnp.float32)

  def loss(self, variables, batch, rng):
    losses, correct = self.token_losses(variables, batch["tokens"], rng)  # [B, T-1] each
    weights = batch["loss_weights"][:, 1:].astype(jnp.float32)  # [B, T-1]
    count = jnp.maximum(jnp.sum(weights), 1.0)
    metrics = {"token_accuracy": jnp.sum(correct * weights) / count, "sid_tokens": count}
    return jnp.sum(losses * weights) / count, (metrics, {})
