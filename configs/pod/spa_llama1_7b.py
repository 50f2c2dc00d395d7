"""SPA at paper scale: LLaMA-1 7B from the ALMoST SFT policy: DPO on a small labelled seed (SPA: 2K
pairs, 3 epochs), then 2 rounds of self-labelled pairs on fresh prompts (8K, then 20K; K=2 replies
at temperature 0.7, up to 300 tokens), beta 0.1, lr 5e-7, 32 pairs per step (peers.md 3.3).

    launch/tpu_run.sh --name=almost --zone=us-central2-b --accelerator=v4-32 --mount=YOUR_BUCKET -- \\
      python -m almost_jax.jobs.spa --config=configs/pod/spa_llama1_7b.py
"""
from almost_jax.jobs.preference_config import spa_config

BUCKET = "/gcs/YOUR_BUCKET"


def get_config():
    cfg = spa_config("llama1-7b")
    cfg.workdir = f"{BUCKET}/almost/spa_7b"
    cfg.init_from = f"{BUCKET}/almost/sft_7b/hf"
    cfg.data.seed_pairs = f"{BUCKET}/almost/spa/seed_pairs.jsonl"  # a small human-labelled set
    cfg.data.prompts = f"{BUCKET}/almost/queries/spa_prompts.jsonl"  # >= 28K unlabelled prompts
    cfg.data.tokenizer = f"{BUCKET}/models/llama1-7b-hf/tokenizer.model"
    cfg.model.dtype = "bfloat16"
    cfg.model.remat = True
    return cfg
