"""ALMoST stage 2 at paper scale: RM-guided self-play. A prompted LLaMA-1 30B plays the assistant
(faithful demonstrations, best of 4 by the 7B synthetic RM), another prompted 30B plays the user;
up to 3 assistant turns (N and the turn limit were not recovered from the paper: defaults).

    launch/tpu_run.sh --name=almost --zone=us-central2-b --accelerator=v4-32 --mount=YOUR_BUCKET -- \
      python -m almost_jax.jobs.rmsp --config=configs/pod/rmsp_llama1.py
"""
from almost_jax.config_lib import mesh_block
from almost_jax.jobs.rmsp import rmsp_config

BUCKET = "/gcs/YOUR_BUCKET"


def get_config():
    cfg = rmsp_config()
    cfg.workdir = f"{BUCKET}/almost/rmsp"
    cfg.queries = f"{BUCKET}/almost/queries/rmsp.jsonl"
    for player, template in ((cfg.assistant, "assistant_detailed.txt"), (cfg.user, "user_simulator.txt")):
        player.model.preset = "llama1-30b"
        player.params = f"{BUCKET}/models/llama1-30b-hf"
        player.tokenizer = f"{BUCKET}/models/llama1-30b-hf/tokenizer.model"
        player.template = template
        with player.unlocked():
            player.mesh = mesh_block(data=-1, fsdp=1, tensor=4)
    cfg.rm.path = f"{BUCKET}/almost/reward_7b"  # params/ + rm_contract.json (architecture, tokenizer, template)
    with cfg.rm.unlocked():
        cfg.rm.mesh = mesh_block(data=-1, fsdp=1, tensor=4)
    return cfg
