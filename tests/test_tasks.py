"""Task files: every validation failure names file, line and field; gzip; atomic writes; collect mode."""

import gzip
import json
import os

import pytest

from listopd.util.errors import InputError
from listopd.task.tasks import (MAX_LINE_BYTES, Candidate, Task, check_tasks, read_tasks, task_from_dict,
                           write_tasks)


def rec(**over):
    d = {"id": "t1", "split": "train", "context": "bought socks",
         "candidates": [{"id": "A", "text": "red shoes"}, {"id": "B", "text": "blue hat"}],
         "relevance": {"A": 1, "B": 0}}
    d.update(over)
    return {k: v for k, v in d.items() if v is not DROP}


DROP = object()


def write_lines(tmp_path, lines, name="tasks.jsonl") -> str:
    path = tmp_path / name
    data = b"".join((x if isinstance(x, bytes) else (x if isinstance(x, str) else json.dumps(x)).encode()) + b"\n"
                    for x in lines)
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return str(path)


def error_of(tmp_path, lines, **kw) -> str:
    path = write_lines(tmp_path, lines)
    with pytest.raises(InputError) as e:
        read_tasks(path, **kw)
    return str(e.value)


def test_good_file_reads_into_tasks(tmp_path):
    path = write_lines(tmp_path, [rec(), "", "   ", rec(id="t2", split="test", meta={"user": "u1"})])
    tasks = read_tasks(path)
    assert [t.id for t in tasks] == ["t1", "t2"]
    t = tasks[0]
    assert t.candidates == (Candidate("A", "red shoes"), Candidate("B", "blue hat"))
    assert t.relevance == {"A": 1, "B": 0} and t.k == 2 and t.candidate_ids == ("A", "B")
    assert tasks[1].meta == {"user": "u1"} and tasks[1].split == "test"
    assert [t.id for t in read_tasks(path, split="test")] == ["t2"]


@pytest.mark.parametrize("line, field, reason", [
    ("{not json", None, "not JSON"),
    ("[1, 2]", None, "must be a JSON object"),
    ('"just a string"', None, "must be a JSON object"),
    (rec(id=DROP), "id", "missing"),
    (rec(split=DROP), "split", "missing"),
    (rec(context=DROP), "context", "missing"),
    (rec(candidates=DROP), "candidates", "missing"),
    (rec(relevance=DROP), "relevance", "missing"),
    (rec(extra=1), "extra", "unknown field"),
    (rec(id=7), "id", "non-empty string"),
    (rec(id=""), "id", "non-empty string"),
    (rec(context=None), "context", "must be a string"),
    (rec(split=1), "split", "must be a string"),
    (rec(split="dev"), "split", "unknown split 'dev'"),
    (rec(candidates=[]), "candidates", "non-empty list"),
    (rec(candidates={"A": "x"}), "candidates", "non-empty list"),
    (rec(candidates=["A", "B"]), "candidates[0]", "must be an object"),
    (rec(candidates=[{"id": "A"}, {"id": "B", "text": "x"}]), "candidates[0].text", "missing"),
    (rec(candidates=[{"id": "A", "text": "x", "score": 1}]), "candidates[0].score", "unknown field"),
    (rec(candidates=[{"id": "A", "text": 3}]), "candidates[0].text", "must be a string"),
    (rec(candidates=[{"id": 1, "text": "x"}]), "candidates[0].id", "must be a string"),
    (rec(candidates=[{"id": "", "text": "x"}]), "candidates[0].id", "non-empty"),
    (rec(candidates=[{"id": "A", "text": "x"}, {"id": "B C", "text": "y"}]), "candidates[1].id", "whitespace"),
    (rec(candidates=[{"id": 'A"', "text": "x"}]), "candidates[0].id", "quotes"),
    (rec(candidates=[{"id": "A'", "text": "x"}]), "candidates[0].id", "quotes"),
    (rec(candidates=[{"id": "A\\", "text": "x"}]), "candidates[0].id", "backslashes"),
    (rec(candidates=[{"id": "A", "text": "x"}, {"id": "A", "text": "y"}]), "candidates[1].id",
     "duplicate candidate id 'A'"),
    (rec(relevance=[1, 0]), "relevance", "must be an object"),
    (rec(relevance={"A": 1, "B": 0, "Z": 2}), "relevance.Z", "unknown candidate id 'Z'"),
    (rec(relevance={"A": 1}), "relevance.B", "no grade for candidate 'B'"),
    (rec(relevance={"A": "high", "B": 0}), "relevance.A", "must be a number"),
    (rec(relevance={"A": True, "B": 0}), "relevance.A", "must be a number"),
    (rec(relevance={"A": None, "B": 0}), "relevance.A", "must be a number"),
    ('{"id": "t1", "split": "train", "context": "", "candidates": [{"id": "A", "text": "x"}], '
     '"relevance": {"A": NaN}}', "relevance.A", "finite"),
    ('{"id": "t1", "split": "train", "context": "", "candidates": [{"id": "A", "text": "x"}], '
     '"relevance": {"A": Infinity}}', "relevance.A", "finite"),
    ('{"id": "t1", "split": "train", "context": "", "candidates": [{"id": "A", "text": "x"}], '
     '"relevance": {"A": 1e999}}', "relevance.A", "finite"),
    (rec(relevance={"A": -1, "B": 0}), "relevance.A", "in [0, 100]"),
    (rec(relevance={"A": 101, "B": 0}), "relevance.A", "in [0, 100]"),
    (rec(meta=[1]), "meta", "must be an object"),
    ('{"id": "t1", "id": "t2"}', None, "key 'id' appears twice"),
])
def test_each_bad_record_names_file_line_and_field(tmp_path, line, field, reason):
    msg = error_of(tmp_path, [rec(id="t0"), line])  # the bad record is on line 2
    prefix = str(tmp_path / "tasks.jsonl") + ":2"
    assert msg.startswith(prefix + (f": field '{field}': " if field else ": ")), msg
    assert reason in msg
    assert "\n" not in msg


def test_cross_record_problems(tmp_path):
    msg = error_of(tmp_path, [rec(), rec(context="again")])
    assert ":2: field 'id': duplicate task id 't1' (first on line 1)" in msg
    three = rec(id="t2", candidates=[{"id": x, "text": x} for x in "ABC"], relevance={"A": 0, "B": 1, "C": 0})
    msg = error_of(tmp_path, [rec(), three])
    assert ":2: field 'candidates': 3 candidates, but the task on line 1 has 2" in msg
    assert [t.k for t in read_tasks(write_lines(tmp_path, [rec(), three]), allow_mixed_k=True)] == [2, 3]
    msg = error_of(tmp_path, [rec()], k=3)
    assert ":1: field 'candidates': expected 3 candidates (k=3), found 2" in msg
    assert len(read_tasks(write_lines(tmp_path, [rec()]), k=2)) == 1


def test_encoding_empty_and_long_lines(tmp_path):
    bad = json.dumps(rec(id="t2")).encode().replace(b"red", b"r\xffd")
    msg = error_of(tmp_path, [rec(), bad])
    assert msg.startswith(str(tmp_path / "tasks.jsonl") + ":2: not valid UTF-8: byte 0xff")
    assert "empty file" in error_of(tmp_path, [])
    assert "empty file" in error_of(tmp_path, ["", "  "])
    huge = rec(id="t2", context="x" * MAX_LINE_BYTES)
    msg = error_of(tmp_path, [rec(), huge, rec(id="t3")])
    assert f":2: line longer than {MAX_LINE_BYTES} bytes" in msg
    # collect mode skips past the long line and goes on counting lines correctly
    tasks, errors = check_tasks(write_lines(tmp_path, [rec(), huge, rec(id="t3", split="x")]))
    assert [t.id for t in tasks] == ["t1"] and [e.line for e in errors] == [2, 3]
    with pytest.raises(InputError, match="file not found"):
        read_tasks(tmp_path / "nope.jsonl")


def test_bom_crlf_and_gzip(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(rec()).encode() + b"\r\n")
    assert read_tasks(path)[0].id == "t1"
    gz = write_lines(tmp_path, [rec(), rec(id="t2")], name="tasks.jsonl.gz")
    assert [t.id for t in read_tasks(gz)] == ["t1", "t2"]
    gz_bad = write_lines(tmp_path, [rec(), rec()], name="dup.jsonl.gz")
    with pytest.raises(InputError, match=r"dup\.jsonl\.gz:2: field 'id': duplicate task id"):
        read_tasks(gz_bad)
    corrupt = tmp_path / "corrupt.jsonl.gz"
    corrupt.write_bytes(gzip.compress(json.dumps(rec()).encode() * 50)[:60])
    with pytest.raises(InputError, match="corrupt.jsonl.gz"):
        read_tasks(corrupt)


def test_collect_errors_reports_every_bad_line(tmp_path):
    lines = [rec(), "{oops", rec(id="t2", split="dev"), rec(id="t3"), rec(), rec(id="t4", relevance={"A": 1})]
    path = write_lines(tmp_path, lines)
    tasks, errors = read_tasks(path, collect_errors=True)
    assert [t.id for t in tasks] == ["t1", "t3"]
    assert [(e.line, e.field) for e in errors] == [(2, None), (3, "split"), (5, "id"), (6, "relevance.B")]
    assert all(e.path == path for e in errors)
    assert check_tasks(path)[1][1].reason.startswith("unknown split")
    with pytest.raises(InputError, match=":2: not JSON"):
        read_tasks(path)  # strict mode stops at the first one
    with pytest.raises(InputError, match="unknown split 'dev'"):
        read_tasks(path, split="dev")


def test_task_from_dict_names_the_field():
    with pytest.raises(InputError, match="field 'candidates\\[0\\].id'"):
        task_from_dict(rec(candidates=[{"id": "A B", "text": "x"}]))


def _task(i, k=2):
    ids = "ABCDEFGH"[:k]
    return Task(id=f"t{i}", context="ctx é", candidates=tuple(Candidate(x, f"text {x}") for x in ids),
                relevance={x: float(j == 0) for j, x in enumerate(ids)}, split="validation", meta={"n": i})


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_write_read_round_trip(tmp_path, name):
    tasks = [_task(i) for i in range(3)]
    path = tmp_path / name
    write_tasks(path, tasks)
    assert read_tasks(path) == tasks
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    assert sorted(os.listdir(tmp_path)) == [name]  # no temporary file left behind


def test_write_is_validated_and_atomic(tmp_path):
    path = tmp_path / "out.jsonl"
    write_tasks(path, [_task(0)])
    before = path.read_bytes()
    bad = Task(id="t9", context="", candidates=(Candidate("A B", "x"),), relevance={"A B": 1.0})
    with pytest.raises(InputError, match=r"out\.jsonl:2: field 'candidates\[0\]\.id': refusing to write"):
        write_tasks(path, [_task(1), bad])
    with pytest.raises(InputError, match="duplicate task id"):
        write_tasks(path, [_task(1), _task(1)])
    with pytest.raises(InputError, match="empty task file"):
        write_tasks(path, [])
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["out.jsonl"]
    write_tasks(path, [_task(2, k=3)])  # replaces the old file
    assert [t.id for t in read_tasks(path)] == ["t2"]
