"""gr_jax: generative retrieval for e-commerce search in JAX/Flax.

Install for use: `pip install -r requirements.lock && pip install --no-deps -e .`
(what launch/quickstart.sh does; GPUs: requirements-cuda12.lock, TPUs:
requirements-tpu.lock). The ranges below are the compatible direct dependencies, for
installing gr_jax into an environment of one's own; the lock files are the exact,
reproducible sets the launchers and CI install.
"""

import setuptools

INSTALL_REQUIRES = [
  # jax 0.11 needs Python >= 3.12.
  "jax>=0.10.2,<0.11",
  "jaxlib>=0.10.2,<0.11",
  "flax>=0.12.8,<0.13",
  "optax>=0.2.8,<0.3",
  "orbax-checkpoint>=0.12.8,<0.13",
  "numpy>=2.4,<3",
  "seqio>=0.0.20,<0.1",
  "tensorflow-datasets>=4.9.10,<5",
  "gin-config>=0.5,<0.6",
  "absl-py>=2.5,<3",
  "safetensors>=0.8,<0.9",
  "tokenizers>=0.23,<0.24",
  "sentencepiece>=0.2.3,<0.3",
  "tensorboardX>=2.6.5,<3",
  "matplotlib>=3.11,<4",
  "tqdm>=4.70,<5",
  "importlib_resources>=7.1,<8",
]

setuptools.setup(
  name="gr_jax",
  version="0.1.0",
  description=(
    "Generative retrieval for e-commerce search: CQ-SID tokenizer, "
    "decoder-only generator with constrained beam search, EG-GRPO."
  ),
  python_requires="==3.11.*",
  # gin_configs/ ships inside the package as gr_jax/gin_configs, where gr_jax/gin_utils.py
  # finds it once installed (a checkout reads the top-level folder itself).
  packages=[*setuptools.find_packages(include=["gr_jax", "gr_jax.*"]), "gr_jax.gin_configs"],
  package_dir={"gr_jax.gin_configs": "gin_configs"},
  package_data={"gr_jax.gin_configs": ["*/*.gin", "*/*.toml"]},
  install_requires=INSTALL_REQUIRES,
  extras_require={
    "test": ["pytest>=9.2,<10", "ruff==0.17.6"],
    "cuda12": ["jax[cuda12]>=0.10.2,<0.11"],
    "tpu": ["jax[tpu]>=0.10.2,<0.11"],
  },
)
