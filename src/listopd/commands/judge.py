"""Grade model outputs with a versioned rubric through any OpenAI-compatible chat endpoint (Gemini's OpenAI
API, vLLM, llama.cpp's server, `listopd serve`). Inputs are those of `listopd score`: a task file and an
outputs file ({"id", "output"} per task). Writes --out (JSON: "summary" and one "grades" record per task,
written atomically) and prints the summary.

    listopd judge --tasks data/test.jsonl --outputs runs/opd/outputs.jsonl --out runs/opd/judge.json \\
        --base-url https://generativelanguage.googleapis.com/v1beta/openai/ --model gemini-2.5-flash \\
        --api-key-env GEMINI_API_KEY

The API key is read only from the environment variable named by --api-key-env and sent as a Bearer header
(never over plain http to another machine); a loopback endpoint needs none. Answers are cached in SQLite
(--cache, default judge_cache.sqlite beside --out): a re-run sends only the requests not yet answered.
"""

from __future__ import annotations

import argparse
import os
import sys

from listopd.commands.argtypes import count, positive_int, seconds








def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", required=True, help="task file (.jsonl or .jsonl.gz)")
    p.add_argument("--outputs", required=True, help="outputs file: one {\"id\", \"output\"} record per task")
    p.add_argument("--rubric", default="ranking_v1",
                   help="rubric file (.md with front matter, or .yaml) or a built-in name (default ranking_v1)")
    p.add_argument("--base-url", required=True,
                   help="the endpoint's OpenAI base URL, e.g. http://127.0.0.1:8000/v1 (POST BASE/chat/completions)")
    p.add_argument("--model", required=True, help="the judge model's name at that endpoint")
    p.add_argument("--api-key-env", metavar="NAME", default=None,
                   help="environment variable holding the API key (sent as 'Authorization: Bearer ...')")
    p.add_argument("--out", required=True, help="JSON file for the summary and the per-task grades")
    p.add_argument("--cache", default=None, help="SQLite cache file (default: judge_cache.sqlite beside --out)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--concurrency", type=positive_int, default=4, help="requests in flight at once (default 4)")
    p.add_argument("--max-requests", type=count, default=None,
                   help="send at most N HTTP requests (retries included; cache hits are free; 0: grade from the "
                        "cache only); tasks left unsent are reported as over budget")
    p.add_argument("--timeout", type=seconds, default=60.0, help="seconds per request (default 60)")
    p.add_argument("--retries", type=count, default=4,
                   help="retries after a timeout, connection error, 429 or 5xx (0: none; default 4)")
    p.add_argument("--backoff", type=seconds, default=1.0,
                   help="first retry waits about this many seconds, doubling each time (default 1)")
    p.add_argument("--max-tokens", type=positive_int, default=None, help="override the rubric's max_tokens")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def api_key_from_env(name: str | None, base_url: str) -> str | None:
    from listopd.grading.chat_client import is_loopback
    from listopd.util.errors import ListopdError

    if name is None:
        return None
    key = os.environ.get(name, "").strip()
    if not key:
        raise ListopdError(f"--api-key-env {name}: the environment variable {name} is not set or empty")
    if base_url.strip().lower().startswith("http://") and not is_loopback(base_url):
        raise ListopdError(f"refusing to send the API key from {name} over plain http to {base_url}; use https")
    return key


def run(args) -> int:
    import json

    from listopd.grading.chat_client import Budget, ChatClient, ResponseCache, normalise_endpoint
    from listopd.util.io import atomic_write_json
    from listopd.grading.judge import format_summary, judge
    from listopd.task.metrics import read_outputs
    from listopd.grading.rubric import load_rubric
    from listopd.task.tasks import read_tasks

    normalise_endpoint(args.base_url)  # validates the URL before any file is read
    key = api_key_from_env(args.api_key_env, args.base_url)
    rubric = load_rubric(args.rubric)
    tasks = read_tasks(args.tasks, allow_mixed_k=True)
    outputs = read_outputs(args.outputs, tasks)
    cache = None
    if not args.no_cache:
        cache = ResponseCache(args.cache or os.path.join(os.path.dirname(os.path.abspath(args.out)),
                                                         "judge_cache.sqlite"))
    client = ChatClient(args.base_url, api_key=key, timeout=args.timeout, retries=args.retries,
                        backoff=args.backoff, budget=Budget(args.max_requests), cache=cache, scope=rubric.version,
                        max_connections=args.concurrency)
    try:
        records, summary = judge(client, rubric, tasks, outputs, model=args.model, concurrency=args.concurrency,
                                 max_tokens=args.max_tokens)
    finally:
        client.close()
        if cache is not None:
            cache.close()
    atomic_write_json(args.out, {"summary": summary, "grades": records})
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    if summary["over_budget"]:
        sys.stderr.write(f"listopd judge: {summary['over_budget']} of {summary['tasks']} tasks not graded: "
                         f"--max-requests {args.max_requests} spent\n")
    return 0
