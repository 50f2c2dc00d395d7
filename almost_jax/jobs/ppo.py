"""ALMoST stage 3: PPO from synthetic feedback (RLSF), AlpacaFarm's recipe as the default.

    python -m almost_jax.jobs.ppo --config=configs/mini/ppo.py

Four models: policy (from SFT, trained), reference (the same SFT weights, frozen), value (the RM's
trunk with a zero-initialised head, trained) and the reward model (frozen). Each PPO step: sample
`rollout_batch_size` responses from the current policy, score them (RM score normalised with the
RM's saved statistics, per-token KL penalty to the reference), estimate advantages, then run
`ppo_epochs` passes of minibatch updates. Metrics per step go to metrics.jsonl / TensorBoard (the
reward curve to plot); checkpoints every `checkpoint_every` steps make the job resumable.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from almost_jax.checkpoints.load import load_model_params
from almost_jax.checkpoints.orbax_io import Checkpointer, save_params
from almost_jax.config_lib import llama_config
from almost_jax.data import chat
from almost_jax.data.schemas import PromptRecord, load_jsonl
from almost_jax.data.tokenizer import check_vocab, load_tokenizer
from almost_jax.jobs.common import run_job, write_manifest
from almost_jax.learners import ppo_math
from almost_jax.learners.ppo import (make_advantage_fn, make_ppo_loss, make_scoring_fn, ppo_epochs,
                                    rollout_arrays)
from almost_jax.learners.reward import RewardScorer
from almost_jax.models.llama import CausalLM, ScalarHeadModel, abstract_or_init
from almost_jax.parallel import MeshConfig, batch_sharding, logical_shardings, make_mesh, mesh_context, rules_from_config
from almost_jax.parallel.shard import to_global, with_shardings
from almost_jax.sampling import Sampler, SamplingConfig
from almost_jax.train.loop import PreemptionGuard, Preempted
from almost_jax.train.metrics import MetricsWriter
from almost_jax.train.optim import make_optimizer
from almost_jax.train.state import abstract_state, create_sharded_state
from almost_jax.train.step import make_train_step

log = logging.getLogger(__name__)


def gold_scorer(name: str):
    """Evaluation-only score of a rollout (never used for training): the mini world's oracle."""
    if not name:
        return None
    if name != "miniworld":
        raise ValueError(f"gold scorer must be '' or 'miniworld', got {name!r}")
    from almost_jax.miniworld import oracle
    return lambda queries, replies: float(np.mean([oracle.score(q, r) for q, r in zip(queries, replies)]))


def run(cfg: ConfigDict) -> dict:
    out = Path(cfg.workdir)
    pc = cfg.ppo
    tok = load_tokenizer(cfg.tokenizer)
    policy_cfg, rm_cfg = llama_config(cfg.policy_model), llama_config(cfg.rm_model)
    check_vocab(tok, policy_cfg.vocab_size, int(cfg.get("allow_vocab_padding", 0)))
    check_vocab(tok, rm_cfg.vocab_size, int(cfg.get("allow_vocab_padding", 0)))
    policy, value, rm = CausalLM(policy_cfg), ScalarHeadModel(rm_cfg), ScalarHeadModel(rm_cfg)
    prompts = load_jsonl(cfg.prompts, PromptRecord, cfg.on_error)
    stats = json.loads(Path(cfg.rm_stats).read_text()) if cfg.rm_stats else {"mean": 0.0, "std": 1.0}

    mesh = make_mesh(MeshConfig.from_config(cfg.mesh))
    rules = rules_from_config(cfg.mesh.get("rules"))
    boxed = {"policy": abstract_or_init(policy_cfg, jax.random.key(0), "lm"),
             "value": abstract_or_init(rm_cfg, jax.random.key(0), "scalar")}
    p_sh = logical_shardings(boxed, mesh, rules)
    opt_steps = int(pc.steps) * int(pc.ppo_epochs) * (int(pc.rollout_batch_size) // int(pc.step_batch_size))
    tx, schedule = make_optimizer(cfg.optimizer, opt_steps)
    st_sh = logical_shardings(abstract_state(boxed, tx), mesh, rules)
    Q, R = int(pc.query_len), int(pc.response_len)

    with mesh_context(mesh, rules):
        sft = load_model_params(cfg.policy_init, policy_cfg, shardings=p_sh["policy"])
        rm_params = load_model_params(cfg.rm_params, rm_cfg, shardings=p_sh["value"])
        value_init = {"model": rm_params["model"],
                      "score_head": {"kernel": jnp.zeros_like(rm_params["score_head"]["kernel"])}}
        ckpt = Checkpointer(out / "checkpoints", max_to_keep=2)
        if ckpt.latest_step() is not None:
            state, meta = ckpt.restore(with_shardings(abstract_state(boxed, tx), st_sh))
            start, kl_coef = int(meta["ppo_step"]), float(meta["kl_coef"])
            log.info("ppo: resumed at step %d", start)
        else:
            state = create_sharded_state({"policy": sft, "value": value_init}, tx, st_sh, int(cfg.seed))
            start, kl_coef = 0, float(pc.kl_coef)
        ref_params = sft  # frozen copy of the SFT policy
        rollout_keys = ("input_ids", "attention_mask", "response_mask", "old_logp", "old_values", "advantages", "returns")
        b_sh = {k: batch_sharding(mesh, 2) for k in rollout_keys}
        step_fn = make_train_step(make_ppo_loss(policy, value, Q, pc), st_sh, b_sh, schedule)
        scoring = make_scoring_fn(policy, value, Q, float(pc.temperature))
        advantages = make_advantage_fn(pc)
        sampler = Sampler(policy, None, tok, SamplingConfig(temperature=float(pc.temperature), top_p=float(pc.top_p),
                                                             max_new_tokens=R, stop_strings=tuple(pc.stop_strings)),
                          batch_size=int(pc.rollout_batch_size), bucket=Q, max_prompt_len=Q, mesh=mesh, rules=rules)
        scorer = RewardScorer(rm, rm_params, tok, int(cfg.rm_max_len), int(pc.rollout_batch_size), mesh=mesh,
                              rules=rules)
        place = lambda x: to_global(x, batch_sharding(mesh, np.ndim(x)))  # noqa: E731
        gold = gold_scorer(cfg.gold)
        controller = ppo_math.KLController(pc.kl_controller, float(pc.kl_target), float(pc.kl_k_beta))
        writer = MetricsWriter(out)
        rng = np.random.default_rng(int(cfg.seed))
        order = np.concatenate([rng.permutation(len(prompts)) for _ in range(int(pc.steps) * int(pc.rollout_batch_size) // max(len(prompts), 1) + 2)])
        def iteration(step: int, state, kl_coef: float):
            """One PPO step: rollouts from the current policy, scoring, advantages, ppo_epochs updates."""
            batch_prompts = [prompts[i] for i in order[step * int(pc.rollout_batch_size):(step + 1) * int(pc.rollout_batch_size)]]
            queries = [chat.prompt_for_reply([], p.prompt) for p in batch_prompts]
            t0 = time.perf_counter()
            comps = list(sampler.generate(queries, seed=int(cfg.seed) * 100003 + step, progress=False,
                                          params=state.params["policy"]))
            t_roll = time.perf_counter() - t0
            host_arrays = rollout_arrays([sampler.encode(q) for q in queries], [c.token_ids for c in comps], Q, R,
                                         tok.pad_id)
            arrays = {k: place(v) for k, v in host_arrays.items()}
            t_score = time.perf_counter()
            replies = [chat.extract_reply(c.text) for c in comps]
            raw_scores = scorer.score([f"\n\nHuman: {p.prompt}" for p in batch_prompts], replies)
            scores = ppo_math.normalize_scores(raw_scores, stats["mean"], stats["std"])
            old_logp, ref_logp, old_values = scoring(state.params["policy"], ref_params, state.params["value"], arrays)
            adv, ret, adv_m = advantages(place(scores), old_logp, ref_logp, old_values, arrays["response_mask"], kl_coef)
            rollout = {**arrays, "old_logp": old_logp, "old_values": old_values, "advantages": adv, "returns": ret}
            jax.block_until_ready(adv)
            t1 = time.perf_counter()
            state, train_m = ppo_epochs(step_fn, state, rollout, int(pc.step_batch_size), int(pc.ppo_epochs),
                                        (int(cfg.seed), step), place)
            jax.block_until_ready(state.params)
            t_train = time.perf_counter() - t1
            kl_value = float(adv_m["kl"])
            n_tokens = float(host_arrays["response_mask"].sum())
            metrics = {"reward": float(np.mean(raw_scores)), "reward_normalized": float(np.mean(scores)),
                       "kl": kl_value, "kl_coef": kl_coef, "response_length": n_tokens / len(queries),
                       "rollout_tokens_per_s": n_tokens / t_roll, "time_rollout_s": t_roll,
                       "time_scoring_s": t1 - t_score, "time_train_s": t_train,
                       "train_tokens_per_s": n_tokens * int(pc.ppo_epochs) / t_train,
                       **{k: float(np.mean([float(x[k]) for x in train_m])) for k in train_m[0]}}
            if gold is not None:
                metrics["gold_score"] = gold([p.prompt for p in batch_prompts], replies)
            return state, controller.update(kl_coef, kl_value, n_steps=len(queries)), metrics

        metrics = {}
        try:
            with PreemptionGuard() as guard:
                for step in range(start, int(pc.steps)):
                    state, kl_coef, metrics = iteration(step, state, kl_coef)
                    writer.write(step + 1, metrics, prefix="ppo/")
                    log.info("ppo step %d/%d %s", step + 1, pc.steps,
                             " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
                    stop = guard.requested(ckpt, step + 1)
                    if stop or (step + 1) % int(pc.checkpoint_every) == 0 or step + 1 == int(pc.steps):
                        ckpt.save(step + 1, state, meta={"ppo_step": step + 1, "kl_coef": kl_coef}, force=True)
                    if stop:
                        raise Preempted(f"ppo stopped at step {step + 1} after a termination signal; checkpoint saved")
        finally:
            ckpt.close()
            writer.close()
    save_params(out / "params", state.params["policy"])
    summary = {"steps": int(pc.steps), **{f"final_{k}": v for k, v in metrics.items()
                                          if k in ("reward", "kl", "gold_score", "entropy")}}
    write_manifest(out / "manifest.json", cfg, **summary)
    return summary


def ppo_config() -> ConfigDict:
    """AlpacaFarm's PPO (ALMoST's own values were not published): kl 0.0067 fixed, clamped KL
    estimator, gamma 1, lambda 1, clip 0.2/0.2, vf_coef 0.1, 2 epochs, lr 1e-5 (adam eps 1e-5),
    reward and advantage whitening, rollout 512 / step 256, query 192 / response 300 tokens."""
    from almost_jax.config_lib import distributed_block, mesh_block, model_block, optimizer_block
    return ConfigDict(dict(
        workdir="work_dir/ppo", seed=0, prompts="", on_error="raise", tokenizer="", allow_vocab_padding=0,
        policy_model=model_block("llama1-7b"), rm_model=model_block("llama1-7b"),
        policy_init="", rm_params="", rm_stats="", rm_max_len=1024, gold="",
        ppo=ConfigDict(dict(
            steps=100, rollout_batch_size=512, step_batch_size=256, ppo_epochs=2, query_len=192, response_len=300,
            temperature=1.0, top_p=1.0, stop_strings=("\n\nHuman:",),
            kl_coef=0.0067, kl_estimator="clamped", kl_controller="fixed", kl_target=6.0, kl_k_beta=0.1,
            score_clip=0.0, whiten_rewards=True, gamma=1.0, lam=1.0, cliprange=0.2, cliprange_value=0.2,
            vf_coef=0.1, entropy_coef=0.0, checkpoint_every=20)),
        optimizer=optimizer_block(lr=1e-5, weight_decay=0.0, schedule="linear", warmup_ratio=0.0, warmup_steps=5,
                                  eps=1e-5, grad_clip=1.0),
        mesh=mesh_block(), distributed=distributed_block()))


if __name__ == "__main__":
    run_job(run)
