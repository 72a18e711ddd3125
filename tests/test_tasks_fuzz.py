"""Fuzz the task-file reader: on any bytes, read_tasks returns tasks or raises InputError (nothing else), in
bounded time; what it accepts is a valid task list. Random bytes, and byte-level mutations (flips, inserts,
deletions, truncation, gzip) of a valid file, so the fuzzer gets past the JSON parser into the field checks.
"""

from __future__ import annotations

import gzip
import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listopd.util.errors import InputError
from listopd.task.tasks import Task, check_tasks, read_tasks

GOOD = [
    {"id": "t1", "split": "train", "context": "bought socks",
     "candidates": [{"id": "A", "text": "red shoes"}, {"id": "B", "text": "blue hat"}],
     "relevance": {"A": 1, "B": 0}},
    {"id": "t2", "split": "test", "context": "é ✓ \u2028", "candidates": [{"id": "A", "text": ""},
                                                                        {"id": "C", "text": "x"}],
     "relevance": {"A": 0.5, "C": 3}, "meta": {"k": [1, None]}},
]
GOOD_BYTES = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in GOOD).encode()
TOKENS = [b"{", b"}", b"[", b"]", b'"', b":", b",", b"\n", b"\r\n", b"NaN", b"-1", b"1e999", b"null", b"true",
          b'"id"', b'"A"', b'"relevance"', b'"candidates"', b"\xef\xbb\xbf", b"\xff", b"\x00", b"\\u0000",
          b'"\\ud800"', b" ", b"0" * 5000]


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(GOOD_BYTES)
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "flip":
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(TOKENS))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 20))]
        else:
            del data[at:]
    out = bytes(data)
    return gzip.compress(out) if draw(st.booleans()) else out


def check_any_bytes(tmp_path_factory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "tasks.jsonl"
    path.write_bytes(data)
    for kw in ({}, {"allow_mixed_k": True}, {"k": 2}):
        t0 = time.monotonic()
        try:
            tasks = read_tasks(path, **kw)
        except InputError as e:
            assert str(e) and "\n" not in str(e).strip("\n")
        else:
            assert tasks and all(isinstance(t, Task) for t in tasks)
            assert len({t.id for t in tasks}) == len(tasks)
        assert time.monotonic() - t0 < 5.0
    try:
        good, errors = check_tasks(path, allow_mixed_k=True)
    except InputError:
        return
    assert all(isinstance(e, InputError) for e in errors)


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                            HealthCheck.too_slow])


@SETTINGS
@given(data=st.binary(max_size=2000))
def test_read_tasks_on_random_bytes(tmp_path_factory, data):
    check_any_bytes(tmp_path_factory, data)


@SETTINGS
@given(data=st.binary(max_size=300).map(lambda b: b"\x1f\x8b" + b)
       | st.tuples(st.binary(min_size=1, max_size=8), st.integers(0, 60)).map(
           lambda t: (lambda z: z[:t[1] % len(z)] + t[0] + z[t[1] % len(z) + len(t[0]):])(gzip.compress(GOOD_BYTES))))
def test_read_tasks_on_broken_gzip(tmp_path_factory, data):
    """A gzip header followed by garbage, and a valid gzip file with a few bytes overwritten (found by
    scripts/fuzz_contract.py: a bad deflate block raised zlib.error, not InputError)."""
    check_any_bytes(tmp_path_factory, data)


@SETTINGS
@given(data=mutated())
def test_read_tasks_on_mutated_valid_files(tmp_path_factory, data):
    check_any_bytes(tmp_path_factory, data)
