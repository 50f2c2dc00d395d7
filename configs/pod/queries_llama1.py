"""ALMoST stage 1a at paper scale: self-instruct queries from a vanilla LLaMA-1 (10-shot, T=1.2,
top-p 0.9, 64 new tokens, ROUGE-L < 0.5 to every kept query: the official code's values). Which
model wrote the paper's queries was not recovered; 30B is this config's choice.

    launch/tpu_run.sh --name=almost --zone=us-central2-b --accelerator=v4-32 --mount=YOUR_BUCKET -- \
      python -m almost_jax.jobs.queries --config=configs/pod/queries_llama1.py --config.output=/gcs/YOUR_BUCKET/almost/queries/rl.jsonl
"""
from almost_jax.config_lib import mesh_block
from almost_jax.jobs.queries import queries_config

BUCKET = "/gcs/YOUR_BUCKET"


def get_config():
    cfg = queries_config("self_instruct")
    cfg.output = f"{BUCKET}/almost/queries/rm.jsonl"
    cfg.num_queries = 10000
    g = cfg.generator
    g.model.preset = "llama1-30b"
    g.model.scan_layers = True
    g.params = f"{BUCKET}/models/llama1-30b-hf"
    g.tokenizer = f"{BUCKET}/models/llama1-30b-hf/tokenizer.model"
    g.batch_size = 64
    with g.unlocked():
        g.mesh = mesh_block(data=-1, fsdp=1, tensor=4)
    return cfg
