"""Chat with a checkpoint (default: the mini world's PPO policy). Greedy by default; for sampled
replies set --config.sampling.temperature=0.7 --config.sampling.top_p=0.9."""
from ml_collections import ConfigDict

from almost_jax.config_lib import model_block, tokenizer_fields


def get_config():
    return ConfigDict(dict(
        # params: an almost_jax params dir or a Hugging Face checkpoint dir, which then also gives the
        # architecture and tokenizer (unless model.hf_path / tokenizer are set on the command line too).
        model=model_block(preset="mini-s"), params="work_dir/mini/ppo/params",
        **tokenizer_fields("work_dir/mini/world/tokenizer.model"),
        batch_size=1, bucket=64, seed=0,
        # A few-shot prompt file (almost_jax/data/prompts or a path) for a vanilla model; 0 shots = plain chat.
        template="", n_shots=0,
        # best_of_n > 1: each reply is the reward model's pick of best_of_n samples (needs a temperature > 0);
        # reward_model: the directory train_rm wrote (params/ + rm_contract.json), e.g. work_dir/mini/reward/rm.
        best_of_n=1, reward_model="",
        sampling=ConfigDict(dict(temperature=0.0, top_p=1.0, max_new_tokens=128,
                                 stop_strings=("\n\nHuman:", "\n\n-----"))),
    ))
