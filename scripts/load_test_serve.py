"""Load test of `listopd serve` on loopback: start the server on a tiny model, send a fixed number of chat
completion requests (real listwise prompts from the synthetic catalogue) at each stated concurrency, and
report requests/s, latency percentiles, failed requests (any answer but 200) and lost ones (no answer at
all: connection errors, timeouts). Both must be 0. Stops the server with SIGTERM and checks it exits 0.

    .venv/bin/python scripts/load_test_serve.py --requests 200 --concurrency 8 32 --out runs/load_test.json

Without --model it builds a random-init tiny-student (with a tokenizer trained on the synthetic tasks) in a
temporary folder: the numbers measure the server (queue, batching, HTTP), not a trained model. Every request
is greedy with a fixed max_tokens, so the work per request is the same in every run. Traffic goes to
127.0.0.1 only, and the loops are bounded by --requests and the per-request timeout.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np


def build_tiny_model(folder: Path) -> str:
    from listopd.task.data.synth import make_synth_tasks
    from listopd.train.models import build_model
    from listopd.task.tokenizer import task_texts, train_tokenizer

    tasks = make_synth_tasks(n_items=200, n_users=100, seed=0)
    tok = train_tokenizer(task_texts(tasks), vocab_size=2048)
    model = build_model("tiny-student", tok, seed=0)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return str(folder)


def start_server(model: str, flags: list[str]) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "listopd", "serve", model, "--port", "0", "--quiet",
                             "--served-model-name", "load-test", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in proc.stdout:
        m = re.search(r"listening on (http://\S+:\d+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep draining
            return proc, m.group(1)
        print(line, end="", file=sys.stderr)
    raise SystemExit(f"listopd serve did not start (exit code {proc.wait()})")


def percentile(values, q):
    return round(float(np.percentile(values, q)), 4) if values else float("nan")


def run_level(url: str, bodies: list[dict], concurrency: int, timeout: float) -> dict:
    """Send every body once with `concurrency` requests in flight; per-request latency and outcome."""
    latencies, failed, lost, completion_tokens = [], [], [], 0
    lock = threading.Lock()
    before = httpx.get(url + "/health", timeout=30).json()

    def one(client, body):
        nonlocal completion_tokens
        t0 = time.perf_counter()
        try:
            r = client.post(url + "/v1/chat/completions", json=body)
        except httpx.HTTPError as e:
            with lock:
                lost.append(f"{type(e).__name__}: {e}")
            return
        dt = time.perf_counter() - t0
        with lock:
            if r.status_code == 200:
                latencies.append(dt)
                completion_tokens += r.json()["usage"]["completion_tokens"]
            else:
                failed.append(f"HTTP {r.status_code}: {r.text[:200]}")

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(timeout=timeout, limits=limits) as client, ThreadPoolExecutor(concurrency) as pool:
        t0 = time.perf_counter()
        list(pool.map(lambda b: one(client, b), bodies))
        wall = time.perf_counter() - t0
    after = httpx.get(url + "/health", timeout=30).json()
    batches = after["batches"] - before["batches"]
    return {
        "concurrency": concurrency, "requests": len(bodies), "ok": len(latencies), "failed": len(failed),
        "lost": len(lost), "wall_s": round(wall, 3), "requests_per_s": round(len(latencies) / wall, 2),
        "completion_tokens_per_s": round(completion_tokens / wall, 1),
        "latency_s": {f"p{q}": percentile(latencies, q) for q in (50, 90, 99)},
        "batches": batches, "mean_batch_size": round((after["rows_generated"] - before["rows_generated"])
                                                     / max(1, batches), 2),
        "max_batch_seen": after["max_batch_seen"],
        "errors": (failed + lost)[:5],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model folder to serve (default: a random tiny-student built in a temp dir)")
    p.add_argument("--requests", type=int, default=200, help="requests per concurrency level (default 200)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[8, 32], help="levels (default 8 32)")
    p.add_argument("--max-tokens", type=int, default=32, help="max_tokens of every request (default 32)")
    p.add_argument("--max-batch", type=int, default=8, help="the server's --max-batch (default 8)")
    p.add_argument("--queue-size", type=int, default=64, help="the server's --queue-size (default 64)")
    p.add_argument("--threads", type=int, default=None, help="the server's torch threads")
    p.add_argument("--timeout", type=float, default=300.0, help="per-request timeout in seconds (default 300)")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()

    from listopd.task.data.synth import make_synth_tasks
    from listopd.task.prompts import render_messages

    with tempfile.TemporaryDirectory(prefix="listopd-load-") as tmp:
        model = args.model or build_tiny_model(Path(tmp) / "tiny")
        flags = ["--max-batch", str(args.max_batch), "--queue-size", str(args.queue_size)]
        if args.threads:
            flags += ["--threads", str(args.threads)]
        proc, url = start_server(model, flags)
        try:
            tasks = make_synth_tasks(n_items=200, n_users=100, seed=1)
            bodies = [{"model": "load-test", "messages": render_messages(tasks[i % len(tasks)]),
                       "max_tokens": args.max_tokens, "temperature": 0} for i in range(args.requests)]
            levels = [run_level(url, bodies, c, args.timeout) for c in args.concurrency]
        finally:
            proc.send_signal(signal.SIGTERM)
            exit_code = proc.wait(120)
    result = {"model": args.model or "random tiny-student (built)", "max_tokens": args.max_tokens,
              "server": {"max_batch": args.max_batch, "queue_size": args.queue_size, "threads": args.threads},
              "cpu_count": os.cpu_count(), "levels": levels, "server_exit_code": exit_code}
    print(f"{'conc':>4} {'req':>5} {'ok':>5} {'failed':>6} {'lost':>5} {'req/s':>7} {'tok/s':>7} "
          f"{'p50 s':>7} {'p90 s':>7} {'p99 s':>7} {'batch':>6}")
    for r in levels:
        lat = r["latency_s"]
        print(f"{r['concurrency']:>4} {r['requests']:>5} {r['ok']:>5} {r['failed']:>6} {r['lost']:>5} "
              f"{r['requests_per_s']:>7.2f} {r['completion_tokens_per_s']:>7.1f} {lat['p50']:>7.3f} "
              f"{lat['p90']:>7.3f} {lat['p99']:>7.3f} {r['mean_batch_size']:>6.2f}")
    print(f"server exit code {exit_code}")
    if args.out:
        from listopd.util.io import atomic_write_json, json_safe

        atomic_write_json(args.out, json_safe(result))
    bad = exit_code != 0 or any(r["failed"] or r["lost"] for r in levels)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
