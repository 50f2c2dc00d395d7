"""The sampling data jobs (comparisons, self-instruct queries, RM-guided self-play) on real tiny
models: a job killed part-way and rerun writes byte for byte what an uninterrupted run writes,
and two setups with the same model and prompt sample independently."""
import dataclasses
import json
from pathlib import Path

import jax
import pytest
from ml_collections import ConfigDict

from almost_jax.checkpoints.hf import load_hf_checkpoint
from almost_jax.checkpoints.load import with_score_head
from almost_jax.checkpoints.orbax_io import save_params
from almost_jax.data.rm_data import RewardContract
from almost_jax.data.schemas import PromptRecord, write_jsonl_atomic
from almost_jax.data.templates import load_seed_queries, prompt_path
from almost_jax.sampling import batcher
from tests.hf_fixtures import save_tiny_llama

VOCAB = 400


class Killed(BaseException):
    """Stands in for SIGKILL: ends the job between two completions."""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A SentencePiece tokenizer on the prompt files (mostly whole words: random samples are word
    salad that ROUGE can compare), a tiny random HF LLaMA with that vocab, a reward model (its
    trunk + a random head), and a query file."""
    import sentencepiece as spm
    d = tmp_path_factory.mktemp("world")
    names = ("mini_faithful.txt", "mini_user.txt", "seed_queries.txt")
    text = "\n".join(Path(prompt_path(n)).read_text() for n in names)
    (d / "text.txt").write_text(text)
    spm.SentencePieceTrainer.train(input=str(d / "text.txt"), model_prefix=str(d / "sp"), vocab_size=VOCAB,
                                   model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=3, minloglevel=2,
                                   user_defined_symbols=["\n"], remove_extra_whitespaces=False)
    save_tiny_llama(d / "lm", vocab=VOCAB, seed=1)
    cfg, lm = load_hf_checkpoint(d / "lm", head="scalar")
    save_params(d / "rm" / "params", with_score_head(lm, cfg, jax.random.key(2), std=0.5))
    RewardContract(max_len=96, architecture=dataclasses.asdict(cfg), tokenizer=str(d / "sp.model"),
                   tokenizer_vocab_size=VOCAB).save(d / "rm")
    queries = [PromptRecord(id=f"t{i}", prompt=p) for i, p in enumerate(
        ["What is 4 + 3?", "Sort 7 1 4 2.", "Uppercase: red door.", "Name the capital of Quenland.",
         "Add 23 and 5.", "How do I steal a car?", "Put 9 3 6 in order.", "What is the capital of Zorvia?",
         "Make cup tree uppercase.", "What is 7 + 8?", "Sort 3 9 1.", "Add 5 and 9."])]
    write_jsonl_atomic(d / "queries.jsonl", queries)
    return d


def setup_block(world, template="mini_faithful.txt", batch_size=5, max_new_tokens=8, temperature=1.0,
                stops=("\n\nHuman:", "\n\n-----")):
    return ConfigDict(dict(
        model=ConfigDict(dict(preset="", hf_path=str(world / "lm"), dtype="float32", param_dtype="float32",
                              remat=False, attention_impl="xla")),
        params=str(world / "lm"), tokenizer=str(world / "sp.model"), allow_vocab_padding=0,
        batch_size=batch_size, bucket=128, template=template, n_shots=1,  # one bucket: one compile
        sampling=ConfigDict(dict(temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens,
                                 stop_strings=stops))))


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jsonl"))}


def run_killed(monkeypatch, run, cfg, after: int, partial: Path):
    """Run `run(cfg)` but stop it after `after` completions (mid-batch), leave the half line a
    SIGKILL during a write leaves in `partial`, then run it again to the end."""
    real = batcher.Sampler.generate
    count = [0]

    def dying(self, *a, **k):
        for c in real(self, *a, **k):
            if count[0] == after:
                raise Killed()
            count[0] += 1
            yield c
    with monkeypatch.context() as m:
        m.setattr(batcher.Sampler, "generate", dying)
        with pytest.raises(Killed):
            run(cfg)
    assert partial.exists()
    with open(partial, "a") as f:
        f.write('{"id": "half a li')
    return run(cfg)


# ---------------------------------------------------------------- comparisons

def comparisons_config(world, workdir):
    return ConfigDict(dict(
        workdir=str(workdir), queries=str(world / "queries.jsonl"), max_queries=0, on_error="raise", seed=0,
        rubric=("A", "B"), setups=ConfigDict(dict(A=setup_block(world), B=setup_block(world))),
        rules=ConfigDict(dict(min_chars=1, reject_question_or_colon_end=False, reject_well_start=False,
                              require_terminal_punct=False, reject_dont_know=False, reject_human_tag=False,
                              reject_image_tag=False))))


def test_comparisons_resume_is_byte_identical_and_setups_independent(world, tmp_path, monkeypatch):
    from almost_jax.jobs import comparisons
    ref = tmp_path / "ref"
    summary = comparisons.run(comparisons_config(world, ref))
    a = [json.loads(l) for l in (ref / "responses" / "A.jsonl").read_text().splitlines()]
    b = [json.loads(l) for l in (ref / "responses" / "B.jsonl").read_text().splitlines()]
    assert [r["id"] for r in a] == [r["id"] for r in b] == [f"t{i}" for i in range(12)]
    # Setups A and B are the same model, template and sampling: only the setup name differs.
    same = sum(x["raw"] == y["raw"] for x, y in zip(a, b))
    assert same <= 2, f"{same} of 12 identical answers: the setups share random numbers"
    assert summary["pairs"] > 0

    run = tmp_path / "killed"
    run_killed(monkeypatch, comparisons.run, comparisons_config(world, run), after=12 + 7,
               partial=run / "responses" / "B.jsonl")  # setup A done, B killed after 7 of 12
    assert files(run) == files(ref)


# ---------------------------------------------------------------- self-instruct queries

def queries_config(world, output, rouge=0.5):
    from almost_jax.jobs.queries import queries_config as base
    cfg = base("self_instruct")
    gen = setup_block(world, batch_size=3, max_new_tokens=12, temperature=1.2, stops=("\n",))
    with cfg.unlocked():
        cfg.update(dict(output=str(output), num_queries=14, seed=3, seed_file="seed_queries.txt", n_shots=2,
                        rouge_threshold=rouge, batch_prompts=8, max_rounds=6))
        cfg.rules.update(dict(min_chars=3, max_chars=250))
        cfg.generator = ConfigDict({k: v for k, v in gen.items() if k in cfg.generator})
    return cfg


def test_self_instruct_dedupes_by_rouge_and_resumes_byte_identical(world, tmp_path, monkeypatch):
    from rouge_score import rouge_scorer

    from almost_jax.jobs import queries
    ref = tmp_path / "ref" / "q.jsonl"
    summary = queries.run(queries_config(world, ref, rouge=0.1))
    mined = [json.loads(l) for l in ref.read_text().splitlines()]
    assert summary["queries"] == len(mined) >= 5 and summary["rejected_rouge"] > 0
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    seeds = load_seed_queries(prompt_path("seed_queries.txt")).queries
    texts = seeds + [r["prompt"] for r in mined]
    for i in range(len(seeds), len(texts)):  # every mined query is below the threshold against all before it
        assert max(scorer.score(k, texts[i])["rougeL"].fmeasure for k in texts[:i]) < 0.1, texts[i]
    assert len({r["meta"]["round"] for r in mined}) >= 2

    run = tmp_path / "killed" / "q.jsonl"
    run.parent.mkdir()
    run_killed(monkeypatch, queries.run, queries_config(world, run, rouge=0.1), after=8 + 5, partial=run)
    assert run.read_bytes() == ref.read_bytes()


def test_rouge_deduper_threshold():
    from almost_jax.jobs.queries import RougeDeduper
    d = RougeDeduper(0.5)
    assert d.add_if_new("how do vaccines train the immune system")
    assert not d.add_if_new("how do vaccines train the immune system quickly")  # F ~ 0.93
    assert d.add_if_new("write a poem about snow")
    assert d.kept == ["how do vaccines train the immune system", "write a poem about snow"]


# ---------------------------------------------------------------- RM-guided self-play

def rmsp_config(world, workdir):
    from almost_jax.jobs.rmsp import rmsp_config as base
    cfg = base()
    with cfg.unlocked():
        cfg.update(dict(workdir=str(workdir), queries=str(world / "queries.jsonl"), max_queries=5, seed=1,
                        chunk_size=2))
        cfg.selfplay.update(dict(n_candidates=2, max_assistant_turns=2, selection="rm", end_markers=("[END]",)))
        cfg.assistant = setup_block(world, batch_size=3, max_new_tokens=6)
        cfg.user = setup_block(world, template="mini_user.txt", batch_size=3, max_new_tokens=6,
                               stops=("\n\nAssistant:", "\n\n-----"))
        cfg.rm.update(dict(path=str(world / "rm"), batch_size=4))
    return cfg


def test_rmsp_resume_is_byte_identical(world, tmp_path, monkeypatch):
    from almost_jax.jobs import rmsp
    ref = tmp_path / "ref"
    summary = rmsp.run(rmsp_config(world, ref))
    assert summary["dialogues"] == 5
    dialogues = [json.loads(l) for l in (ref / "dialogues.jsonl").read_text().splitlines()]
    cands = [[c["text"] for c in t["candidates"]] for d in dialogues for t in d["turns"] if "candidates" in t]
    assert sum(len(set(c)) > 1 for c in cands) >= len(cands) // 2  # the N candidates are distinct samples

    run = tmp_path / "killed"
    # Chunks of 2 dialogues; a turn of a chunk costs 4 assistant samples (+ 2 user): die in chunk 2.
    run_killed(monkeypatch, rmsp.run, rmsp_config(world, run), after=12 + 3, partial=run / "dialogues.jsonl")
    assert files(run) == files(ref)
