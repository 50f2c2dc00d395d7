"""One error type for bad input, and the record of what readers skipped.

Every reader (JSONL records, corpora, prompt files, HF checkpoints, config files) raises
`InputError` naming the file and, where it knows them, the line, the key or the tensor, so a
user sees `data/train.jsonl:17: malformed JSON ...` instead of a parser's traceback.

Readers told to skip bad records (`on_error="skip"`) report each file's count through
`note_skipped`; `jobs.common.write_manifest` records them (`skipped_records`) in the job's
manifest, and the pipeline's report shows them, so a drop is never silent.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional


class InputError(ValueError):
    """Bad input: `path`, then where in it (line, key or tensor) and what is wrong."""

    def __init__(self, path: str | os.PathLike, reason: str, *, line: Optional[int] = None,
                 key: Optional[str] = None, tensor: Optional[str] = None):
        self.path, self.reason = os.fspath(path), reason
        self.line, self.key, self.tensor = line, key, tensor
        where = self.path + (f":{line}" if line is not None else "")
        where += f": key {key!r}" if key is not None else ""
        where += f": tensor {tensor!r}" if tensor is not None else ""
        super().__init__(f"{where}: {reason}")


def first_line(error: BaseException, limit: int = 300) -> str:
    """A one-line reason from an exception: its root cause's first line, with the type (tensorstore
    and pickle errors run to pages, wrapped in other libraries' errors)."""
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    text = f"{type(error).__name__}: " + (str(error).strip().splitlines() or [""])[0]
    return text if len(text) <= limit else text[:limit] + "..."


def read_json_object(path: str | os.PathLike) -> dict:
    """A JSON object from a file (config.json, a checkpoint index); InputError naming the file and
    line when it is not one."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(path, f"not valid JSON ({e.msg}, column {e.colno})", line=e.lineno) from None
    except UnicodeDecodeError as e:
        raise InputError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not isinstance(obj, dict):
        raise InputError(path, f"expected a JSON object, got {type(obj).__name__}")
    return obj


_SKIPPED: dict[str, int] = {}


def note_skipped(path: str | os.PathLike, count: int) -> None:
    """A reader skipped `count` bad records of `path` in its latest full read (0 clears it)."""
    path = os.path.abspath(os.fspath(path))
    if count:
        _SKIPPED[path] = count
    else:
        _SKIPPED.pop(path, None)


def skipped_records() -> dict[str, int]:
    """{file: records skipped} for the files read since the last `reset_skipped`."""
    return dict(sorted(_SKIPPED.items()))


def reset_skipped() -> None:
    """Start a new job's (or pipeline stage's) record."""
    _SKIPPED.clear()
