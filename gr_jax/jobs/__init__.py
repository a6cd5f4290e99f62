"""Jobs a gin file can name with `run.job = @<name>`; importing this registers them."""

from gr_jax.jobs import data, evaluate, example, sft, tokenizer  # noqa: F401
