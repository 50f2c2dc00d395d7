"""RM-guided self-play: best-of-N picks the RM's argmax, stopping rules, audit trail, resume."""

from almost_jax.data import chat
from almost_jax.synthetic.selfplay import SelfPlayConfig, pick, play


def fake_players(user_texts):
    calls = {"assistant": 0, "user": 0}

    def assistant(prompts, n, ids):
        assert len(ids) == len(prompts)
        calls["assistant"] += 1
        return [[f"ans{k}-{len(p) % 7}" for k in range(n)] for p in prompts]

    def user(prompts, ids):
        assert len(ids) == len(prompts)
        calls["user"] += 1
        return [user_texts[i % len(user_texts)] for i in range(len(prompts))]

    def score(contexts, replies):  # prefers candidate "ans2"; the context must be chat formatted
        assert all(c.startswith("\n\nHuman: ") and not c.endswith(chat.REPLY_PREFIX) for c in contexts)
        return [3.0 if r.startswith("ans2") else float(len(r) % 3) for r in replies]

    return assistant, user, score, calls


def test_pick_is_argmax_first_of_ties():
    assert pick([0.1, 2.0, -1.0, 2.0], "rm") == 1
    assert pick([5.0, 9.0], "random") == 0


def test_best_of_n_keeps_rm_argmax_and_all_candidates():
    assistant, user, score, _ = fake_players([" Sort 1 3 2.\n\nAssistant: 1 2 3"])
    cfg = SelfPlayConfig(n_candidates=4, max_assistant_turns=2)
    [d] = play([("q0", "What is 1 + 1?")], assistant, user, score, lambda h: chat.format_dialogue(h) + chat.REPLY_PREFIX,
               lambda h: chat.format_dialogue(h) + "\n\nHuman:", cfg)
    speakers = [t.speaker for t in d.turns]
    assert speakers == ["human", "assistant", "human", "assistant"]
    for t in d.turns[1::2]:
        assert t.text.startswith("ans2") and len(t.candidates) == 4
        assert max(c.score for c in t.candidates) == [c.score for c in t.candidates if c.text == t.text][0]
    assert d.turns[2].text == "Sort 1 3 2."  # the user's continuation is cut at the next turn label
    assert d.meta["stop"] == "turn_limit"


def test_random_selection_takes_first_sample_and_skips_scoring():
    assistant, user, _, _ = fake_players(["x"])
    def no_score(*a):
        raise AssertionError("random selection must not call the RM")
    [d] = play([("q", "hi")], assistant, user, no_score, lambda h: "p", lambda h: "u",
               SelfPlayConfig(n_candidates=3, max_assistant_turns=1, selection="random"))
    assert d.turns[1].text.startswith("ans0")


def test_dialogue_stops_when_user_ends_or_turn_limit():
    assistant, user, score, calls = fake_players(["", " [END] bye"])
    out = play([("a", "q1"), ("b", "q2")], assistant, user, score, lambda h: "p", lambda h: "u",
               SelfPlayConfig(n_candidates=2, max_assistant_turns=3))
    assert [d.meta["stop"] for d in out] == ["user_ended", "user_ended"]
    assert all(len(d.turns) == 2 for d in out) and calls["assistant"] == 1
    assistant, user, score, calls = fake_players(["next question"])
    out = play([("a", "q1")], assistant, user, score, lambda h: "p", lambda h: "u",
               SelfPlayConfig(n_candidates=2, max_assistant_turns=3))
    assert sum(t.speaker == "assistant" for t in out[0].turns) == 3 and calls["user"] == 2


def test_rmsp_job_resumes_without_duplicates(tmp_path, monkeypatch):
    from almost_jax.data.schemas import DialogueRecord, PromptRecord, load_jsonl, write_jsonl_atomic
    from almost_jax.jobs import rmsp
    assistant, user, score, _ = fake_players(["again"])
    monkeypatch.setattr(rmsp, "make_players", lambda cfg: (SelfPlayConfig(2, 2), assistant, user, score,
                                                           lambda h: "p", lambda h: "u"))
    qpath = tmp_path / "q.jsonl"
    write_jsonl_atomic(qpath, [PromptRecord(id=f"q{i}", prompt=f"query {i}") for i in range(7)])
    cfg = rmsp.rmsp_config()
    cfg.workdir, cfg.queries, cfg.chunk_size = str(tmp_path / "out"), str(qpath), 3
    cfg.max_queries = 4
    assert rmsp.run(cfg)["dialogues"] == 4
    # a killed job leaves a truncated last line: it is ignored and that dialogue is redone
    path = tmp_path / "out" / "dialogues.jsonl"
    text = path.read_text().splitlines(keepends=True)
    path.write_text("".join(text[:-1]) + text[-1][:20])
    cfg.max_queries = 0
    assert rmsp.run(cfg)["dialogues"] == 7
    ids = [d.id for d in load_jsonl(path, DialogueRecord)]
    assert sorted(ids) == [f"q{i}" for i in range(7)] and len(ids) == len(set(ids))
