"""Few-shot prompt templates as data files (ALMoST's prompt-file format).

File format: a preamble, then dialogues, each closed by a line ``-----``; a turn starts with a
line beginning ``Human:`` or ``Assistant:`` and runs until the next turn (it may span lines)::

    <preamble>

    -----

    Human: ...

    Assistant: ...

    -----

Rendering follows ALMoST's ``PromptedResponseGenerator`` (splitter ``"\\n\\n-----"``)::

    preamble + "\\n\\n-----" + d_1 + "\\n\\n-----" + ... + d_n + "\\n\\n-----" + "\\n\\nHuman: {query}\\n\\nAssistant:"

where the preamble and each ``d_i`` are the file's own text between separators, kept byte for byte
(the published ALMoST files write ``"Human:  "`` with two spaces, which the parsed turns drop), so
a prompt renders exactly as ALMoST's ``load_seed_prompt`` builds it. A template made in code (no
file text) renders ``d_i`` with ``chat.format_dialogue`` (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``).
Per ``chat``'s convention the prompt ends without a space; ``trailing_space=True`` reproduces
ALMoST's ``"Assistant: "`` byte for byte.

Shots: ``n_shots`` is the number of demonstrations, 0 = none (the preamble alone), and
``ALL_SHOTS`` (-1) = every dialogue of the file. ALMoST's ``n_shot=0`` means "all" (its code takes
``demon[:n_shot + 1]`` only when ``n_shot`` is non-zero); here 0 keeps its plain meaning because
the shot count is a ranking factor (more shots > fewer) and a zero-shot setup must be expressible;
write ``n_shots=-1`` for ALMoST's ``n_shot=0``.

Seed-query files (Self-Instruct style query generation): first line an instruction, then one seed
query per line.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Optional, Sequence

from almost_jax.data import chat

PROMPTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prompts")
SEPARATOR_LINE = "-----"
ALL_SHOTS = -1  # n_shots meaning "every dialogue of the file" (ALMoST's n_shot=0)
_LABEL_RE = re.compile(r"^(Human|Assistant):(.*)$")


class PromptFileError(ValueError):
    """A malformed prompt file; the message names the file and line."""


def prompt_path(name: str) -> str:
    """Path of a prompt file shipped in ``almost_jax/data/prompts`` (``name`` without dir)."""
    return os.path.join(PROMPTS_DIR, name)


@dataclasses.dataclass
class PromptTemplate:
    """A preamble and few-shot dialogues, each a list of (speaker, text) turns; `raw` holds the
    file's own text of the preamble and of each dialogue (what rendering uses), None when the
    template was built in code."""

    preamble: str
    dialogues: list[list[tuple[str, str]]]
    raw: Optional[tuple[str, ...]] = None

    def shots(self, n_shots: int) -> int:
        """The number of dialogues `n_shots` asks for (ALL_SHOTS = all of them)."""
        n = len(self.dialogues) if n_shots == ALL_SHOTS else n_shots
        if not 0 <= n <= len(self.dialogues):
            raise ValueError(f"n_shots={n_shots} but the template has {len(self.dialogues)} dialogues "
                             f"(0 = none, {ALL_SHOTS} = all)")
        return n

    def head(self, n_shots: int) -> str:
        """Preamble and the first ``n_shots`` dialogues, each followed by the separator."""
        n = self.shots(n_shots)
        if self.raw is not None:
            parts = list(self.raw[:n + 1])
        else:
            parts = ([self.preamble] if self.preamble else []) + [chat.format_dialogue(d) for d in self.dialogues[:n]]
        return "".join(p + chat.DIALOGUE_SEP for p in parts)

    def render(self, n_shots: int, query: str, trailing_space: bool = False) -> str:
        """Few-shot prompt asking for the assistant's reply to ``query``."""
        return self.render_dialogue(n_shots, [(chat.HUMAN, query)], chat.ASSISTANT, trailing_space)

    def render_dialogue(self, n_shots: int, history: Sequence[tuple[str, str]],
                        next_speaker: str = chat.ASSISTANT, trailing_space: bool = False) -> str:
        """Few-shot prompt continuing ``history`` with a turn of ``next_speaker``
        (``"human"`` for a simulated user, ``"assistant"`` for the assistant)."""
        label = chat.TURN_SEP + chat.LABELS[next_speaker] + ":"
        return self.head(n_shots) + chat.format_dialogue(history) + label + (" " if trailing_space else "")

    def dumps(self) -> str:
        """File text (the file's own text when read from one); ``loads(t.dumps()) == t``."""
        parts = list(self.raw) if self.raw is not None else (
            [self.preamble] + [chat.format_dialogue(d) for d in self.dialogues])
        return chat.DIALOGUE_SEP.join(parts) + chat.DIALOGUE_SEP + "\n"


def loads(text: str, source: str = "<string>") -> PromptTemplate:
    """Parse prompt-file text; errors name ``source`` and the line."""
    lines = text.splitlines()
    blocks: list[list[tuple[int, str]]] = [[]]
    for lineno, line in enumerate(lines, 1):
        if line.strip() == SEPARATOR_LINE:
            blocks.append([])
        else:
            blocks[-1].append((lineno, line))
    preamble = "\n".join(l for _, l in blocks[0]).strip()
    dialogues = []
    for block in blocks[1:]:
        if not any(l.strip() for _, l in block):
            continue  # e.g. after the final separator
        dialogues.append(_parse_dialogue(block, source))
    if not dialogues:
        raise PromptFileError(f"{source}: no dialogues (expected '{SEPARATOR_LINE}' lines separating "
                              "the preamble and each dialogue)")
    # The text ALMoST renders: the file split on "\n\n-----", blank pieces dropped.
    raw = tuple(c for c in text.split(chat.DIALOGUE_SEP) if c.strip("\n "))
    if len(raw) != len(dialogues) + 1 or not preamble:
        lineno = next((n for n, line in enumerate(lines, 1) if line.strip() == SEPARATOR_LINE
                       and (n < 2 or lines[n - 2].strip())), None)
        where = f"{source}:{lineno}" if lineno else source
        raise PromptFileError(f"{where}: a '{SEPARATOR_LINE}' line must follow a blank line and the file must "
                              "start with a preamble (ALMoST splits prompt files on '\\n\\n-----')")
    return PromptTemplate(preamble, dialogues, raw)


def _parse_dialogue(block: list[tuple[int, str]], source: str) -> list[tuple[str, str]]:
    turns: list[tuple[str, list[str], int]] = []
    for lineno, line in block:
        m = _LABEL_RE.match(line)
        if m:
            speaker = chat.HUMAN if m.group(1) == "Human" else chat.ASSISTANT
            turns.append((speaker, [m.group(2)], lineno))
        elif turns:
            turns[-1][1].append(line)
        elif line.strip():
            raise PromptFileError(f"{source}:{lineno}: text outside a turn; a turn must start with "
                                  f"'Human:' or 'Assistant:' ({line[:40]!r})")
    out = []
    for speaker, text_lines, lineno in turns:
        text = "\n".join(text_lines).strip()
        if not text:
            raise PromptFileError(f"{source}:{lineno}: empty {speaker} turn")
        out.append((speaker, text))
    return out


def load_prompt_file(path: str | os.PathLike) -> PromptTemplate:
    with open(path, encoding="utf-8") as f:
        return loads(f.read(), os.fspath(path))


def write_prompt_file(path: str | os.PathLike, template: PromptTemplate) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(template.dumps())


@dataclasses.dataclass
class SeedQueries:
    """Query-generation seeds: an instruction line and one seed query per line."""

    instruction: str
    queries: list[str]

    def render(self, shots: Sequence[str], prefix: str = "Query:") -> str:
        """ALMoST's generation prompt: instruction, blank line, ``"Query: q"`` lines, ``"Query:"``."""
        return f"{self.instruction}\n\n" + "".join(f"{prefix} {s}\n" for s in shots) + prefix


def load_seed_queries(path: str | os.PathLike) -> SeedQueries:
    """An instruction line, then one seed query per line; a dialogue prompt file (``-----``
    separators, ``Human:`` / ``Assistant:`` turns) is refused, not read as a list of queries."""
    with open(path, encoding="utf-8") as f:
        numbered = [(n, l.strip()) for n, l in enumerate(f.read().splitlines(), 1)]
    for n, line in numbered:
        if line == SEPARATOR_LINE or _LABEL_RE.match(line):
            raise PromptFileError(f"{os.fspath(path)}:{n}: this looks like a dialogue prompt file ({line[:40]!r}), "
                                  "not seed queries: a seed-query file is an instruction line, then one query per line")
    lines = [l for _, l in numbered if l]
    if len(lines) < 2:
        raise PromptFileError(f"{os.fspath(path)}: expected an instruction line and at least one seed query")
    return SeedQueries(lines[0], lines[1:])
