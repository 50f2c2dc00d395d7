"""ALMoST stage 1 at paper scale: four prompted LLaMA-1 setups ranked by the prior.

    launch/tpu_run.sh --name=almost --zone=us-central2-b --accelerator=v4-32 --mount=YOUR_BUCKET -- \
      python -m almost_jax.jobs.comparisons --config=configs/pod/comparisons_llama1.py

The ranking follows the paper as far as it was recovered (UNSURE, see shared/papers/almost.md 1e):
30B Faithful-3shot > 13B HHH-3shot > 7B HHH-3shot > 7B HHH-1shot. Prompt files: give your own
ALMoST-format files (preamble + "-----"-separated Human/Assistant dialogues) or use the shipped
self-written `assistant_detailed.txt` ("faithful") / `assistant_brief.txt` ("HHH"-like).
Paths are on a filesystem every host shares (a gcsfuse mount of the bucket at /gcs/<bucket>).
Each setup decodes tensor-parallel over 4 chips (heads: 32/40/52 all divide by 4) and
data-parallel over the rest: on v4-32 (16 chips) a 30B setup holds ~15 GB of bf16 weights and,
at batch 64, ~12 GB of KV cache per chip.
"""
from ml_collections import ConfigDict

from almost_jax.config_lib import mesh_block, model_block

BUCKET = "/gcs/YOUR_BUCKET"


def setup(preset, template, shots, max_new_tokens):
    return ConfigDict(dict(
        model=model_block(preset, dtype="bfloat16", param_dtype="bfloat16", scan_layers=True),
        params=f"{BUCKET}/models/{preset}-hf", tokenizer=f"{BUCKET}/models/{preset}-hf/tokenizer.model",
        allow_vocab_padding=0, batch_size=64, bucket=128, template=template, n_shots=shots, separator="\n\n-----",
        mesh=mesh_block(data=-1, fsdp=1, tensor=4),
        sampling=ConfigDict(dict(temperature=1.0, top_p=0.9, max_new_tokens=max_new_tokens,
                                 stop_strings=("\n\n-----", "\n\nHuman:")))))


def get_config():
    return ConfigDict(dict(
        workdir=f"{BUCKET}/almost/comparisons", queries=f"{BUCKET}/almost/queries/rm.jsonl",
        max_queries=0, on_error="raise", seed=0,
        setups=ConfigDict(dict(
            llama30b_faithful_3shot=setup("llama1-30b", "assistant_detailed.txt", 3, 768),
            llama13b_hhh_3shot=setup("llama1-13b", "assistant_brief.txt", 3, 384),
            llama7b_hhh_3shot=setup("llama1-7b", "assistant_brief.txt", 3, 384),
            llama7b_hhh_1shot=setup("llama1-7b", "assistant_brief.txt", 1, 384))),
        rubric=("llama30b_faithful_3shot", "llama13b_hhh_3shot", "llama7b_hhh_3shot", "llama7b_hhh_1shot"),
        # The official BAD rules with the official thresholds.
        rules=ConfigDict(dict(min_chars=50, reject_question_or_colon_end=True, reject_well_start=True,
                              require_terminal_punct=True, reject_dont_know=True, reject_human_tag=True,
                              reject_image_tag=True)),
    ))
