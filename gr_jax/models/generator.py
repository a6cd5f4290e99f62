"""The trained generator as one object (token layout + model config + prompt length),
and the teacher-forced log-probability of SID sequences under it.

`sequence_log_probs` is the one full-sequence scorer: EG-GRPO's policy ratio and
KL read it, and `token_log_probs` is the per-token rule it shares with
`decoding.sampling` (sampled and teacher-forced numbers agree).
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp

from gr_jax.models import decoder
from gr_jax.models.token_layout import TokenLayout

GENERATOR_FILE = "generator.json"


@dataclasses.dataclass(frozen=True)
class Generator:
  """What defines a trained generator besides its weights."""

  layout: TokenLayout
  model_config: decoder.DecoderConfig
  prompt_len: int

  def to_json(self) -> str:
    return json.dumps(
      {
        "layout": dataclasses.asdict(self.layout),
        "model_config": dataclasses.asdict(self.model_config),
        "prompt_len": self.prompt_len,
      },
      indent=2,
    )

  @classmethod
  def from_json(cls, text: str) -> Generator:
    raw = json.loads(text)
    return cls(
      layout=TokenLayout(**raw["layout"]),
      model_config=decoder.DecoderConfig(**raw["model_config"]),
      prompt_len=int(raw["prompt_len"]),
    )


def token_log_probs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """[..., V] logits, [...] token ids -> [...] float32 full-vocabulary log-probs of the tokens."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # [..., V]
  return jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]


def sequence_log_probs(
  params, generator: Generator, prompts: jax.Array, sids: jax.Array
) -> jax.Array:
  """Teacher-forced log-probs of SIDs after their prompts, in one full causal pass.

  Args:
    params: the generator's parameters.
    generator: its layout and model config.
    prompts: [B, T] left-padded prompt tokens.
    sids: [B, G, L] SID codes per prompt (a group of G candidates, L levels).

  Returns:
    [B, G, L] float32 log p(token | prompt, earlier SID tokens).
  """
  batch_size, num, levels = sids.shape
  tokens = generator.layout.sid_to_tokens(sids.astype(jnp.int32))  # [B, G, L]
  repeated = jnp.repeat(prompts[:, None, :], num, axis=1)  # [B, G, T]
  sequences = jnp.concatenate([repeated, tokens], -1).reshape(batch_size * num, -1)
  logits = decoder.Decoder(generator.model_config).apply(
    {"params": params}, sequences[:, :-1], levels, method=decoder.Decoder.target_logits
  )  # [B*G, L, V]
  picked = token_log_probs(logits, tokens.reshape(-1, levels))  # [B*G, L]
  return picked.reshape(batch_size, num, levels)
