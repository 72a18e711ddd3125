"""`listopd serve`: an OpenAI-compatible HTTP server (FastAPI on uvicorn) for any model listopd can load.

Endpoints:
    POST /v1/chat/completions  model, messages, max_tokens (or max_completion_tokens), temperature (0 =
                               greedy), top_p, seed, n (1 only), stream (false only), user (ignored)
    GET  /v1/models            the one served model
    GET  /health               status ("ok" / "draining") and counters: requests received and answered,
                               generation batches run, the largest batch seen, queue length, rejections

Errors use OpenAI's body, {"error": {"message", "type", "param", "code"}}: 400 for a request that fails
validation (param names the field, e.g. "temperature" or "messages.0.role"; unknown fields are refused,
not ignored), 404 for another model name, 503 with Retry-After when the queue is full or the server is
shutting down, 500 when generation itself fails.

Requests go through listopd.serving.batching (bounded queue, one worker, batched KV-cache generation on a thread,
so the event loop keeps answering /health while a batch runs). SIGINT/SIGTERM: stop accepting
connections, answer what was accepted (requests still queued after --drain-timeout get a 503 naming the
shutdown), then exit 0. The first line on stdout, once the server is ready, is
`listopd serve: listening on http://HOST:PORT ...` (with the real port when --port 0); after that one line
per request unless quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import time
from typing import Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from listopd.serving.batching import Batcher, Engine, Overloaded, Row, ShuttingDown
from listopd.util.errors import ListopdError

RETRY_AFTER_S = 1
SUPPORTED = "model, messages, max_tokens, max_completion_tokens, temperature, top_p, seed, n=1, stream=false, user"


# ------------------------------------------------------------------------------------------ request schema

class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(BaseModel):
    """The supported subset of OpenAI's chat completion request. Strict types (no "0.5" for 0.5)."""
    model_config = ConfigDict(extra="forbid", strict=True)
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    n: int | None = None
    stream: bool | None = None
    user: str | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, v):
        if v is not None and v != 1:
            raise ValueError("only n=1 is supported")
        return v

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, v):
        if v:
            raise ValueError("streaming is not supported; send stream=false")
        return v


# ------------------------------------------------------------------------------------------ responses

def openai_error(status: int, message: str, *, param: str | None = None, kind: str = "invalid_request_error",
                 code: str | None = None, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    """pydantic's first error as one OpenAI 400: param is the field path without the leading "body"."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    kind = first.get("type", "")
    if kind == "json_invalid":
        return openai_error(400, "the request body is not valid JSON")
    if not loc:
        return openai_error(400, "the request body must be a JSON object with model and messages")
    param = ".".join(loc)
    msg = first.get("msg", "invalid value")
    if kind == "extra_forbidden":
        msg = f"unsupported field (this server takes {SUPPORTED})"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    n_more = len(errors) - 1
    more = f" (and {n_more} more problem{'s' if n_more > 1 else ''})" if n_more else ""
    return openai_error(400, f"{param}: {msg}{more}", param=param)


# ------------------------------------------------------------------------------------------ the app

def make_app(engine: Engine, batcher: Batcher, *, model_name: str, max_tokens_cap: int, quiet: bool = False,
             ready_line: str | None = None) -> FastAPI:
    counters = {"requests_received": 0, "requests_answered": 0}
    created = int(time.time())

    def log(line: str) -> None:
        if not quiet:
            print(line, flush=True)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        if ready_line:
            print(ready_line, flush=True)
        yield
        await batcher.stop()

    app = FastAPI(title="listopd serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: RequestValidationError):
        if request.url.path == "/v1/chat/completions":
            counters["requests_received"] += 1
        response = _validation_error(exc)
        log(f"{request.method} {request.url.path} 400 {response.body.decode()[:200]}")
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _on_http_error(request: Request, exc: StarletteHTTPException):
        return openai_error(exc.status_code, str(exc.detail))

    @app.get("/health")
    async def health():
        return {"status": "draining" if batcher.draining else "ok", "model": model_name, **counters,
                **batcher.stats()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "listopd"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest):
        counters["requests_received"] += 1
        t0 = time.monotonic()
        response = await _complete(req)
        if isinstance(response, JSONResponse):
            log(f"POST /v1/chat/completions {response.status_code} {response.body.decode()[:200]}")
            return response
        counters["requests_answered"] += 1
        u, choice = response["usage"], response["choices"][0]
        log(f"POST /v1/chat/completions 200 prompt {u['prompt_tokens']} completion {u['completion_tokens']} "
            f"({choice['finish_reason']}) {time.monotonic() - t0:.3f}s")
        return response

    async def _complete(req: ChatRequest):
        if req.model != model_name:
            return openai_error(404, f"the model {req.model!r} does not exist; this server has {model_name!r}",
                                param="model", code="model_not_found")
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        try:
            prompt = engine.encode(messages)
        except ValueError as e:
            return openai_error(400, f"messages: {e}", param="messages")
        context = engine.context_len
        room = (context - len(prompt)) if context else max_tokens_cap
        if room < 1:
            return openai_error(400, f"messages: the prompt is {len(prompt)} tokens; the model's context is "
                                     f"{context} tokens", param="messages", code="context_length_exceeded")
        asked = req.max_tokens if req.max_tokens is not None else req.max_completion_tokens
        param = "max_tokens" if req.max_tokens is not None else "max_completion_tokens"
        if asked is not None and asked > max_tokens_cap:
            return openai_error(400, f"{param}: {asked} is more than this server allows ({max_tokens_cap})",
                                param=param)
        if asked is not None and asked > room:
            return openai_error(400, f"{param}: the prompt ({len(prompt)} tokens) plus {asked} new tokens exceeds "
                                     f"the model's context of {context} tokens", param=param,
                                code="context_length_exceeded")
        max_tokens = asked if asked is not None else min(max_tokens_cap, room)
        temperature = 1.0 if req.temperature is None else req.temperature
        top_p = 1.0 if req.top_p is None else req.top_p
        try:
            future = batcher.submit(Row(prompt, max_tokens, temperature, top_p, req.seed))
            completion = await future
        except Overloaded as e:
            return openai_error(503, str(e), kind="server_overloaded", code="queue_full", retry_after=RETRY_AFTER_S)
        except ShuttingDown as e:
            return openai_error(503, str(e), kind="server_shutting_down", code="shutting_down",
                                retry_after=RETRY_AFTER_S)
        except Exception as e:  # noqa: BLE001 - a generation failure is the server's fault: 500, not a crash
            return openai_error(500, f"generation failed: {type(e).__name__}: {e}", kind="server_error")
        return {
            "id": f"chatcmpl-{secrets.token_hex(12)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text},
                         "logprobs": None, "finish_reason": completion.finish_reason}],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": completion.completion_tokens,
                      "total_tokens": len(prompt) + completion.completion_tokens},
        }

    return app


# ------------------------------------------------------------------------------------------ running it

class _Server(uvicorn.Server):
    """uvicorn's server, but a signal is the normal way to stop it: on SIGINT/SIGTERM the batcher starts
    draining (new requests get 503) while uvicorn stops accepting connections and waits for the accepted
    ones; afterwards the process exits 0 instead of re-raising the signal (which uvicorn does)."""

    def __init__(self, config: uvicorn.Config, batcher: Batcher, quiet: bool):
        super().__init__(config)
        self.batcher, self.quiet = batcher, quiet

    def handle_exit(self, sig, frame) -> None:
        if not self.should_exit and not self.quiet:
            stats = self.batcher.stats()
            print(f"listopd serve: {signal.Signals(sig).name}: shutting down ({stats['running']} running, "
                  f"{stats['queued']} queued)", flush=True)
        self.batcher.begin_drain()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self):
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (IPv6 when the host has a colon); one-line error when the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise ListopdError(f"cannot listen on {host}:{port}: {reason}") from None


def serve(model_path: str, *, host: str = "127.0.0.1", port: int = 8000, model_name: str | None = None,
          max_batch: int = 8, queue_size: int = 64, batch_window_ms: float = 5.0, max_tokens: int = 512,
          drain_timeout: float = 30.0, seed: int = 0, threads: int | None = None, quiet: bool = False) -> int:
    """Load the model, bind, serve until SIGINT/SIGTERM; returns 0 after a clean shutdown."""
    import torch

    from listopd.train.models import load_model, load_tokenizer

    if threads:
        torch.set_num_threads(threads)
    sock = bind(host, port)  # first, so that a taken port fails before the model loads
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path)
    if tokenizer.eos_token_id is None:
        raise ListopdError(f"{model_path}: the tokenizer has no EOS token, so generation could never stop")
    engine = Engine(model, tokenizer, seed=seed)
    batcher = Batcher(engine, max_batch=max_batch, queue_size=queue_size, window_s=batch_window_ms / 1000,
                      drain_timeout_s=drain_timeout)
    name = model_name or str(model_path)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    ready = (f"listopd serve: listening on http://{shown}:{bound_port} (model {name!r}, max batch {max_batch}, "
             f"queue {queue_size}, context {engine.context_len})")
    app = make_app(engine, batcher, model_name=name, max_tokens_cap=max_tokens, quiet=quiet, ready_line=ready)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = _Server(config, batcher, quiet)
    asyncio.run(server.serve(sockets=[sock]))
    sock.close()
    if not quiet:
        print("listopd serve: stopped", flush=True)
    sys.stdout.flush()
    return 0
