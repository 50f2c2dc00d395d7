"""The whole ALMoST pipeline on the CPU mini world: the project's embedded default.

    python -m almost_jax.pipeline --config=configs/mini.py

Budget: 2 CPU cores, <= 30 minutes end to end. Every block can be overridden, e.g.
`--config.family.S.steps=200` for a quick smoke run.

The related methods are optional stages, run when named in `methods` (their blocks are at the end):
    python -m almost_jax.pipeline --config=configs/mini.py --config.methods="('best_of_n','expert_iteration')"
configs/mini_methods.py enables every one.
"""
from ml_collections import ConfigDict

from almost_jax.config_lib import distributed_block, mesh_block, model_block, optimizer_block, train_block
from almost_jax.jobs.preference_config import add_preference_blocks
from almost_jax.jobs.reward_config import reward_config
from almost_jax.jobs.sft_config import sft_config

FAMILIES = ("add", "sort", "upper", "capital", "harmful")
STOPS = ("\n\nHuman:", "\n\n-----")


def get_config() -> ConfigDict:
    cfg = ConfigDict()
    cfg.workdir = "work_dir/mini"
    # A finished run whose stages with the same chain hash are linked instead of rerun (e.g. the
    # control, configs/mini_control.py, reuses this run's world ... comparisons); "" = none.
    cfg.reuse_from = ""
    cfg.mesh = mesh_block()
    cfg.distributed = distributed_block()

    # 1. The world: corpus + tokenizer + held-out evaluation tasks (see almost_jax/miniworld).
    #    Addition is one-digit only: with two-digit operands no family member learned it (every model
    #    scored 0.08-0.17, issue 14), so its pairs were noise. 200 held-out tasks per family (1000 in
    #    all) give per-family 95% CIs of about +-0.05 on scores in [0, 1]. 100k documents (5.7M
    #    tokens) so that L, the longest-trained member, sees each document about once. 40% sloppy
    #    documents and 15% filler are the feasibility probe's values (miniworld_probe.md); every
    #    sloppy demonstration draws one of the five failure modes with equal weight. Half the task
    #    documents open with a header naming their source, and clean and sloppy sources differ
    #    (miniworld/corpus.py: the models are too small to tell quality from content alone).
    cfg.world = ConfigDict(dict(
        seed=0, n_docs=100000, vocab_size=512, families=FAMILIES, eval_per_family=200, seed_queries_per_family=40,
        corpus=ConfigDict(dict(filler_fraction=0.15, sloppy_fraction=0.4, failure_weights=(1, 1, 1, 1, 1))),
    ))

    # 2. The family of vanilla models (ALMoST's "larger > smaller" prior). As in real families, a
    #    bigger member has more capacity AND more training (steps, at 32 x 128 tokens each), so the
    #    prior holds by construction; family_eval checks it per family. Measured on 2 quiet cores
    #    (2026-11-27): 0.17 / 0.37 / 0.59 s per step for S / M / L; the former 400 / 600 / 1500 took
    #    1216 s, two thirds of the 30-minute budget, so the ladder is 300 / 500 / 900 (673 s).
    cfg.family = ConfigDict(dict(
        S=ConfigDict(dict(preset="mini-s", steps=300)),
        M=ConfigDict(dict(preset="mini-m", steps=500)),
        L=ConfigDict(dict(preset="mini-l", steps=900)),
    ))
    cfg.pretrain = ConfigDict(dict(
        name="pretrain", workdir="", init_from="", model=model_block(preset="mini-s"), mesh=mesh_block(),
        distributed=distributed_block(),
        data=ConfigDict(dict(corpus="", tokenizer="", allow_vocab_padding=0, on_error="raise")),
        optimizer=optimizer_block(lr=3e-3, weight_decay=0.01, schedule="cosine", warmup_ratio=0.05, min_lr_ratio=0.1,
                                  b2=0.98, grad_clip=1.0),
        train=train_block(steps=800, batch_size=32, seq_len=128, log_every=50, checkpoint_every=200),
    ))
    cfg.sampling_batch_size = 100

    # Oracle scores of the vanilla family per family with 95% CIs, and the paired differences L-M,
    # M-S on the same tasks (family_eval.md): the premise of the prior, checked, never tuned on.
    # 3 shots is what setups A-C use; 0 shots is the chat format SFT/PPO policies answer in.
    cfg.family_eval = ConfigDict(dict(
        template="mini_faithful.txt", shots=(0, 3), temperature=1.0, seed=0,
        sampling=ConfigDict(dict(temperature=1.0, top_p=0.9, max_new_tokens=16, stop_strings=STOPS)),
    ))

    # 3. Queries: disjoint sets for the RM comparisons, self-play and RL, built in this order with
    #    every family's share in each (almost_jax/miniworld/query_sets.py; small families' training
    #    instructions are shared out between the sets). 6000 RM queries (24,000 responses, about
    #    12,000 pairs): the most the 30-minute budget holds (9000 took 300 s to sample and 264 s per
    #    RM to train on 2 quiet cores).
    cfg.queries = ConfigDict(dict(seed=100, sets=(("rm", 6000), ("rmsp", 300), ("rl", 300))))

    # 4. Synthetic comparisons: four setups ranked by the ALMoST prior (A > B > C > D):
    #    bigger model > smaller; faithful demonstrations > sloppy ones. A-C differ only in the
    #    member; C and D only in the demonstrations. D's sloppy prompt shows a failure mode
    #    (copying, repetition, chatter, refusing a benign request, complying with a harmful one)
    #    for every family within its first 3 dialogues, so D is sloppy whatever the query's family.
    cfg.comparisons = ConfigDict(dict(
        seed=0,
        setups=ConfigDict(dict(
            A=ConfigDict(dict(member="L", template="mini_faithful.txt", n_shots=3)),
            B=ConfigDict(dict(member="M", template="mini_faithful.txt", n_shots=3)),
            C=ConfigDict(dict(member="S", template="mini_faithful.txt", n_shots=3)),
            D=ConfigDict(dict(member="S", template="mini_plain.txt", n_shots=3)),
        )),
        rubric=("A", "B", "C", "D"),
        sampling=ConfigDict(dict(temperature=1.0, top_p=0.9, max_new_tokens=16, stop_strings=STOPS)),
        # ALMoST's BAD rules, with thresholds for one-line toy answers instead of LLaMA paragraphs.
        rules=ConfigDict(dict(min_chars=1, reject_question_or_colon_end=True, reject_well_start=True,
                              require_terminal_punct=False, reject_dont_know=True, reject_human_tag=True,
                              reject_image_tag=True)),
    ))

    # 5. Reward model: initialised from the largest vanilla model, trained on the synthetic pairs
    #    without ALMoST's length filter. The filter is the ablation: "auto" trains both and the later
    #    stages use whichever is more accurate on the held-out *synthetic* pairs (the oracle never
    #    takes part; both accuracies land in reward/manifest.json and the report's ablation row).
    #    "off" because the two auto runs so far both chose it: synthetic held-out accuracy 0.729
    #    without vs 0.593 with the filter (2026-11-27, this world), 0.800 vs 0.714 (2026-11-26,
    #    the previous world); the filter removes pairs whose better reply is the shorter one, and in
    #    this world short replies are the right ones. Training one RM instead of two saves 230 s.
    #    The ablation: --config.reward_length_filter=auto.
    cfg.reward_init_member = "L"
    cfg.reward_length_filter = "off"  # auto | on | off
    cfg.reward_labels = "synthetic"  # "oracle" only in the marked control, configs/mini_control.py
    cfg.reward = reward_config("mini-l", batch_size=32, seq_len=96, eval_every=0, checkpoint_every=200,
                               log_every=20, progress=False)
    cfg.reward.optimizer.lr = 3e-4
    cfg.reward.optimizer.weight_decay = 0.0
    cfg.reward.train.epochs = 2.0
    cfg.reward.eval_batch_size = 100
    cfg.reward.stats_reference_pairs = 500

    # How policies are scored by the oracle (held-out tasks, zero-shot chat unless a template is given).
    cfg.policy_eval = ConfigDict(dict(
        seed=0, baseline_template="mini_faithful.txt", baseline_shots=3,
        sampling=ConfigDict(dict(temperature=0.0, max_new_tokens=16, stop_strings=STOPS)),
    ))

    # 6. RM-guided self-play: the largest model, prompted with faithful demonstrations, answers;
    #    the RM keeps the best of N; another prompted model plays the user.
    # The stages after the RM (self-play, SFT, PPO) run once per seed; the report pairs them on the
    # same held-out tasks and a claim holds only if every seed agrees with its 95% CI.
    cfg.seeds = (0, 1, 2)
    cfg.rmsp = ConfigDict(dict(
        chunk_size=100, n_candidates=4, max_assistant_turns=3, end_markers=("[END]",),
        assistant_member="L", assistant_template="mini_faithful.txt", assistant_shots=3,
        assistant_sampling=ConfigDict(dict(temperature=1.0, top_p=0.9, max_new_tokens=16, stop_strings=STOPS)),
        user_member="M", user_template="mini_user.txt", user_shots=3,
        user_sampling=ConfigDict(dict(temperature=1.0, top_p=0.9, max_new_tokens=24,
                                      stop_strings=("\n\nAssistant:", "\n\n-----"))),
    ))

    # 7. SFT of the smallest model on the self-play dialogues.
    cfg.sft_member = "S"
    cfg.sft = sft_config("mini-s", batch_size=32, seq_len=128, eval_every=0, checkpoint_every=200, log_every=20,
                         progress=False)
    cfg.sft.optimizer.lr = 1e-3
    cfg.sft.optimizer.warmup_ratio = 0.05
    cfg.sft.train.epochs = 3.0

    # 8. PPO (AlpacaFarm's recipe; batch sizes, lengths and lr scaled to the mini world). The KL is
    #    held by an adaptive controller towards `kl_target_per_reply` nats per 16-token reply (k_beta 1:
    #    the coefficient may move 20% a step, enough to act within 30 steps; AlpacaFarm's 0.1 moves it
    #    at most 1.8x in 30). 20 steps, not 30, for the budget (3 seeds x 30 steps took 155 s).
    #    Replies cut by the length limit lose `missing_eos_penalty` (normalised
    #    reward units). The policy is kept every 2 steps and the report's PPO row is the last kept
    #    step whose own rollouts stayed within `kl_budget` (policies/selected.json). Target, budget
    #    and penalty were set before this config's first run, from the reply length (1 nat over 16
    #    tokens), not from any oracle score; the oracle's curve is logged for the report only.
    cfg.ppo = ConfigDict(dict(
        steps=20, rollout_batch_size=64, step_batch_size=32, ppo_epochs=2, query_len=32, response_len=16,
        temperature=1.0, top_p=1.0, stop_strings=STOPS, kl_coef=0.05, kl_estimator="clamped", kl_controller="adaptive",
        kl_target_per_reply=1.0, kl_k_beta=1.0, missing_eos_penalty=1.0, score_clip=0.0, whiten_rewards=True,
        gamma=1.0, lam=1.0, cliprange=0.2, cliprange_value=0.2, vf_coef=0.1, entropy_coef=0.0, checkpoint_every=10,
        keep_policy_every=2, kl_budget=1.0,
    ))
    cfg.ppo_optimizer = optimizer_block(lr=3e-5, weight_decay=0.0, schedule="constant", warmup_ratio=0.0,
                                        warmup_steps=3, eps=1e-5, grad_clip=1.0)

    # 9. Optional method stages (pipeline/method_stages.py), each from the SFT (RM) policy; none by
    #    default, so the default pipeline stays within its budget. Names: best_of_n, expert_iteration,
    #    rloo, grpo, dpo, dpo_oracle (a control), spa, cut (configs/mini_methods.py enables all).
    cfg.methods = ()
    # Best-of-n on the held-out tasks (AlpacaFarm: temperature 1.0): one pass of max(ns) samples,
    # best-of-n for every n from its first n samples; best-of-1 is a plain sample.
    sampled = ConfigDict(dict(temperature=1.0, top_p=1.0, max_new_tokens=16, stop_strings=STOPS))
    cfg.best_of_n = ConfigDict(dict(ns=(1, 4, 16), seed=0, sampling=sampled))
    # Expert iteration on the RL prompts: best-of-16 (AlpacaFarm's n) -> SFT with the `sft` recipe
    # from the SFT (RM) start, twice (AlpacaFarm scripts one round).
    cfg.expert_iteration = ConfigDict(dict(iterations=2, n=16, finetune_from="start", seed=0,
                                           sampling=ConfigDict(sampled.to_dict())))
    # RLOO / GRPO: the PPO stage's job with the algorithm's defaults, then these keys of its rl block.
    cfg.rloo = ConfigDict(dict(kl_coef=cfg.ppo.kl_coef))  # PPO's coefficient, tuned for 16-token replies
    cfg.grpo = ConfigDict(dict(samples_per_prompt=4))  # 16 prompts x 4 = PPO's 64 replies per step
    # DPO (+ the oracle-labelled control), SPA and CUT: their blocks and how each value was set are
    # in jobs/preference_config.py.
    add_preference_blocks(cfg)
    return cfg
