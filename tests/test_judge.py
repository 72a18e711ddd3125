"""`listopd judge` end to end over real HTTP: against a `listopd serve` subprocess running a tiny random model
(its answers are garbage, so every grade must be recorded as unparseable, never guessed), and against a small
stdlib http.server on loopback scripted to fail (500s, 429, timeouts, 4xx, malformed bodies) — checking the
retries and their backoff, the request budget, the SQLite cache (a re-run sends nothing) and the API key
(read from the environment only, sent as a Bearer header). Plus the rubric loader and the strict grade parser.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from listopd.cli import main
from listopd.task.prompts import target_text
from listopd.task.tasks import write_tasks
from serve_process import start_server

RUBRIC = """---
version: test-v1
scale: {min: 1, max: 5}
grade_format: "GRADE: <n>"
max_tokens: 8
---
Grade this ranking: {{output}}
"""


def grade_reply(content: str) -> dict:
    return {"id": "x", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}


OK = (200, grade_reply("Plausible order.\nGRADE: 4"), {})


@contextmanager
def scripted_endpoint(script):
    """A real HTTP server on 127.0.0.1 (stdlib, one thread per request). Request i gets script[i] (the last
    entry repeats): (status, JSON body or raw bytes, headers), or ("sleep", seconds) to answer too late.
    Yields (base_url, log); log holds {"t", "path", "auth", "body"} per request received."""
    log, lock = [], threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                i = len(log)
                log.append({"t": time.monotonic(), "path": self.path, "auth": self.headers.get("Authorization"),
                            "body": body})
            action = script[min(i, len(script) - 1)]
            if action[0] == "sleep":
                time.sleep(action[1])
                action = OK
            status, payload, headers = action
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up (timeout): nothing to answer
                pass

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", log
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def files(tmp_path, world):
    """A rubric, 5 tasks and their outputs (reference rankings, one garbage)."""
    tasks = world.train_tasks[:5]
    write_tasks(tmp_path / "tasks.jsonl", tasks)
    with open(tmp_path / "outputs.jsonl", "w") as f:
        for i, t in enumerate(tasks):
            f.write(json.dumps({"id": t.id, "output": "no idea" if i == 0 else target_text(t)}) + "\n")
    (tmp_path / "rubric.md").write_text(RUBRIC)
    return tmp_path


def run_judge(files, base_url, *extra, model="judge", out="out.json"):
    argv = ["judge", "--tasks", str(files / "tasks.jsonl"), "--outputs", str(files / "outputs.jsonl"),
            "--rubric", str(files / "rubric.md"), "--base-url", base_url, "--model", model,
            "--out", str(files / out), "--backoff", "0.05", *extra]
    rc = main(argv)
    result = json.loads((files / out).read_text()) if rc == 0 else None
    return rc, result


# ------------------------------------------------------------------------------------------ against listopd serve

@pytest.fixture(scope="module")
def tiny_server(world):
    with start_server(world.student, "--served-model-name", "tiny", "--quiet") as s:
        yield s
        assert s.stop() == 0


def test_judge_through_listopd_serve_records_garbage_as_unparseable_and_rerun_hits_the_cache(files, tiny_server):
    received = tiny_server.health()["requests_received"]
    rc, first = run_judge(files, tiny_server.v1, "--concurrency", "3", model="tiny")
    assert rc == 0
    s = first["summary"]
    assert (s["tasks"], s["unparseable"], s["graded"], s["failed"], s["over_budget"]) == (5, 5, 0, 0, 0)
    assert s["requests_sent"] == 5 and s["cache_hits"] == 0 and s["mean_grade"] is None
    assert tiny_server.health()["requests_received"] - received == 5
    for g in first["grades"]:
        assert g["grade"] is None and isinstance(g["raw"], str) and g["reason"] and g["attempts"] == 1
    # the raw text kept is exactly what the server answers for that request
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Grade this ranking: no idea\n"}],
            "temperature": 0.0, "max_tokens": 8}
    direct = httpx.post(tiny_server.v1 + "/chat/completions", json=body, timeout=60).json()
    assert first["grades"][0]["raw"] == direct["choices"][0]["message"]["content"]

    received = tiny_server.health()["requests_received"]
    rc, again = run_judge(files, tiny_server.v1, model="tiny")
    assert rc == 0 and tiny_server.health()["requests_received"] == received  # zero new requests
    assert again["summary"]["requests_sent"] == 0 and again["summary"]["cache_hits"] == 5
    assert [dict(g, cached=False, attempts=1) for g in again["grades"]] == first["grades"]
    assert all(g["cached"] for g in again["grades"])


def test_a_model_the_server_does_not_have_fails_without_retries(files, tiny_server):
    rc, result = run_judge(files, tiny_server.v1, model="not-served", out="other.json")
    assert rc == 0
    assert result["summary"]["failed"] == 5 and result["summary"]["requests_sent"] == 5  # 404: no retry
    assert all("HTTP 404" in g["reason"] and g["attempts"] == 1 for g in result["grades"])


# ------------------------------------------------------------------------------------------ scripted failures

@pytest.mark.parametrize("script, extra, status, attempts, reason", [
    ([(500, {"error": {"message": "boom"}}, {}), (500, b"oops", {}), OK], [], "graded", 3, None),
    ([(503, {"error": {"message": "overloaded"}}, {})], ["--retries", "2"], "failed", 3, "HTTP 503: overloaded"),
    ([(400, {"error": {"message": "bad request"}}, {})], [], "failed", 1, "HTTP 400: bad request"),
    ([(200, b"<html>not json</html>", {})], [], "failed", 1, "malformed response"),
    ([(200, grade_reply("GRADE: 4.5"), {})], [], "unparseable", 1, "the last line is not of the form"),
    ([(200, grade_reply("GRADE: 9"), {})], [], "unparseable", 1, "grade 9 outside the scale 1..5"),
    ([(200, grade_reply("GRADE: 3\nGRADE: 4"), {})], [], "unparseable", 1, "2 grade lines"),
])
def test_endpoint_failures_are_retried_or_recorded(files, script, extra, status, attempts, reason):
    with scripted_endpoint(script) as (url, log):
        rc, result = run_judge(files, url, "--concurrency", "1", "--no-cache", *extra)
    assert rc == 0
    first = result["grades"][0]
    assert first["status"] == status and first["attempts"] == attempts
    assert (first["reason"] is None) if reason is None else reason in first["reason"]
    if status == "graded":
        assert first["grade"] == 4
    if status == "unparseable":
        assert first["raw"] == script[0][1]["choices"][0]["message"]["content"]
    assert result["summary"]["requests_sent"] == len(log)


def test_retries_back_off_exponentially_and_honour_retry_after(files):
    script = [(500, b"", {}), (500, b"", {}), (429, b"", {"Retry-After": "1"}), OK]
    with scripted_endpoint(script) as (url, log):
        rc, result = run_judge(files, url, "--concurrency", "1", "--no-cache", "--backoff", "0.2")
    assert rc == 0 and result["grades"][0]["status"] == "graded" and result["grades"][0]["attempts"] == 4
    gaps = [b["t"] - a["t"] for a, b in zip(log, log[1:4])]
    # retry a waits between d/2 and d, d = 0.2·2^(a-1); the third waits for Retry-After (1 s) instead
    assert 0.1 <= gaps[0] < 0.2 + 0.5 and 0.2 <= gaps[1] < 0.4 + 0.5 and gaps[2] >= 1.0, gaps


def test_timeouts_are_retried_then_recorded_as_failed(files):
    with scripted_endpoint([("sleep", 1.5)]) as (url, log):
        t0 = time.monotonic()
        rc, result = run_judge(files, url, "--concurrency", "5", "--no-cache", "--timeout", "0.3",
                               "--retries", "1")
        elapsed = time.monotonic() - t0
    assert rc == 0 and elapsed < 5
    s = result["summary"]
    assert s["failed"] == 5 and s["requests_sent"] == 10 == len(log)
    assert all(g["reason"] == "timed out after 0.3 s" and g["attempts"] == 2 for g in result["grades"])


def test_the_request_budget_is_respected_and_the_cache_fills_the_rest_on_a_rerun(files, capsys):
    with scripted_endpoint([OK]) as (url, log):
        rc, result = run_judge(files, url, "--max-requests", "3", "--concurrency", "2")
        s = result["summary"]
        assert (s["graded"], s["over_budget"], s["requests_sent"], len(log)) == (3, 2, 3, 3)
        assert "2 of 5 tasks not graded: --max-requests 3 spent" in capsys.readouterr().err
        assert {g["status"] for g in result["grades"]} == {"graded", "over_budget"}
        rc, result = run_judge(files, url, "--max-requests", "2")
        s = result["summary"]
        assert (s["graded"], s["cache_hits"], s["requests_sent"], len(log)) == (5, 3, 2, 5)
        assert s["mean_grade"] == 4.0 and s["grade_counts"]["4"] == 5


def test_the_api_key_comes_from_the_environment_only_and_is_sent_as_bearer(files, monkeypatch, capsys):
    monkeypatch.setenv("LISTOPD_TEST_JUDGE_KEY", "s3cret-key")
    with scripted_endpoint([OK]) as (url, log):
        rc, _ = run_judge(files, url, "--api-key-env", "LISTOPD_TEST_JUDGE_KEY", "--concurrency", "1")
        assert rc == 0 and {r["auth"] for r in log} == {"Bearer s3cret-key"}
        rc, _ = run_judge(files, url, "--no-cache", out="nokey.json")
        assert rc == 0 and log[-1]["auth"] is None
        n = len(log)
        monkeypatch.delenv("LISTOPD_TEST_JUDGE_KEY")
        capsys.readouterr()
        rc, _ = run_judge(files, url, "--api-key-env", "LISTOPD_TEST_JUDGE_KEY", out="unset.json")
        assert rc == 2 and len(log) == n and not (files / "unset.json").exists()
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["listopd judge: error: --api-key-env LISTOPD_TEST_JUDGE_KEY: the environment variable "
                       "LISTOPD_TEST_JUDGE_KEY is not set or empty"]
    for f in files.iterdir():  # the key is stored nowhere: not in the results, not in the cache
        assert b"s3cret-key" not in f.read_bytes(), f
    monkeypatch.setenv("LISTOPD_TEST_JUDGE_KEY", "s3cret-key")
    rc, _ = run_judge(files, "http://judge.example.org/v1", "--api-key-env", "LISTOPD_TEST_JUDGE_KEY",
                      out="plain.json")
    assert rc == 2 and "over plain http" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ rubric and cache key

def test_builtin_rubric_renders_the_task_and_the_output(world):
    from listopd.grading.rubric import load_rubric

    r = load_rubric("ranking_v1")
    assert (r.version, r.scale_min, r.scale_max, r.grade_format) == ("ranking-v1", 1, 5, "GRADE: <n>")
    task = world.val_tasks[0]
    messages = r.messages(task, "OUTPUT {{context}}")
    assert [m["role"] for m in messages] == ["system", "user"]
    text = messages[1]["content"]
    assert task.context.strip() in text and "OUTPUT {{context}}" in text  # inserted text is not re-expanded
    for c in task.candidates:
        assert f"[{c.id}] {' '.join(c.text.split())}" in text
    assert "{{" not in text.replace("OUTPUT {{context}}", "")


@pytest.mark.parametrize("answer, grade", [
    ("Good.\nGRADE: 5", 5), ("GRADE: 1\n\n", 1), ("  GRADE: 3  ", 3),
    ("GRADE: 4.5", None), ("GRADE: +4", None), ("GRADE: 04", None), ("**GRADE: 4**", None), ("grade: 4", None),
    ("GRADE: 4\nThanks!", None), ("GRADE: 0", None), ("GRADE: 6", None), ("GRADE: 2\nGRADE: 2", None),
    ("", None), (None, None), ("I would give it a 4.", None),
])
def test_grade_parsing_is_strict(answer, grade):
    from listopd.grading.rubric import load_rubric

    got, why = load_rubric("ranking_v1").parse_grade(answer)
    assert got == grade and (why is None) == (grade is not None)


@pytest.mark.parametrize("text, field", [
    ("no front matter {{output}}", None),
    ("---\nversion: 1\nscale: {min: 1, max: 5}\ngrade_format: 'G: <n>'\n---\nno output here", "prompt"),
    ("---\nversion: 1\nscale: {min: 1, max: 5}\ngrade_format: 'G: <n>'\n---\n{{outptu}}", "prompt"),
    ("---\nversion: 1\nscale: {min: 5, max: 1}\ngrade_format: 'G: <n>'\n---\n{{output}}", "scale"),
    ("---\nversion: 1\nscale: {min: 1, max: 5}\ngrade_format: 'G: n'\n---\n{{output}}", "grade_format"),
    ("---\nscale: {min: 1, max: 5}\ngrade_format: 'G: <n>'\n---\n{{output}}", "version"),
    ("---\nversion: 1\nscale: {min: 1, max: 5}\ngrade_format: 'G: <n>'\ncolour: red\n---\n{{output}}", "colour"),
])
def test_bad_rubrics_are_refused_naming_the_field(tmp_path, text, field):
    from listopd.util.errors import InputError
    from listopd.grading.rubric import load_rubric

    (tmp_path / "r.md").write_text(text)
    with pytest.raises(InputError) as e:
        load_rubric(str(tmp_path / "r.md"))
    assert e.value.path.endswith("r.md") and e.value.field == field


def test_yaml_rubric(tmp_path):
    from listopd.grading.rubric import load_rubric

    (tmp_path / "r.yaml").write_text("version: y1\nscale: {min: 0, max: 2}\ngrade_format: 'SCORE=<n>'\n"
                                     "prompt: 'Rate {{output}} for task {{task_id}}'\n")
    r = load_rubric(str(tmp_path / "r.yaml"))
    assert r.parse_grade("SCORE=2") == (2, None) and r.parse_grade("SCORE=3")[0] is None


def test_cache_key_covers_what_fixes_the_answer():
    from listopd.grading.chat_client import cache_key, normalise_endpoint

    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0.0, "max_tokens": 8}
    base = dict(scope="v1", endpoint=normalise_endpoint("https://api.example.org/v1/"), body=body)
    key = cache_key(**base)
    assert cache_key(**dict(base, body=dict(reversed(body.items())))) == key  # key order does not matter
    assert normalise_endpoint("https://API.example.org:443/v1") == base["endpoint"]
    for change in (dict(scope="v2"), dict(endpoint=normalise_endpoint("http://127.0.0.1:8000/v1")),
                   dict(body=dict(body, model="m2")), dict(body=dict(body, max_tokens=9)),
                   dict(body=dict(body, messages=[{"role": "user", "content": "y"}]))):
        assert cache_key(**dict(base, **change)) != key, change
