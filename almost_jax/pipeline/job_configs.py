"""The pipeline config -> each job's own config: where every stage reads and writes, and which
model, weights, tokenizer and sampling it uses. `configs/mini/<job>.py` call these too, so a
single stage rerun alone sees exactly the config the pipeline gives it."""
from __future__ import annotations

import copy
from pathlib import Path

from ml_collections import ConfigDict

from almost_jax.config_lib import model_block


def world_paths(workdir_root: Path) -> dict[str, Path]:
    w = workdir_root / "world"
    return {"corpus": w / "corpus.jsonl", "tokenizer": w / "tokenizer.model", "eval_tasks": w / "eval_tasks.jsonl",
            "seed_queries": w / "seed_queries.jsonl"}


def family_params(workdir_root: Path, member: str) -> Path:
    return workdir_root / "pretrain" / member / "params"


def member_config(cfg: ConfigDict, member: str, out: Path) -> ConfigDict:
    """The pretrain job config of one family member: the shared `pretrain` block + its overrides."""
    spec = cfg.family[member]
    job = copy.deepcopy(cfg.pretrain)
    with job.unlocked():
        job.name = f"pretrain-{member}"
        job.workdir = str(out / member)
        job.model.preset = spec.preset
        job.train.steps = int(spec.steps)
        paths = world_paths(Path(cfg.workdir))
        job.data.corpus, job.data.tokenizer = str(paths["corpus"]), str(paths["tokenizer"])
    return job


def sampler_setup(cfg: ConfigDict, preset: str, params: Path, sampling: ConfigDict, template: str = "",
                  n_shots: int = 0) -> ConfigDict:
    """A sampler setup (model + weights + tokenizer + prompt + sampling) on the mini world's tokenizer."""
    root = Path(cfg.workdir)
    return ConfigDict(dict(
        model=model_block(preset),
        params=str(params), tokenizer=str(world_paths(root)["tokenizer"]), allow_vocab_padding=0,
        batch_size=int(cfg.sampling_batch_size), bucket=64, template=template, n_shots=n_shots,
        sampling=copy.deepcopy(sampling)))


def generator_setup(cfg: ConfigDict, member: str, sampling: ConfigDict, template: str = "", n_shots: int = 0) -> ConfigDict:
    """The sampler setup of a vanilla family member."""
    return sampler_setup(cfg, cfg.family[member].preset, family_params(Path(cfg.workdir), member), sampling,
                         template, n_shots)


def queries_job(cfg: ConfigDict, out: Path, name: str) -> ConfigDict:
    """The queries job config of one query set; every set's job sees all of `queries.sets` (in
    their order), so the sets come out disjoint and each holds every family."""
    from almost_jax.jobs import queries
    sets = [(str(n), int(k)) for n, k in cfg.queries.sets]
    size = dict(sets)
    if name not in size:
        raise KeyError(f"no query set {name!r}; queries.sets: {sets}")
    job = queries.queries_config("miniworld")
    with job.unlocked():
        job.update(dict(output=str(out / f"{name}.jsonl"), num_queries=size[name], seed=int(cfg.queries.seed),
                        families=list(cfg.world.families), sets=tuple(sets), set_name=name, id_prefix=f"{name}-"))
    return job


def comparison_setups(cfg: ConfigDict) -> ConfigDict:
    setups = ConfigDict()
    for name, spec in cfg.comparisons.setups.items():
        setups[name] = generator_setup(cfg, spec.member, cfg.comparisons.sampling, spec.template, int(spec.n_shots))
    return setups


def comparisons_job(cfg: ConfigDict, out: Path) -> ConfigDict:
    c = cfg.comparisons
    return ConfigDict(dict(workdir=str(out), queries=str(Path(cfg.workdir) / "queries" / "rm.jsonl"), max_queries=0,
                           on_error="raise", seed=int(c.seed), rubric=tuple(c.rubric), setups=comparison_setups(cfg),
                           rules=copy.deepcopy(c.rules)))


def reward_job(cfg: ConfigDict, out: Path, train_file: Path) -> ConfigDict:
    job = copy.deepcopy(cfg.reward)
    root = Path(cfg.workdir)
    with job.unlocked():
        job.workdir = str(out)
        job.init_from = str(family_params(root, cfg.reward_init_member))
        job.model.preset = cfg.family[cfg.reward_init_member].preset
        job.data.train = str(train_file)
        job.data.tokenizer = str(world_paths(root)["tokenizer"])
    return job


def seed_dir(workdir_root: Path, stage: str, seed: int) -> Path:
    """Where one seed of a stage after the RM (rmsp, sft, ppo) writes: <stage>/seed_<seed>."""
    return workdir_root / stage / f"seed_{int(seed)}"


def rmsp_job(cfg: ConfigDict, out: Path, selection: str, n_candidates: int, seed: int) -> ConfigDict:
    from almost_jax.jobs.rmsp import rmsp_config
    root = Path(cfg.workdir)
    r = cfg.rmsp
    job = rmsp_config()
    with job.unlocked():
        job.workdir, job.queries, job.seed, job.chunk_size = str(out), str(root / "queries" / "rmsp.jsonl"), int(seed), int(r.chunk_size)
        job.selfplay.update(dict(n_candidates=n_candidates, max_assistant_turns=int(r.max_assistant_turns),
                                 selection=selection, end_markers=list(r.end_markers)))
        job.assistant = generator_setup(cfg, r.assistant_member, r.assistant_sampling, r.assistant_template, int(r.assistant_shots))
        job.user = generator_setup(cfg, r.user_member, r.user_sampling, r.user_template, int(r.user_shots))
        job.rm.update(dict(path=str(root / "reward" / "rm"), batch_size=int(cfg.sampling_batch_size)))
    return job


def sft_job(cfg: ConfigDict, out: Path, selection: str, seed: int) -> ConfigDict:
    """SFT of the smallest member on the dialogues of one self-play selection ("rm" or "random") of one seed."""
    root = Path(cfg.workdir)
    job = copy.deepcopy(cfg.sft)
    with job.unlocked():
        job.workdir = str(out / selection)
        job.train.seed = int(seed)
        job.init_from = str(family_params(root, cfg.sft_member))
        job.model.preset = cfg.family[cfg.sft_member].preset
        job.data.train = str(seed_dir(root, "rmsp", seed) / selection / "dialogues.jsonl")
        job.data.tokenizer = str(world_paths(root)["tokenizer"])
    return job


def ppo_job(cfg: ConfigDict, out: Path, seed: int) -> ConfigDict:
    """The RL job of the pipeline's `ppo` stage: PPO from the RM-guided SFT policy against the RM, the
    mini world's oracle logged beside the reward (evaluation only). `cfg.ppo` overrides the job's `rl`
    block key by key; `configs/mini/rloo.py` and `grpo.py` start from this job too."""
    from almost_jax.jobs.rl import rl_config
    root = Path(cfg.workdir)
    job = rl_config("ppo")
    with job.unlocked():
        job.update(dict(workdir=str(out), seed=int(seed), prompts=str(root / "queries" / "rl.jsonl"),
                        tokenizer=str(world_paths(root)["tokenizer"]),
                        policy_init=str(seed_dir(root, "sft", seed) / "rm" / "params"),
                        rm_path=str(root / "reward" / "rm"), gold="miniworld"))
        job.policy_model.preset = cfg.family[cfg.sft_member].preset
    return apply_rl_overrides(job, cfg.ppo, cfg.ppo_optimizer)


def apply_rl_overrides(job: ConfigDict, rl: ConfigDict, optimizer: ConfigDict) -> ConfigDict:
    """The pipeline's `ppo` / `ppo_optimizer` blocks override the RL job's `rl` / `optimizer` key by
    key; a key the job does not have is an error, not a silently ignored setting."""
    for block, given, name in ((job.rl, rl, "ppo"), (job.optimizer, optimizer, "ppo_optimizer")):
        unknown = sorted(set(given.keys()) - set(block.keys()))
        if unknown:
            raise KeyError(f"pipeline config: {name}.{unknown[0]} is not a key of the RL job's "
                           f"{'rl' if name == 'ppo' else 'optimizer'} block; keys: {sorted(block.keys())}")
    with job.unlocked():
        job.rl.update(rl.to_dict())
        job.optimizer.update(optimizer.to_dict())
    return job


def sft_start(cfg: ConfigDict) -> Path:
    """The policy every optional method starts from (and the preference methods' reference): SFT on
    RM-guided self-play of the first seed, PPO's start."""
    return seed_dir(Path(cfg.workdir), "sft", int(cfg.seeds[0])) / "rm" / "params"


def rl_method_job(cfg: ConfigDict, out: Path, algorithm: str) -> ConfigDict:
    """The RL job of an optional `rloo` / `grpo` stage: the `ppo` stage's job (same prompts, SFT
    start, RM, batch sizes and lengths) with the algorithm's estimator and defaults, then the
    pipeline block of that name (`cfg.rloo`, `cfg.grpo`) key by key; configs/mini/rloo.py, grpo.py."""
    from almost_jax.jobs.rl import use_algorithm
    job = use_algorithm(ppo_job(cfg, out, int(cfg.seeds[0])), algorithm)
    unknown = sorted(set(cfg[algorithm].keys()) - set(job.rl.keys()))
    if unknown:
        raise KeyError(f"pipeline config: {algorithm}.{unknown[0]} is not a key of the RL job's rl block")
    with job.unlocked():
        job.rl.update(cfg[algorithm].to_dict())
    return job


def expert_iteration_job(cfg: ConfigDict, out: Path) -> ConfigDict:
    """The optional `expert_iteration` stage's job: best-of-n of the RM-guided SFT policy (the PPO
    start) on the RL prompts, picked by the RM, then the pipeline's SFT recipe from that same start;
    `cfg.expert_iteration` gives the rounds, n, sampling and where each round's SFT starts."""
    from almost_jax.jobs.expert_iteration import expert_iteration_config
    root = Path(cfg.workdir)
    e = cfg.expert_iteration
    preset = cfg.family[cfg.sft_member].preset
    start = sft_start(cfg)
    job = expert_iteration_config(preset)
    with job.unlocked():
        job.update(dict(workdir=str(out), prompts=str(root / "queries" / "rl.jsonl"), policy_init=str(start),
                        iterations=int(e.iterations), n=int(e.n), finetune_from=e.finetune_from, seed=int(e.seed),
                        gold="miniworld"))
        job.policy = sampler_setup(cfg, preset, start, e.sampling)
        job.policy.batch_size = max(1, int(cfg.sampling_batch_size) // int(e.n))  # prompts per batch, n rows each
        job.rm.update(dict(path=str(root / "reward" / "rm"), batch_size=int(cfg.sampling_batch_size)))
        job.sft = copy.deepcopy(cfg.sft)
    return job
