"""The listwise task record: a context, K candidates with short ids, graded relevance per id, a split.

One JSONL line per task:

    {"id": "u42", "split": "train", "context": "...",
     "candidates": [{"id": "A", "text": "..."}, ...],
     "relevance": {"A": 2, "B": 0, ...}}

Reading and validation (file, line and field named for every problem) live below the dataclasses.
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass, field

from listopd.util.errors import InputError
from listopd.util.io import atomic_write_bytes
from listopd.util.jsonl import MAX_LINE_BYTES, iter_jsonl

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Candidate:
    id: str
    text: str


@dataclass(frozen=True)
class Task:
    id: str
    context: str
    candidates: tuple[Candidate, ...]
    relevance: dict[str, float]
    split: str = "train"
    meta: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return len(self.candidates)

    @property
    def candidate_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.candidates)

    def to_dict(self) -> dict:
        d = {
            "id": self.id,
            "split": self.split,
            "context": self.context,
            "candidates": [{"id": c.id, "text": c.text} for c in self.candidates],
            "relevance": dict(self.relevance),
        }
        if self.meta:
            d["meta"] = dict(self.meta)
        return d


# --------------------------------------------------------------------------------------------- reading
#
# Rules (read_tasks / check_tasks; write_tasks refuses to write what they would refuse to read):
# - The file is JSONL, plain or gzip-compressed (recognised by its magic bytes, so `.jsonl.gz` and `.jsonl`
#   both work). It must be UTF-8; a UTF-8 BOM on line 1 is ignored. Blank lines are skipped (they are not
#   records). A file with no record at all is an error. A line longer than MAX_LINE_BYTES (1 MiB) is an error.
# - Each record is a JSON object with exactly the fields id, split, context, candidates, relevance and the
#   optional meta (an object); any other field is an error (typos must not vanish). A key repeated inside
#   any object is an error.
# - id: non-empty string, unique in the file. split: one of SPLITS (required: a task never lands in a split
#   by default). context: string (may be empty).
# - candidates: non-empty list of {"id": ..., "text": ...} objects; ids are non-empty strings without
#   whitespace, quotes (" '), backslashes or control characters, unique within the task; text is a string.
# - relevance: an object giving a grade to every candidate id (a missing grade is an error, not 0) and to
#   no other id; grades are numbers (not booleans), finite, 0 <= grade <= MAX_RELEVANCE (the NDCG gain is
#   2**grade - 1).
# - K: with k=..., every task must have exactly k candidates. With k=None all tasks must have the K of
#   the first task, unless allow_mixed_k=True.
# By default the first bad line raises InputError("file:line: field 'x': reason"). check_tasks (or
# read_tasks(collect_errors=True)) reads everything and returns the good tasks with one InputError per bad
# line (its first problem), so nothing is dropped silently.

MAX_RELEVANCE = 100
TASK_FIELDS = ("id", "split", "context", "candidates", "relevance", "meta")
_REQUIRED = ("id", "split", "context", "candidates", "relevance")
_BAD_ID_CHARS = set("\"'\\")


class _FieldError(Exception):
    def __init__(self, field: str | None, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason


def _check_candidate_id(cid, field: str) -> str:
    if not isinstance(cid, str):
        raise _FieldError(field, f"must be a string, got {type(cid).__name__}")
    if not cid:
        raise _FieldError(field, "must be a non-empty string")
    for ch in cid:
        if ch.isspace() or ch in _BAD_ID_CHARS or ord(ch) < 0x20 or 0xD800 <= ord(ch) <= 0xDFFF:
            raise _FieldError(field, f"id {cid!r} contains {ch!r}: ids must not contain whitespace, "
                                     "quotes, backslashes, control characters or surrogates")
    return cid


def task_from_dict(obj) -> Task:
    """Validate one decoded record (rules above) and build the Task; raises InputError naming the field."""
    try:
        return _task_from_dict(obj)
    except _FieldError as e:
        raise InputError(e.reason, field=e.field) from None


def _task_from_dict(obj) -> Task:
    if not isinstance(obj, dict):
        raise _FieldError(None, f"a task must be a JSON object, got {type(obj).__name__}")
    for name in obj:
        if name not in TASK_FIELDS:
            raise _FieldError(name, f"unknown field (allowed: {', '.join(TASK_FIELDS)})")
    for name in _REQUIRED:
        if name not in obj:
            raise _FieldError(name, "missing")
    tid, split, context = obj["id"], obj["split"], obj["context"]
    if not isinstance(tid, str) or not tid:
        raise _FieldError("id", f"must be a non-empty string, got {tid!r}")
    if not isinstance(split, str):
        raise _FieldError("split", f"must be a string, got {type(split).__name__}")
    if split not in SPLITS:
        raise _FieldError("split", f"unknown split {split!r} (allowed: {', '.join(SPLITS)})")
    if not isinstance(context, str):
        raise _FieldError("context", f"must be a string, got {type(context).__name__}")

    cands = obj["candidates"]
    if not isinstance(cands, list) or not cands:
        raise _FieldError("candidates", "must be a non-empty list")
    candidates, seen = [], {}
    for i, c in enumerate(cands):
        where = f"candidates[{i}]"
        if not isinstance(c, dict):
            raise _FieldError(where, f"must be an object with id and text, got {type(c).__name__}")
        for name in c:
            if name not in ("id", "text"):
                raise _FieldError(f"{where}.{name}", "unknown field (allowed: id, text)")
        for name in ("id", "text"):
            if name not in c:
                raise _FieldError(f"{where}.{name}", "missing")
        cid = _check_candidate_id(c["id"], f"{where}.id")
        if cid in seen:
            raise _FieldError(f"{where}.id", f"duplicate candidate id {cid!r} (also candidates[{seen[cid]}])")
        seen[cid] = i
        if not isinstance(c["text"], str):
            raise _FieldError(f"{where}.text", f"must be a string, got {type(c['text']).__name__}")
        candidates.append(Candidate(cid, c["text"]))

    rel = obj["relevance"]
    if not isinstance(rel, dict):
        raise _FieldError("relevance", f"must be an object mapping candidate ids to grades, got {type(rel).__name__}")
    for cid, grade in rel.items():
        where = f"relevance.{cid}"
        if cid not in seen:
            raise _FieldError(where, f"grade for unknown candidate id {cid!r}")
        if isinstance(grade, bool) or not isinstance(grade, (int, float)):
            raise _FieldError(where, f"grade must be a number, got {grade!r}")
        if not math.isfinite(grade):
            raise _FieldError(where, f"grade must be finite, got {grade!r}")
        if not 0 <= grade <= MAX_RELEVANCE:
            raise _FieldError(where, f"grade must be in [0, {MAX_RELEVANCE}], got {grade!r}")
    missing = [cid for cid in seen if cid not in rel]
    if missing:
        raise _FieldError(f"relevance.{missing[0]}",
                          f"no grade for candidate {missing[0]!r} (every candidate needs one; write 0 for none)")

    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise _FieldError("meta", f"must be an object, got {type(meta).__name__}")
    return Task(id=tid, context=context, candidates=tuple(candidates), relevance=dict(rel), split=split,
                meta=dict(meta))


def check_tasks(path, *, k: int | None = None, allow_mixed_k: bool = False,
                max_line_bytes: int = MAX_LINE_BYTES) -> tuple[list[Task], list[InputError]]:
    """Read every line; return (good tasks, one InputError per bad line). Raises only for problems of the
    whole file (missing, unreadable, empty) or a bad `k`."""
    tasks, errors = [], []
    for item in _iter_checked(path, k=k, allow_mixed_k=allow_mixed_k, max_line_bytes=max_line_bytes):
        (errors if isinstance(item, InputError) else tasks).append(item)
    return tasks, errors


def read_tasks(path, *, k: int | None = None, split: str | None = None, allow_mixed_k: bool = False,
               collect_errors: bool = False, max_line_bytes: int = MAX_LINE_BYTES):
    """Read and validate a task file (rules above). Returns list[Task], filtered to `split` when given
    (every line is validated either way).

    Raises InputError on the first bad line, unless collect_errors=True: then returns
    (tasks, errors) like check_tasks."""
    if split is not None and split not in SPLITS:
        raise InputError(f"unknown split {split!r} (allowed: {', '.join(SPLITS)})")
    if collect_errors:
        tasks, errors = check_tasks(path, k=k, allow_mixed_k=allow_mixed_k, max_line_bytes=max_line_bytes)
    else:
        tasks, errors = _read_strict(path, k=k, allow_mixed_k=allow_mixed_k, max_line_bytes=max_line_bytes)
    if split is not None:
        tasks = [t for t in tasks if t.split == split]
    return (tasks, errors) if collect_errors else tasks


def _read_strict(path, **kw) -> tuple[list[Task], list[InputError]]:
    # The same checks as check_tasks, stopping at the first bad line.
    tasks: list[Task] = []
    for task_or_error in _iter_checked(path, **kw):
        if isinstance(task_or_error, InputError):
            raise task_or_error
        tasks.append(task_or_error)
    return tasks, []


def _iter_checked(path, *, k, allow_mixed_k, max_line_bytes):
    # Yields a Task or an InputError per record, in file order, with the cross-record checks
    # (duplicate task id, K) applied to the tasks that passed the per-record checks.
    path = str(path)
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise InputError(f"k must be a positive integer, got {k!r}")
    first_line: dict[str, int] = {}
    k_seen = None
    for lineno, value, err in iter_jsonl(path, max_line_bytes=max_line_bytes):
        if err is not None:
            yield err
            continue
        try:
            task = _task_from_dict(value)
            if task.id in first_line:
                raise _FieldError("id", f"duplicate task id {task.id!r} (first on line {first_line[task.id]})")
            if k is not None and task.k != k:
                raise _FieldError("candidates", f"expected {k} candidates (k={k}), found {task.k}")
            if k is None and not allow_mixed_k and k_seen is not None and task.k != k_seen[0]:
                raise _FieldError("candidates", f"{task.k} candidates, but the task on line {k_seen[1]} has "
                                                f"{k_seen[0]} (mixed K needs allow_mixed_k=True)")
        except _FieldError as e:
            yield InputError(e.reason, path=path, line=lineno, field=e.field)
            continue
        first_line[task.id] = lineno
        if k_seen is None:
            k_seen = (task.k, lineno)
        yield task


# --------------------------------------------------------------------------------------------- writing

def write_tasks(path, tasks) -> None:
    """Write tasks (Task objects, or dicts in the record format) as JSONL, gzip-compressed when the path
    ends in .gz, atomically: a temporary file in
    the same directory, flushed and fsynced, then os.replace. Every task is validated first with the
    reader's rules (an InputError names the line it would have had), so what is written reads back."""
    path = str(path)
    lines, first_line = [], {}
    for lineno, task in enumerate(tasks, start=1):
        d = task.to_dict() if isinstance(task, Task) else task
        try:
            t = _task_from_dict(d)
            if t.id in first_line:
                raise _FieldError("id", f"duplicate task id {t.id!r} (first on line {first_line[t.id]})")
        except _FieldError as e:
            raise InputError(f"refusing to write: {e.reason}", path=path, line=lineno, field=e.field) from None
        first_line[t.id] = lineno
        lines.append(json.dumps(t.to_dict(), ensure_ascii=False, allow_nan=False))
    if not lines:
        raise InputError("refusing to write an empty task file", path=path)
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if path.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    atomic_write_bytes(path, data)
