"""The one chat format every stage uses (ALMoST / Anthropic-HH style).

Convention (byte-exact):
  * a turn is ``"\\n\\n" + label + ": " + text`` with label ``Human`` or ``Assistant``;
    a dialogue is the plain concatenation of its turns (so it starts with ``"\\n\\n"``);
  * a prompt that asks the model for the next assistant reply ends with ``"\\n\\nAssistant:"``
    and **no trailing space**; the model's continuation therefore starts with ``" "``
    (``prompt + " " + reply`` equals ``format_dialogue(... + [("assistant", reply)])``).
    ALMoST's repo ends prompts with ``"Assistant: "``; we drop the space because with a
    SentencePiece tokenizer a trailing space becomes a lone ``"▁"`` token the pretraining
    corpus never shows before a word, whereas ``" reply"`` tokenizes exactly as in the corpus.
  * stored texts (records, turns) never carry the leading space or surrounding whitespace.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

HUMAN = "human"
ASSISTANT = "assistant"
SPEAKERS = (HUMAN, ASSISTANT)
LABELS = {HUMAN: "Human", ASSISTANT: "Assistant"}
TURN_SEP = "\n\n"
REPLY_PREFIX = TURN_SEP + LABELS[ASSISTANT] + ":"  # what a prompt for a reply ends with
DIALOGUE_SEP = "\n\n-----"  # separates dialogues inside few-shot prompt files (ALMoST splitter)

# A turn starts at a "Human:"/"Assistant:" label that opens the text or follows "\n\n".
_TURN_RE = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_STOP_RE = re.compile(r"\n\n-----|(?:Human|Assistant):")


def format_turn(speaker: str, text: str) -> str:
    """Render one turn: ``"\\n\\nHuman: text"``."""
    if speaker not in LABELS:
        raise ValueError(f"speaker must be one of {SPEAKERS}, got {speaker!r}")
    return f"{TURN_SEP}{LABELS[speaker]}: {text}"


def format_dialogue(turns: Iterable[Sequence[str]]) -> str:
    """Concatenate (speaker, text) turns; multi-turn is plain concatenation."""
    return "".join(format_turn(speaker, text) for speaker, text in turns)


def prompt_for_reply(history: Iterable[Sequence[str]], query: str) -> str:
    """Dialogue so far + the new human query + ``"\\n\\nAssistant:"`` (no trailing space)."""
    return format_dialogue(history) + format_turn(HUMAN, query) + REPLY_PREFIX


def continuation(reply: str) -> str:
    """The model-side text that completes a ``prompt_for_reply`` prompt: ``" " + reply``."""
    return " " + reply


def parse_dialogue(transcript: str) -> list[tuple[str, str]]:
    """Split a transcript back into (speaker, text) turns.

    Texts are stripped of surrounding whitespace, so ``format_dialogue(parse_dialogue(t)) == t``
    for any transcript produced by ``format_dialogue`` from stripped texts. A trailing empty
    assistant turn (a prompt ending in ``"Assistant:"``) is returned with text ``""``.
    Raises ValueError if non-whitespace text precedes the first turn.
    """
    matches = list(_TURN_RE.finditer(transcript))
    if not matches:
        if transcript.strip():
            raise ValueError("transcript has no 'Human:'/'Assistant:' turn")
        return []
    head = transcript[: matches[0].start()]
    if head.strip():
        raise ValueError(f"text before the first turn: {head[:40]!r}")
    turns = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(transcript)
        speaker = HUMAN if m.group(1) == "Human" else ASSISTANT
        turns.append((speaker, transcript[m.end():end].strip()))
    return turns


def last_query(prompt: str) -> str | None:
    """The text of the last human turn of a prompt (few-shot preambles allowed before it)."""
    idx = prompt.rfind(TURN_SEP + LABELS[HUMAN] + ":")
    if idx < 0:
        return None
    turns = parse_dialogue(prompt[idx:])
    return turns[0][1] if turns else None


def extract_reply(generated: str) -> str:
    """Cut a raw continuation at the first new turn label or dialogue separator; strip it.

    Mirrors ALMoST's output parsing (cut at ``"\\n\\n-----"`` and at ``"Human:"``).
    """
    m = _STOP_RE.search(generated)
    return (generated[: m.start()] if m else generated).strip()
