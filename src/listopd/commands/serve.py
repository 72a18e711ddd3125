"""Serve a model over an OpenAI-compatible HTTP API (POST /v1/chat/completions, GET /v1/models, GET /health),
with a bounded request queue and batched generation. MODEL is a model folder with its tokenizer (e.g.
RUN/final from `listopd sft` or `listopd opd`), a .gguf file, or smollm2-135m.

    listopd serve runs/opd/final --port 8000
    curl -s localhost:8000/v1/chat/completions -H 'content-type: application/json' \\
        -d '{"model": "runs/opd/final", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}'

Listens on 127.0.0.1 unless --host says otherwise; --port 0 picks a free port. Once ready it prints one line
`listopd serve: listening on http://HOST:PORT ...`. SIGINT/SIGTERM: accepted requests are answered, then it
exits 0.
"""

from __future__ import annotations

import argparse

from listopd.commands.argtypes import count, non_negative, port, positive_int








def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="model folder with its tokenizer, a .gguf file, or smollm2-135m")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--served-model-name", default=None,
                   help="the name clients send as `model` (default: MODEL as given)")
    p.add_argument("--max-batch", type=positive_int, default=8, help="most requests in one generation batch (8)")
    p.add_argument("--queue-size", type=positive_int, default=64,
                   help="requests that may wait for a batch; more get 503 with Retry-After (64)")
    p.add_argument("--batch-window-ms", type=non_negative, default=5.0,
                   help="after the first request of a batch, wait this long for more (default 5 ms)")
    p.add_argument("--max-tokens", type=positive_int, default=512,
                   help="largest max_tokens a request may ask for, and the default (512; less when the "
                        "model's context is shorter)")
    p.add_argument("--drain-timeout", type=non_negative, default=30.0,
                   help="on SIGINT/SIGTERM, seconds to keep running queued requests before failing them "
                        "with 503 (default 30)")
    p.add_argument("--seed", type=count, default=0, help="seed of the server's RNG for requests without a seed")
    p.add_argument("--threads", type=count, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--quiet", action="store_true", help="no line per request")


def run(args) -> int:
    from listopd.serving.serve import serve

    return serve(args.model, host=args.host, port=args.port, model_name=args.served_model_name,
                 max_batch=args.max_batch, queue_size=args.queue_size, batch_window_ms=args.batch_window_ms,
                 max_tokens=args.max_tokens, drain_timeout=args.drain_timeout, seed=args.seed,
                 threads=args.threads, quiet=args.quiet)
