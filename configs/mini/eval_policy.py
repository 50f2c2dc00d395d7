"""ALMoST's policy benchmarks on local files: Static HHH (A/B, both orders) and TruthfulQA MC1.

files: Static HHH as published by ALMoST (eval/data/hhh_eval.json) and TruthfulQA
`multiple_choice` validation exported from HF datasets (.json list or .jsonl); format "auto" tells
them apart by content, or set "static_hhh" / "truthfulqa_mc1" for every file.
"""
from ml_collections import ConfigDict

from almost_jax.config_lib import model_block, tokenizer_fields


def get_config():
    return ConfigDict(dict(
        # params: as in chat.py (an HF dir also gives the architecture and tokenizer).
        model=model_block(preset="mini-s"), params="work_dir/mini/ppo/params",
        **tokenizer_fields("work_dir/mini/world/tokenizer.model"),
        files=(), format="auto",
        # Tokens per scored input, left-truncated; 0 = the model's context. ALMoST: 1024 (HHH), 512 (TruthfulQA).
        max_len=1024, batch_size=16, bucket=64, add_bos=True,  # BOS first, when the model uses one
        static_hhh=ConfigDict(dict(prompt="ab_judge.txt", answers=(" A", " B"))),
        # mode: true_false (ALMoST: rank choices by p(" true")) | loglik_sum | loglik_mean.
        truthfulqa=ConfigDict(dict(mode="true_false", prompt="tf_judge.txt", true_text=" true",
                                   loglik_prompt="qa_answer.txt")),
        output="work_dir/mini/eval_policy.json",
    ))
