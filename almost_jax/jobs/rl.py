"""On-policy RL from a reward model: PPO (ALMoST stage 3, AlpacaFarm's recipe), RLOO or GRPO.

    python -m almost_jax.jobs.rl --config=configs/mini/ppo.py      # or configs/mini/rloo.py, grpo.py
    python -m almost_jax.jobs.rl --config=configs/mini/grpo.py --config.rl.kl_coef=0.1

Models: the policy (from `policy_init`, trained), the reference (the same weights, frozen), the
reward model (`rm_path`: the directory train_rm wrote, read with its scoring contract; frozen) and,
for PPO only, a value model (the RM's trunk with a zero-initialised head, trained). Each step is one
iteration of learners/rl.py (sample -> score -> advantages -> `ppo_epochs` minibatch passes) run by
train/loop.run_loop, so checkpoints, preemption and metrics are those of every other trainer.

The algorithm's own defaults come with its config (`rl_config(algorithm)`, `configs/*/<algorithm>.py`);
changing only `--config.rl.algorithm` keeps every other value as given. With
`kl_controller="fixed"`, `rl.kl_coef` is the coefficient used, also after a resume; an adaptive
controller's coefficient is state, checkpointed and resumed.

Outputs in workdir: params/ (final policy), checkpoints/, metrics.jsonl (`rl/...`) + TensorBoard,
with `keep_policy_every` policies/step_N + policies/index.json (each kept policy's KL per reply and RM
reward on its own rollouts) and, with `kl_budget`, policies/selected.json; manifest.json.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from almost_jax.checkpoints.load import load_model_params
from almost_jax.checkpoints.orbax_io import save_params
from almost_jax.checkpoints.source import resolve
from almost_jax.data.rm_data import RewardContract
from almost_jax.data.schemas import PromptRecord, load_jsonl, write_json_atomic
from almost_jax.jobs.common import run_job, write_manifest
from almost_jax.learners import rl
from almost_jax.learners.reward import contract_dir, load_reward_model, model_config
from almost_jax.models.llama import CausalLM, ScalarHeadModel, abstract_or_init
from almost_jax.parallel import batch_sharding, mesh_context
from almost_jax.parallel.shard import to_global
from almost_jax.sampling import Sampler, SamplingConfig
from almost_jax.train.loop import LoopConfig, run_loop
from almost_jax.train.metrics import MetricsWriter
from almost_jax.train.setup import build_setup
from almost_jax.train.step import make_train_step

log = logging.getLogger(__name__)

# What differs between the algorithms; everything else in `rl` is shared (facts: peers.md 1, 4b).
ALGORITHM_DEFAULTS = {
    # AlpacaFarm: 2 epochs, kl 0.0067 fixed on the clamped per-token KL
    "ppo": dict(samples_per_prompt=1, ppo_epochs=2, kl_coef=0.0067, kl_estimator="clamped"),
    # RLOO: k in {2, 4}; r_i = RM_i - beta * log(pi/pi_ref)(y_i), the k1 KL summed over the reply.
    # beta is not from the paper: PPO's, so the two are comparable.
    "rloo": dict(samples_per_prompt=4, ppo_epochs=1, kl_coef=0.0067, kl_estimator="kl"),
    # GRPO: beta 0.04 on the k3 estimator, one pass per rollout; G = 64 in the paper, 8 here
    "grpo": dict(samples_per_prompt=8, ppo_epochs=1, kl_coef=0.04, kl_estimator="k3"),
}


def use_algorithm(cfg: ConfigDict, algorithm: str) -> ConfigDict:
    """Switch a job config to `algorithm` with that algorithm's defaults."""
    if algorithm not in ALGORITHM_DEFAULTS:
        raise ValueError(f"algorithm must be one of {sorted(ALGORITHM_DEFAULTS)}, got {algorithm!r}")
    cfg.rl.algorithm = algorithm
    cfg.rl.update(ALGORITHM_DEFAULTS[algorithm])
    return cfg


def gold_scorer(name: str) -> Optional[Callable]:
    """Evaluation-only score of a rollout (never used for training or selection): the mini world's oracle."""
    if not name:
        return None
    if name != "miniworld":
        raise ValueError(f"gold scorer must be '' or 'miniworld', got {name!r}")
    from almost_jax.miniworld import oracle
    return lambda queries, replies: float(np.mean([oracle.score(q, r) for q, r in zip(queries, replies)]))


def prompt_batches(prompts: list[PromptRecord], per_step: int, steps: int, seed: int):
    """step -> (step, that step's queries): shuffled passes over the prompts, a pure function of the step."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(prompts)) for _ in range(steps * per_step // len(prompts) + 2)])
    return lambda step: (step, [prompts[i].prompt for i in order[step * per_step:(step + 1) * per_step]])


def with_policy_snapshots(step_fn, directory: Path, every: int):
    """Every `every` steps keep the policy that step N starts from as directory/step_N, and record in
    directory/index.json the KL per reply and RM reward of step N's rollouts, which that very policy
    sampled: what a rule (e.g. `kl_budget`) picks a step by. Replayed steps rewrite the same entries."""
    if every <= 0:
        return step_fn

    def snapshot_step(state, item):
        step = item[0]
        keep = step > 0 and step % every == 0
        if keep:
            save_params(directory / f"step_{step}", state.params["policy"])
        state, metrics = step_fn(state, item)
        if keep and jax.process_index() == 0:
            index = read_index(directory)
            index[str(step)] = {k: metrics[k] for k in ("kl", "reward", "reward_normalized") if k in metrics}
            write_json_atomic(directory / "index.json", index)
        return state, metrics

    return snapshot_step


def read_index(directory: Path) -> dict:
    path = directory / "index.json"
    return json.loads(path.read_text()) if path.exists() else {}


def select_by_kl_budget(directory: Path, kl_budget: float) -> Optional[dict]:
    """The last kept policy whose KL per reply is within `kl_budget` (written to selected.json), or None."""
    within = [(int(s), row) for s, row in read_index(directory).items() if row["kl"] <= kl_budget]
    if not within:
        log.warning("no kept policy within kl_budget=%g nats per reply", kl_budget)
        return None
    step, row = max(within, key=lambda x: x[0])
    selected = {"step": step, "params": str(directory / f"step_{step}"), "kl_budget": kl_budget, **row}
    if jax.process_index() == 0:
        write_json_atomic(directory / "selected.json", selected)
    return selected


def trained_params(policy_cfg, value_cfg=None) -> dict:
    """Abstract (boxed) params of what the job trains: the policy, and the value model if there is one."""
    boxed = {"policy": abstract_or_init(policy_cfg, jax.random.key(0), "lm")}
    if value_cfg is not None:
        boxed["value"] = abstract_or_init(value_cfg, jax.random.key(0), "scalar")
    return boxed


def run(cfg: ConfigDict) -> dict:
    out = Path(cfg.workdir)
    rc = cfg.rl
    alg = rl.algorithm(rc)
    k, batch = int(rc.samples_per_prompt), int(rc.rollout_batch_size)
    Q, R = int(rc.query_len), int(rc.response_len)
    src = resolve(cfg, "policy_init")  # an HF policy_init gives the architecture and tokenizer too
    tok, policy_cfg = src.tokenizer, src.model
    prompts = load_jsonl(cfg.prompts, PromptRecord, cfg.on_error)
    if not prompts:
        raise ValueError(f"no prompts in {cfg.prompts}")
    rm_dir = contract_dir(cfg.rm_path)
    value_cfg = model_config(RewardContract.load(rm_dir), rm_dir) if alg.value_model else None  # the RM's architecture
    boxed = trained_params(policy_cfg, value_cfg)
    updates_per_step = int(rc.ppo_epochs) * (batch // int(rc.step_batch_size))
    setup = build_setup(cfg, boxed, out, int(rc.steps) * updates_per_step, extra={"kl_coef": float(rc.kl_coef)})
    policy = CausalLM(policy_cfg)

    with mesh_context(setup.mesh, setup.rules):
        sft = load_model_params(src.params, policy_cfg, shardings=setup.param_shardings["policy"])
        scorer = load_reward_model(rm_dir, setup.mesh, setup.rules, batch_size=batch)
        init = {"policy": sft}
        value = None
        if alg.value_model:
            value = ScalarHeadModel(scorer.model.cfg)
            head = scorer.params["score_head"]["kernel"]
            init["value"] = {"model": scorer.params["model"], "score_head": {"kernel": jnp.zeros_like(head)}}
        state, meta = setup.restore_or_create(init, int(cfg.seed), rc.algorithm)
        if rc.kl_controller == "fixed":  # the configured coefficient, never a checkpoint's
            state = state.replace(extra={**state.extra, "kl_coef": to_global(np.float32(rc.kl_coef),
                                                                             setup.shardings.extra["kl_coef"])})
        elif meta:
            log.info("adaptive KL controller resumes at kl_coef=%.5g", float(jax.device_get(state.extra["kl_coef"])))

        sampler = Sampler(policy, None, tok, SamplingConfig(temperature=float(rc.temperature), top_p=float(rc.top_p),
                                                             max_new_tokens=R, n=k, stop_strings=tuple(rc.stop_strings)),
                          batch_size=batch // k, bucket=Q, max_prompt_len=Q, mesh=setup.mesh, rules=setup.rules)
        place = lambda x: to_global(x, batch_sharding(setup.mesh, np.ndim(x)))  # noqa: E731
        batch_sh = {key: batch_sharding(setup.mesh, 1 if key == "kl_coef" else 2) for key in rl.rollout_keys(rc)}
        train_step = make_train_step(rl.make_rl_loss(policy, value, Q, rc, tok.vocab_size), setup.shardings, batch_sh,
                                     setup.schedule)
        step_fn = rl.make_rl_step(rc, int(cfg.seed), tok, policy, value, sampler, scorer, sft, train_step, place,
                                  setup.shardings.extra, gold_scorer(cfg.gold))
        step_fn = with_policy_snapshots(step_fn, out / "policies", int(rc.keep_policy_every))
        loop = LoopConfig(total_steps=int(rc.steps), log_every=1, checkpoint_every=int(rc.checkpoint_every),
                          progress=bool(rc.progress))
        writer = MetricsWriter(out)
        try:
            state, metrics = run_loop(state, step_fn, prompt_batches(prompts, batch // k, int(rc.steps), int(cfg.seed)),
                                      setup.mesh, loop, setup.checkpointer, writer, desc=rc.algorithm,
                                      start=int(meta.get("data_step", 0)), place=lambda item: item, prefix="rl/")
        finally:
            writer.close()
            setup.checkpointer.close()
    save_params(out / "params", state.params["policy"])
    summary = {"algorithm": rc.algorithm, "steps": int(rc.steps),
               **{f"final_{key}": v for key, v in metrics.items() if key in ("reward", "kl", "gold_score", "entropy")}}
    if float(rc.kl_budget) > 0:
        selected = select_by_kl_budget(out / "policies", float(rc.kl_budget))
        summary["selected_step"] = selected["step"] if selected else None
    write_manifest(out / "manifest.json", cfg, **summary)
    return summary


def rl_config(algorithm: str = "ppo") -> ConfigDict:
    """The RL job at paper scale; `algorithm` sets ALGORITHM_DEFAULTS. PPO is AlpacaFarm's (ALMoST's
    own values were not published): kl 0.0067 fixed, clamped KL estimator, gamma 1, lambda 1, clip
    0.2/0.2, vf_coef 0.1, 2 epochs, lr 1e-5 (adam eps 1e-5), reward and advantage whitening, rollout
    512 / step 256, query 192 / response 300 tokens.

    rl block: algorithm (ppo | rloo | grpo); steps (iterations); rollout_batch_size (replies per
    iteration = prompts x samples_per_prompt); step_batch_size (replies per optimizer update);
    ppo_epochs; query_len / response_len (tokens); temperature, top_p, stop_strings (sampling);
    kl_coef, kl_estimator (kl | abs | mse | k3 | clamped), kl_controller (fixed | adaptive),
    kl_target_per_reply (nats per reply), kl_k_beta; missing_eos_penalty (subtracted from the
    normalised score of a reply cut by the length limit, 0 = off); score_clip; PPO only:
    whiten_rewards, gamma, lam, cliprange_value, vf_coef; cliprange (all); entropy_coef;
    GRPO only: grpo_std_normalize, grpo_length_normalize (both False = Dr. GRPO);
    checkpoint_every; keep_policy_every (0 = off) and kl_budget (nats per reply, 0 = off);
    progress (a tqdm bar instead of one log line per step)."""
    from almost_jax.config_lib import distributed_block, mesh_block, model_block, optimizer_block, tokenizer_fields
    cfg = ConfigDict(dict(
        workdir=f"work_dir/{algorithm}", seed=0, prompts="", on_error="raise", **tokenizer_fields(),
        policy_model=model_block("llama1-7b"), policy_init="", rm_path="", gold="",
        rl=ConfigDict(dict(
            algorithm="ppo", steps=100, rollout_batch_size=512, step_batch_size=256, ppo_epochs=2,
            samples_per_prompt=1, query_len=192, response_len=300, temperature=1.0, top_p=1.0,
            stop_strings=("\n\nHuman:",), kl_coef=0.0067, kl_estimator="clamped", kl_controller="fixed",
            kl_target_per_reply=6.0, kl_k_beta=0.1, missing_eos_penalty=0.0, score_clip=0.0, whiten_rewards=True,
            gamma=1.0, lam=1.0, cliprange=0.2, cliprange_value=0.2, vf_coef=0.1, entropy_coef=0.0,
            grpo_std_normalize=True, grpo_length_normalize=True, checkpoint_every=20, keep_policy_every=0,
            kl_budget=0.0, progress=False)),
        optimizer=optimizer_block(lr=1e-5, weight_decay=0.0, schedule="linear", warmup_ratio=0.0, warmup_steps=5,
                                  eps=1e-5, grad_clip=1.0),
        mesh=mesh_block(), distributed=distributed_block()))
    return use_algorithm(cfg, algorithm)


if __name__ == "__main__":
    run_job(run)
