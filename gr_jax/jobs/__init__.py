"""Jobs a gin file can name with `run.job = @<name>`; importing this registers them."""

from gr_jax.jobs import (  # noqa: F401
  assign_items,
  compare_seqrec,
  data,
  evaluate,
  example,
  report_seeds,
  rl,
  rl_report,
  sasrec,
  seq_sft,
  seqrec_eval,
  sft,
  tokenizer,
)
