"""gr_jax: generative retrieval for e-commerce search in JAX/Flax.

Shape legend, one letter one meaning across the package, in docstrings and in the
shape comments on array code (`# [B, K, L]`): B batch (requests or examples), K
beams, G group (SIDs sampled or gathered per request), E experts (ground-truth SIDs
added to a group), N items (catalog size), L levels (SID codes per item), T tokens
(sequence length), D features (embedding or feature width), V vocabulary. Other
sizes are spelt out where they appear (e.g. M padded list width, R requests of a
split, C codes of one level).
"""
