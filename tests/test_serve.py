"""`listopd serve` as a real subprocess on loopback, talked to over HTTP (no mocks): the OpenAI response shape,
greedy output equal to in-process generation, seeded sampling, validation errors, batching of concurrent
requests, the bounded queue, and clean shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading

import httpx
import pytest
import torch

from serve_process import start_server

NAME = "tiny"


@pytest.fixture(scope="module")
def server(world):
    with start_server(world.student, "--served-model-name", NAME, "--batch-window-ms", "20") as s:
        yield s
        assert s.stop() == 0


def chat(url, content, timeout=60, **fields):
    body = {"model": NAME, "messages": [{"role": "user", "content": content}], **fields}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=timeout)


def concurrently(fn, args_list):
    """Call fn(*args) for every args at once (threads released together); results in order."""
    results = [None] * len(args_list)
    barrier = threading.Barrier(len(args_list))

    def go(i, args):
        barrier.wait()
        try:
            results[i] = fn(*args)
        except Exception as e:  # noqa: BLE001 - a lost request is reported, not raised in the thread
            results[i] = e

    threads = [threading.Thread(target=go, args=(i, a)) for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def local_greedy(model_dir, content, max_tokens):
    """The same completion generated in this process: chat template + listopd.train.rollout.sample, greedy."""
    from listopd.train.models import load_model, load_tokenizer
    from listopd.train.rollout import sample

    tok, model = load_tokenizer(model_dir), load_model(model_dir)
    text = tok.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
    prompt = tok.encode(text, add_special_tokens=False)
    ids = sample(model, [prompt], max_new_tokens=max_tokens, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                 greedy=True).completion_ids[0].tolist()
    if tok.eos_token_id in ids:
        ids = ids[:ids.index(tok.eos_token_id)]
    return len(prompt), tok.decode(ids, skip_special_tokens=True)


def test_chat_completion_shape_and_greedy_matches_local_generation(server, world):
    content = world.val_tasks[0].context
    r = chat(server.url, content, max_tokens=12, temperature=0)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert body["model"] == NAME and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    n_prompt, text = local_greedy(world.student, content, 12)
    assert usage["prompt_tokens"] == n_prompt
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert choice["message"]["content"] == text and text
    assert usage["completion_tokens"] <= 12
    if choice["finish_reason"] == "length":
        assert usage["completion_tokens"] == 12
    again = chat(server.url, content, max_tokens=12, temperature=0).json()
    assert again["choices"][0]["message"]["content"] == choice["message"]["content"]
    assert again["id"] != body["id"]


def test_seeded_sampling_is_reproducible(server, world):
    content = world.val_tasks[1].context
    texts = [chat(server.url, content, max_tokens=16, temperature=1.0, seed=s).json() for s in range(4)]
    texts = [t["choices"][0]["message"]["content"] for t in texts]
    assert len(set(texts)) == 4
    for s in (0, 3):
        again = chat(server.url, content, max_tokens=16, temperature=1.0, seed=s).json()
        assert again["choices"][0]["message"]["content"] == texts[s]


def test_engine_rows_keep_their_own_max_tokens_and_stop_at_eos(world):
    """In-process: one batch with different max_tokens gives each row what it would get alone, and a
    completion that emits EOS ends with finish_reason "stop", counting the EOS as a completion token."""
    from listopd.serving.batching import Engine, Row
    from listopd.train.models import load_model, load_tokenizer
    from listopd.task.prompts import render_messages
    from listopd.train.rollout import sample

    tok = load_tokenizer(world.student)
    engine = Engine(load_model(world.student), tok)
    prompts = [engine.encode(render_messages(t)) for t in world.val_tasks[:2]]
    batch = engine.generate([Row(prompts[0], 5, 0.0), Row(prompts[1], 9, 0.0)])
    alone = [engine.generate([Row(prompts[0], 5, 0.0)])[0], engine.generate([Row(prompts[1], 9, 0.0)])[0]]
    assert batch == alone
    assert [c.finish_reason for c in batch] == ["length", "length"]
    assert [c.completion_tokens for c in batch] == [5, 9]

    eos_model = load_model(world.eos_student)
    engine = Engine(eos_model, tok)
    got = [engine.generate([Row(prompts[0], 24, 1.0, seed=s)])[0] for s in range(6)]
    assert {c.finish_reason for c in got} == {"stop", "length"}
    for s, c in enumerate(got):
        ids = sample(eos_model, [prompts[0]], max_new_tokens=24, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                     generator=torch.Generator().manual_seed(s)).completion_ids[0].tolist()
        if c.finish_reason == "stop":
            n = ids.index(tok.eos_token_id) + 1
            assert c.completion_tokens == n and c.text == tok.decode(ids[:n - 1], skip_special_tokens=True)
        else:
            assert tok.eos_token_id not in ids and c.completion_tokens == 24


def test_models_and_health(server):
    models = httpx.get(server.url + "/v1/models", timeout=10).json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [NAME]
    h = server.health()
    assert h["status"] == "ok" and h["model"] == NAME
    for key in ("requests_received", "requests_answered", "batches", "max_batch_seen", "queued", "running",
                "rejected_queue_full"):
        assert isinstance(h[key], int)


@pytest.mark.parametrize("change, param", [
    ({"temperature": 3}, "temperature"),
    ({"temperature": "0.5"}, "temperature"),  # strict types: no strings for numbers
    ({"top_p": 0}, "top_p"),
    ({"n": 2}, "n"),
    ({"stream": True}, "stream"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 100000}, "max_tokens"),  # over the server's limit
    ({"stop": ["\n"]}, "stop"),  # unsupported fields are refused, not ignored
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({"messages": None}, "messages"),
    ({"model": None}, "model"),
])
def test_invalid_requests_get_400_naming_the_field(server, change, param):
    body = {"model": NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param
    assert err["message"].startswith(param + ":")


def test_other_errors_use_the_openai_body(server):
    r = httpx.post(server.url + "/v1/chat/completions", content=b"{not json", timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = chat(server.url, "hi", max_tokens=4, model="gpt-4")
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    assert r.json()["error"]["code"] == "model_not_found"
    r = chat(server.url, "hi " * 2000, max_tokens=4)  # longer than the 1024-token context
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert httpx.get(server.url + "/nope", timeout=10).json()["error"]["message"] == "Not Found"


def test_concurrent_requests_are_batched_and_all_answered(server, world):
    contents = [t.context for t in world.train_tasks[:8]]
    before = server.health()
    answers = concurrently(lambda c: chat(server.url, c, max_tokens=12, temperature=0), [(c,) for c in contents])
    after = server.health()
    assert all(isinstance(a, httpx.Response) and a.status_code == 200 for a in answers), answers
    assert after["requests_answered"] - before["requests_answered"] == 8
    batches = after["batches"] - before["batches"]
    assert batches < 8 and after["max_batch_seen"] > 1, (before, after)
    # batching changes nothing: each answer equals the same request sent alone
    for c, a in zip(contents, answers):
        alone = chat(server.url, c, max_tokens=12, temperature=0).json()
        assert a.json()["choices"][0]["message"]["content"] == alone["choices"][0]["message"]["content"]


def test_full_queue_answers_503_and_sigint_past_the_drain_timeout_fails_queued_requests(world):
    with start_server(world.student, "--served-model-name", NAME, "--max-batch", "1", "--queue-size", "1",
                      "--batch-window-ms", "0", "--drain-timeout", "0") as s:
        # 1. eight requests at once: one runs, one waits, the rest are refused at once (never left hanging)
        answers = concurrently(lambda: chat(s.url, "hello", max_tokens=150, temperature=0), [()] * 8)
        assert all(isinstance(a, httpx.Response) for a in answers), answers
        codes = [a.status_code for a in answers]
        assert set(codes) <= {200, 503} and codes.count(200) >= 2 and codes.count(503) >= 1, codes
        for a in answers:
            if a.status_code == 503:
                assert a.headers["Retry-After"] == "1"
                assert a.json()["error"]["code"] == "queue_full"
            else:
                assert a.json()["usage"]["completion_tokens"] == 150
        assert s.health()["rejected_queue_full"] == codes.count(503)

        # 2. SIGINT with one request running and one queued, drain timeout 0: the running one is answered,
        #    the queued one gets a 503 that says why, and the server exits 0. The second request is sent only
        #    once the first runs: sent together, on a loaded machine the second could find the first still in
        #    the one-place queue and be refused as queue_full. The running one is long so that it still runs
        #    when the second is queued.
        results = []

        def send(max_tokens):
            results.append(chat(s.url, "hello", max_tokens=max_tokens, temperature=0))

        threads = [threading.Thread(target=send, args=(n,)) for n in (400, 100)]
        threads[0].start()
        s.wait_for(lambda h: h["running"] == 1)
        threads[1].start()
        s.wait_for(lambda h: h["running"] == 1 and h["queued"] == 1)
        assert s.stop(signal.SIGINT) == 0
        for thread in threads:
            thread.join(60)
        assert sorted(r.status_code for r in results) == [200, 503]
        err = next(r for r in results if r.status_code == 503).json()["error"]
        assert err["code"] == "shutting_down" and "shut down before this request ran" in err["message"]


def test_a_taken_port_is_a_one_line_error(world):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "listopd", "serve", world.student, "--port", str(port)],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"listopd serve: error: cannot listen on 127.0.0.1:{port}: "
                                             "Address already in use"]
    assert r.stdout == ""


def test_sigterm_answers_accepted_requests_then_exits_0(server):
    """Last test of the module: it stops the shared server. Ten requests against a batch limit of eight,
    so that some run and some wait when SIGTERM comes; all are answered, then the server exits 0."""
    results = []
    thread = threading.Thread(target=lambda: results.extend(
        concurrently(lambda: chat(server.url, "hello", max_tokens=100, temperature=0), [()] * 10)))
    thread.start()
    server.wait_for(lambda h: h["running"] > 0 and h["running"] + h["queued"] == 10 and h["queued"] > 0)
    assert server.stop(signal.SIGTERM) == 0
    thread.join(60)
    assert [r.status_code for r in results] == [200] * 10
    assert all(r.json()["usage"]["completion_tokens"] == 100 for r in results)
    assert any("SIGTERM: shutting down" in line for line in server.lines)
    assert server.lines[-1] == "listopd serve: stopped"
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health", timeout=5)
