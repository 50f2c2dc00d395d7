"""Config blocks of the offline preference jobs (DPO, SPA, CUT), shared by the mini and pod configs,
and `add_preference_blocks(cfg)`: the pipeline config's `dpo`, `spa` and `cut` blocks."""
from __future__ import annotations

from ml_collections import ConfigDict

from almost_jax.config_lib import distributed_block, mesh_block, model_block, optimizer_block, tokenizer_fields, train_block

STOPS = ("\n\nHuman:", "\n\n-----")
# Our own wording of CUT's judgment context (the paper's template is not copied): the reply that
# follows is the one the judgment is about.
CUT_JUDGED_TEMPLATE = "{prompt}\n\nJudgment of the reply: {judgment}"


def dpo_block(loss: str = "sigmoid", beta: float = 0.1, label_smoothing: float = 0.0,
              reference: str = "precomputed") -> ConfigDict:
    """DPO's loss options (peers.md 4): loss sigmoid (DPO) or ipo; label_smoothing = cDPO's assumed
    flip rate (sigmoid only); reference log-probs precomputed once before training or on_the_fly."""
    return ConfigDict(dict(loss=loss, beta=beta, label_smoothing=label_smoothing, reference=reference))


def _pair_job(name: str, preset: str, lr: float, epochs: float, prompt_len: int, response_len: int,
              **train_overrides) -> ConfigDict:
    """What the three jobs share: init weights (the SFT policy), tokenizer, lengths, optimizer, train."""
    cfg = ConfigDict()
    cfg.name = name
    cfg.workdir = f"work_dir/{name}"
    cfg.init_from = ""  # the policy to start from (almost_jax params dir or HF dir); also the reference
    cfg.model = model_block(preset=preset)
    cfg.data = ConfigDict(dict(train="", **tokenizer_fields(), on_error="skip", prompt_len=prompt_len,
                               response_len=response_len))
    cfg.optimizer = optimizer_block(lr=lr, weight_decay=0.0, schedule="cosine", warmup_ratio=0.1)
    train = dict(steps=0, batch_size=64, log_every=10, eval_every=0, checkpoint_every=200)
    train.update(train_overrides)
    cfg.train = train_block(**train)
    del cfg.train["seq_len"]  # lengths are data.prompt_len + data.response_len
    cfg.train.epochs = epochs  # used when train.steps == 0
    cfg.ref_batch_size = 32  # the pass that precomputes reference log-probs
    cfg.mesh = mesh_block()
    cfg.distributed = distributed_block()
    return cfg


def dpo_config(preset: str = "mini-s", **train_overrides) -> ConfigDict:
    """DPO on ComparisonRecord pairs (data.train), from and against `init_from`. Defaults: beta 0.1,
    sigmoid loss, lr 1e-6, cosine, 10% warmup, 64 pairs per step, 1 epoch (TRL / AlpacaFarm /
    SPA recipes, peers.md 4.3)."""
    cfg = _pair_job("dpo", preset, lr=1e-6, epochs=1.0, prompt_len=256, response_len=256, **train_overrides)
    cfg.dpo = dpo_block()
    return cfg


def spa_config(preset: str = "mini-s", **train_overrides) -> ConfigDict:
    """SPA: seed DPO on `data.seed_pairs` (a few human/gold-labelled pairs; `seed_epochs`), then
    `iterations` rounds, each on `prompts_per_iteration` fresh prompts from `data.prompts`: sample
    `samples_per_prompt` replies from the current policy, label by implicit reward against
    `init_from` (the SFT policy), DPO with self-refinement from the current policy with reference =
    the current policy (`iteration_epochs`). Defaults (peers.md 3): K=2, temperature 0.7, beta 0.1,
    lr 5e-7, batch 32, alpha 0.1, 10% quantile, alpha off for the first 20% of steps."""
    cfg = _pair_job("spa", preset, lr=5e-7, epochs=1.0, prompt_len=1024, response_len=300,
                    **{"batch_size": 32, **train_overrides})
    del cfg.train["epochs"]  # seed_epochs / iteration_epochs below
    del cfg.data["train"]
    cfg.data.seed_pairs = ""  # ComparisonRecord jsonl
    cfg.data.prompts = ""  # PromptRecord jsonl, consumed in order, `prompts_per_iteration` per round
    cfg.dpo = dpo_block()
    cfg.spa = ConfigDict(dict(
        iterations=2, prompts_per_iteration=(8000, 20000), samples_per_prompt=2, seed_epochs=3.0, iteration_epochs=1.0,
        alpha=0.1, quantile=0.1, warmup_fraction=0.2, seed=0,
        sampling=ConfigDict(dict(temperature=0.7, top_p=1.0, max_new_tokens=300, stop_strings=STOPS)),
        sampling_batch_size=64,
    ))
    return cfg


def cut_config(preset: str = "mini-s", **train_overrides) -> ConfigDict:
    """CUT on JudgmentRecord triples (data.train; judgment "" = positive): lambda 1.1 and alpha 1.0
    (README, online setting), gamma 0 (the code's constant weight), positives downsampled to 0.25 x
    the negatives, lr 4e-4 (with LoRA in the paper; full fine-tuning here), cosine, 1 epoch."""
    cfg = _pair_job("cut", preset, lr=4e-4, epochs=1.0, prompt_len=1024, response_len=512,
                    **{"batch_size": 8, **train_overrides})
    cfg.optimizer.warmup_ratio = 0.0
    cfg.optimizer.warmup_steps = 100
    cfg.cut = ConfigDict(dict(threshold=1.1, alpha=1.0, gamma=0.0, positive_ratio=0.25, seed=0,
                              judged_template=CUT_JUDGED_TEMPLATE))
    return cfg


def add_preference_blocks(cfg: ConfigDict) -> ConfigDict:
    """The pipeline config's `dpo`, `spa` and `cut` blocks (mini world scale): each stage's method
    options and training budget; pipeline/preference_stages derives the job configs from them."""
    with cfg.unlocked():
        # DPO on the synthetic comparisons (and, as a control, on the same pairs relabelled by the
        # oracle). AlpacaFarm's DPO recipe (beta 0.1, 2 epochs) with its SFT:DPO learning-rate ratio
        # (2e-5 : 1e-6) applied to the mini SFT's 1e-3; max_pairs 0 = every pair.
        cfg.dpo = ConfigDict(dict(
            loss="sigmoid", beta=0.1, label_smoothing=0.0, reference="precomputed",
            lr=5e-5, epochs=2.0, batch_size=32, max_pairs=0, prompt_len=48, response_len=24, seed=0,
        ))
        # SPA, seeded with a few gold-labelled pairs (the oracle's labels on synthetic pairs stand in
        # for SPA's small human-labelled seed), then rounds on fresh RL queries (150 each: the RL set
        # has 300). SPA's recipe: K=2 at temperature 0.7, beta 0.1, alpha 0.1, 10% quantile, 20%
        # warm-up, 3 seed epochs, 1 per round; lr from its SFT:DPO ratio (2e-5 : 5e-7) on the mini 1e-3.
        cfg.spa = ConfigDict(dict(
            seed_pairs=200, iterations=2, prompts_per_iteration=(150, 150), samples_per_prompt=2,
            seed_epochs=3.0, iteration_epochs=1.0, alpha=0.1, quantile=0.1, warmup_fraction=0.2,
            beta=0.1, lr=2.5e-5, batch_size=16, temperature=0.7, max_new_tokens=16, prompt_len=48, response_len=24,
            seed=0,
        ))
        # CUT: judgments of SFT replies on the RL queries come from the oracle's explanation of what
        # is wrong (oracle.critique): the supervision signal CUT is defined to learn from (like a
        # human critique), not an evaluation leak; evaluation is on held-out tasks. lambda 1.1 and
        # alpha 1.0 (README, online setting), gamma 0 (the code); lr a tenth of the mini SFT's.
        cfg.cut = ConfigDict(dict(
            threshold=1.1, alpha=1.0, gamma=0.0, positive_ratio=0.25, samples_per_prompt=2, temperature=1.0,
            lr=1e-4, epochs=2.0, batch_size=16, prompt_len=96, response_len=24, seed=0,
        ))
    return cfg
