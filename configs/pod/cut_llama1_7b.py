"""CUT at paper scale: LLaMA-1 7B from the ALMoST SFT policy on (instruction, response, judgment)
triples (e.g. Shepherd-style critiques, or a prompted judge's critiques of the policy's replies:
data.train, JudgmentRecord jsonl). Offline-setting values from the CUT README: lambda 1.2, alpha 0.5;
lr 4e-4 was tuned for LoRA (MLP only), so full fine-tuning here uses 2e-5, the SFT recipe's.

    launch/tpu_run.sh --name=almost --zone=us-central2-b --accelerator=v4-32 --mount=YOUR_BUCKET -- \\
      python -m almost_jax.jobs.cut --config=configs/pod/cut_llama1_7b.py
"""
from almost_jax.jobs.preference_config import cut_config

BUCKET = "/gcs/YOUR_BUCKET"


def get_config():
    cfg = cut_config("llama1-7b", batch_size=8)
    cfg.workdir = f"{BUCKET}/almost/cut_7b"
    cfg.init_from = f"{BUCKET}/almost/sft_7b/hf"
    cfg.data.train = f"{BUCKET}/almost/cut/judgments.jsonl"
    cfg.data.tokenizer = f"{BUCKET}/models/llama1-7b-hf/tokenizer.model"
    cfg.cut.threshold, cfg.cut.alpha = 1.2, 0.5
    cfg.optimizer.lr = 2e-5
    cfg.model.dtype = "bfloat16"
    cfg.model.remat = True
    return cfg
