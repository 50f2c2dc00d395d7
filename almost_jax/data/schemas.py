"""JSONL record schemas for every file a job reads or writes, validated on read.

One plain dataclass per schema; ``read_jsonl`` checks each line against it (types, required
fields, no unknown keys; extras belong in ``meta``) and reports problems with file and line
number. A corrupt line never passes silently: ``on_error="raise"`` raises ``RecordError`` (an
``errors.InputError``), ``on_error="skip"`` logs a warning and counts it (the count reaches the
job's manifest through ``errors.note_skipped``). A last line without its newline that does not
parse is a truncated file: an error like any other for an input, but what a killed writer
leaves behind in a job's own resumable output, which its reader (``partial_tail_ok=True``)
ignores with a warning.

Writers: ``write_jsonl_atomic`` (whole file, temp + fsync + ``os.replace``) for final outputs,
``append_jsonl`` / ``JsonlAppender`` (one flushed line per record) for resumable streams.
Also readers for the public evaluation formats: Anthropic HH pairs and Static HHH.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import gzip
import json
import logging
import os
import secrets
import shutil
import types
import typing
from typing import Any, IO, Iterable, Iterator, Literal, Union

from almost_jax.data import chat
from almost_jax.data.errors import InputError, note_skipped

log = logging.getLogger(__name__)


class RecordError(InputError):
    """A record that does not match its schema; names file, line and problem."""

    def __init__(self, path: str, lineno: int | None, problem: str):
        super().__init__(path, problem, line=lineno)
        self.lineno, self.problem = lineno, problem


# ---------------------------------------------------------------- schemas

@dataclasses.dataclass
class PromptRecord:
    """A query to answer (Stage-1 prompts, RL prompts, evaluation prompts)."""

    id: str
    prompt: str
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Provenance:
    """Which sampler setups produced the pair and what the filters saw."""

    chosen_setup: str
    rejected_setup: str
    filters: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ComparisonRecord:
    """A binarized preference pair for reward-model training."""

    prompt: str
    chosen: str
    rejected: str
    provenance: Provenance
    id: str | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def validate(self) -> str | None:
        return "chosen and rejected are identical" if self.chosen == self.rejected else None


@dataclasses.dataclass
class Candidate:
    text: str
    score: float


@dataclasses.dataclass
class DialogueTurn:
    speaker: Literal["human", "assistant"]
    text: str
    candidates: list[Candidate] | None = None  # best-of-N alternatives with their RM scores


@dataclasses.dataclass
class DialogueRecord:
    """A (simulated) multi-turn dialogue, e.g. from RM-guided self-play."""

    turns: list[DialogueTurn]
    id: str | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def validate(self) -> str | None:
        if not self.turns:
            return "turns is empty"
        for i, t in enumerate(self.turns):
            if t.candidates is not None and t.speaker != chat.ASSISTANT:
                return f"turns[{i}]: only assistant turns may have candidates"
        return None

    def transcript(self) -> str:
        return chat.format_dialogue((t.speaker, t.text) for t in self.turns)


@dataclasses.dataclass
class DemonstrationRecord:
    """SFT example in ALMoST's train.json format: loss only on ``output``."""

    input: str
    output: str
    id: str | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class JudgmentRecord:
    """A response with a natural-language judgment (CUT-style learning from judgments)."""

    instruction: str
    response: str
    judgment: str
    id: str | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class HHPair:
    """Anthropic HH-RLHF line: two full transcripts sharing all but the last reply."""

    chosen: str
    rejected: str


@dataclasses.dataclass
class StaticHHHItem:
    """One item of Static HHH (ALMoST's eval/data/hhh_eval.json)."""

    chosen: str
    rejected: str
    type: str


SCHEMAS = {
    "prompts": PromptRecord,
    "comparisons": ComparisonRecord,
    "dialogues": DialogueRecord,
    "demonstrations": DemonstrationRecord,
    "judgments": JudgmentRecord,
    "hh": HHPair,
}


# ---------------------------------------------------------------- (de)serialization

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; build nested dataclasses. Raises ValueError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], where)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
        return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {type(value).__name__}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {type(value).__name__}")
        return float(value)
    if tp in (str, int, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ValueError(f"{where}: expected {tp.__name__}, got {type(value).__name__}")
        return value
    raise TypeError(f"unsupported annotation {_type_name(tp)} at {where}")


def from_dict(schema: type, obj: dict, where: str = "") -> Any:
    """Build and validate a schema dataclass from a parsed JSON object."""
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    prefix = f"{where}." if where else ""
    unknown = sorted(set(obj) - set(fields))
    if unknown:
        raise ValueError(f"{prefix}{unknown[0]}: unknown field (extras belong in 'meta')")
    kwargs = {}
    for name, f in fields.items():
        if name not in obj:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required:
                raise ValueError(f"{prefix}{name}: missing required field")
            continue
        kwargs[name] = _convert(obj[name], hints[name], prefix + name)
    record = schema(**kwargs)
    problem = record.validate() if hasattr(record, "validate") else None
    if problem:
        raise ValueError(f"{where}: {problem}" if where else problem)
    return record


def to_dict(record: Any) -> Any:
    """JSON-ready form of a record; fields still at their default (None, {}) are omitted."""
    if dataclasses.is_dataclass(record):
        out = {}
        for f in dataclasses.fields(record):
            v = getattr(record, f.name)
            default = (f.default_factory() if f.default_factory is not dataclasses.MISSING
                       else f.default)
            if default is not dataclasses.MISSING and v == default:
                continue
            out[f.name] = to_dict(v)
        return out
    if isinstance(record, list):
        return [to_dict(v) for v in record]
    return record


def dumps(record: Any) -> str:
    return json.dumps(to_dict(record), ensure_ascii=False)


# ---------------------------------------------------------------- reading

def _open_binary(path: str) -> IO[bytes]:
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


class JsonlReader:
    """Iterate validated records of one JSONL file; counts what it skipped.

    Attributes after (or during) iteration: ``n_records``, ``n_skipped``,
    ``problems`` (list of (line number, reason)), ``truncated_tail`` (bool).
    """

    def __init__(self, path: str | os.PathLike, schema: type | None, on_error: str = "raise",
                 partial_tail_ok: bool = False):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.path, self.schema, self.on_error = os.fspath(path), schema, on_error
        self.partial_tail_ok = partial_tail_ok
        self.n_records = self.n_skipped = 0
        self.problems: list[tuple[int, str]] = []
        self.truncated_tail = False

    def _bad(self, lineno: int, problem: str) -> None:
        if self.on_error == "raise":
            raise RecordError(self.path, lineno, problem) from None
        self.n_skipped += 1
        self.problems.append((lineno, problem))
        log.warning("%s:%d: skipped: %s", self.path, lineno, problem)

    def __iter__(self) -> Iterator[Any]:
        with _open_binary(self.path) as f:
            for lineno, raw in enumerate(f, 1):
                complete = raw.endswith(b"\n")
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    if complete:
                        self._bad(lineno, f"malformed JSON: {e}")
                    elif self.partial_tail_ok:  # our own killed writer's half line: resume after it
                        self.truncated_tail = True
                        log.warning("%s:%d: ignoring the partial last line a killed writer left (%s)",
                                    self.path, lineno, e)
                    else:
                        self.truncated_tail = True
                        self._bad(lineno, f"the last line is cut off (no newline, not valid JSON: {e}): "
                                          f"the file looks truncated")
                    continue
                if not isinstance(obj, dict):
                    self._bad(lineno, f"expected a JSON object, got {type(obj).__name__}")
                    continue
                if self.schema is None:
                    record = obj
                else:
                    try:
                        record = from_dict(self.schema, obj)
                    except ValueError as e:
                        self._bad(lineno, str(e))
                        continue
                self.n_records += 1
                yield record
        note_skipped(self.path, self.n_skipped)


def read_jsonl(path: str | os.PathLike, schema: type | None, on_error: str = "raise",
               partial_tail_ok: bool = False) -> JsonlReader:
    """Validated records of ``path`` (``schema=None``: plain dicts). ``.gz`` is read transparently.
    ``partial_tail_ok``: only for a job's own streamed output read back on resume."""
    return JsonlReader(path, schema, on_error, partial_tail_ok)


def load_jsonl(path: str | os.PathLike, schema: type | None, on_error: str = "raise",
               partial_tail_ok: bool = False) -> list:
    return list(read_jsonl(path, schema, on_error, partial_tail_ok))


# ---------------------------------------------------------------- writing

def temp_path_for(path: str | os.PathLike) -> str:
    """A fresh temp name beside `path` (same filesystem, so the final rename is atomic), tagged
    with this process id: `.<name>.<pid>.<random>.tmp`. Orphans of earlier killed writers of the
    same target are removed first."""
    path = os.fspath(path)
    remove_orphans(path)
    return os.path.join(os.path.dirname(os.path.abspath(path)),
                        f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def remove_orphans(path: str | os.PathLike) -> list[str]:
    """Delete `.<name>.<pid>.*.tmp` files or dirs beside `path` whose writer process is gone."""
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    removed = []
    for entry in glob.glob(os.path.join(glob.escape(directory), f".{glob.escape(name)}.*.tmp")):
        pid = os.path.basename(entry)[len(name) + 2:].split(".", 1)[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        if os.path.isdir(entry):
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry)
        removed.append(entry)
    if removed:
        log.info("removed %d temporary file(s) left by a killed writer of %s", len(removed), path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours from an earlier, failed write
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w"):
    """Write to a temp file in the target's directory; fsync and ``os.replace`` on success. The
    file gets the mode any new file gets (0666 less the umask); a killed write's temp file is
    removed by the next write of the same target."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temp_path_for(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, unlike mkstemp's 0600
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """A small JSON output (report, statistics) replaced atomically, never half written."""
    with atomic_open(path) as f:  # numpy scalars as numbers, anything else unknown as text
        json.dump(obj, f, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """Write all records (dataclasses or dicts) atomically; returns how many."""
    n = 0
    with atomic_open(path) as f:
        for record in records:
            f.write(dumps(record) + "\n")
            n += 1
    return n


def repair_tail(path: str | os.PathLike) -> bool:
    """Make a file end on a line boundary before appending: a partial last line that parses
    is completed with a newline, one that does not is cut off (with a warning).
    Returns True if the file was changed."""
    path = os.fspath(path)
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return False
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return False
        f.seek(0)
        data = f.read()
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        try:
            json.loads(tail.decode("utf-8"))
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        except (UnicodeDecodeError, json.JSONDecodeError):
            log.warning("%s: dropping truncated last line (%d bytes)", path, len(tail))
            f.truncate(cut)
        return True


class JsonlAppender:
    """Append records one flushed line at a time (resumable streaming output)."""

    def __init__(self, path: str | os.PathLike, fsync: bool = False):
        self.path, self.fsync = os.fspath(path), fsync
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        repair_tail(self.path)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: Any) -> None:
        self._f.write(dumps(record) + "\n")
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def append_jsonl(path: str | os.PathLike, record: Any, fsync: bool = False) -> None:
    """Append one record as one flushed line (repairs a truncated tail first)."""
    with JsonlAppender(path, fsync) as w:
        w.write(record)


# ---------------------------------------------------------------- public evaluation formats

def read_hh_pairs(path: str | os.PathLike, on_error: str = "raise") -> JsonlReader:
    """Anthropic HH-RLHF JSONL (optionally .gz): ``{"chosen", "rejected"}`` transcripts."""
    return read_jsonl(path, HHPair, on_error)


def split_hh_pair(pair: HHPair | StaticHHHItem) -> tuple[str, str, str]:
    """(prompt ending in ``"\\n\\nAssistant:"``, chosen reply, rejected reply).

    The prompt is everything up to the last assistant label, which both transcripts must
    share; raises ValueError otherwise. Replies are stripped.
    """
    cut = pair.chosen.rfind(chat.REPLY_PREFIX)
    if cut < 0:
        raise ValueError("chosen transcript has no assistant turn")
    prompt = pair.chosen[: cut + len(chat.REPLY_PREFIX)]
    if not pair.rejected.startswith(prompt):
        raise ValueError("chosen and rejected do not share the prompt")
    return prompt, pair.chosen[len(prompt):].strip(), pair.rejected[len(prompt):].strip()


def read_static_hhh(path: str | os.PathLike) -> list[StaticHHHItem]:
    """Static HHH as a JSON list of ``{"chosen", "rejected", "type"}``; errors name the item."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            items = json.load(f)
    except json.JSONDecodeError as e:
        raise RecordError(path, e.lineno, f"malformed JSON: {e}") from e
    if not isinstance(items, list):
        raise RecordError(path, 1, f"expected a JSON list, got {type(items).__name__}")
    out = []
    for i, obj in enumerate(items):
        try:
            if not isinstance(obj, dict):
                raise ValueError(f"expected an object, got {type(obj).__name__}")
            out.append(from_dict(StaticHHHItem, obj))
        except ValueError as e:
            raise RecordError(path, None, f"item {i}: {e}") from e
    return out
