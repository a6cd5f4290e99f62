"""gr_jax: generative retrieval for e-commerce search in JAX/Flax.

Install for use: `pip install -r requirements.lock && pip install --no-deps -e .`
(what launch/quickstart.sh does); the pins below are the direct dependencies,
requirements.lock is the full, reproducible set.
"""

import setuptools

INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "numpy==2.4.6",
    "seqio==0.0.20",
    "tensorflow-datasets==4.9.10",
    "gin-config==0.5.0",
    "absl-py==2.5.1",
    "safetensors==0.8.0",
    "tokenizers==0.23.3",
    "sentencepiece==0.2.3",
    "tensorboardX==2.6.5",
    "matplotlib==3.11.2",
    "tqdm==4.70.1",
    "importlib_resources==7.1.0",
]

setuptools.setup(
    name="gr_jax",
    version="0.1.0",
    description=(
        "Generative retrieval for e-commerce search: CQ-SID tokenizer, "
        "decoder-only generator with constrained beam search, EG-GRPO."
    ),
    python_requires="==3.11.*",
    packages=setuptools.find_packages(include=["gr_jax", "gr_jax.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest==9.2.0", "ruff==0.17.6"]},
)
