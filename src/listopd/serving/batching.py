"""Batched generation for `listopd serve`: an Engine that turns chat messages into completions with a KV
cache (listopd.train.rollout.sample), and a Batcher that collects concurrent requests from a bounded queue and
hands them to the Engine in batches, one batch at a time, on one worker thread.

Batching rules (simple and exact rather than clever):
- the worker waits for one request, then `window_s` for more, and takes up to `max_batch` from the queue;
- inside a batch, rows are grouped so that one `sample` call sees one sampling setting: every greedy row
  (temperature 0) together, unseeded sampled rows by (temperature, top_p), and each seeded sampled row on
  its own with a generator seeded by its `seed` (so a seeded request gives the same text whatever else
  arrived with it);
- a group generates up to its largest max_tokens; each row keeps only its own first max_tokens tokens.
  Generation is causal, so that is exactly what a shorter run would have produced (greedy) or a sample
  from the same distribution (sampling). finish_reason is "stop" when EOS came within the row's budget,
  else "length".

The queue is bounded: `submit` raises Overloaded at once when it is full (the HTTP layer answers 503 with
Retry-After), never blocks. `begin_drain` (on SIGINT/SIGTERM) refuses new work with ShuttingDown but keeps
answering what was accepted; requests still queued `drain_timeout_s` after the signal are failed with
ShuttingDown instead of run (the batch already running always finishes).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass


class Overloaded(Exception):
    """The request queue is full."""


class ShuttingDown(Exception):
    """The server is stopping: the request was refused, or dropped from the queue at the drain deadline."""


@dataclass
class Row:
    """One request, tokenised: what the Engine needs to generate its completion."""
    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass
class Completion:
    text: str
    completion_tokens: int  # generated tokens, counting the EOS that ended the completion
    finish_reason: str  # "stop" (EOS) or "length" (max_tokens reached)


class Engine:
    """A loaded causal LM and its tokenizer, with the server's own RNG for unseeded sampling.

    `generate` must be called from one thread at a time (the Batcher's worker). `encode` runs on the event
    loop meanwhile, so every tokenizer call holds a lock: a fast tokenizer shared between threads can
    fail with "RuntimeError: Already borrowed" (huggingface/tokenizers#537)."""

    def __init__(self, model, tokenizer, *, seed: int = 0):
        import torch

        self.model, self.tokenizer = model.eval(), tokenizer
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.context_len = getattr(model.config, "max_position_embeddings", None)
        self.generator = torch.Generator().manual_seed(seed)
        self._tokenizer_lock = threading.Lock()
        self.batches = 0  # sample() calls
        self.max_batch_seen = 0  # most rows in one sample() call
        self.rows_generated = 0

    def encode(self, messages: list[dict]) -> list[int]:
        """Token ids of the prompt: the tokenizer's chat template with the generation prompt (as
        listopd.task.prompts.render_prompt does), or, without a template, the messages' texts separated by blank
        lines and followed by "Answer:" (listopd's plain template). A template that refuses a system turn
        gets the system text prepended to the first user turn. Raises ValueError when the template refuses
        the messages."""
        with self._tokenizer_lock:
            return self._encode(messages)

    def _encode(self, messages: list[dict]) -> list[int]:
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            text = "\n\n".join(m["content"] for m in messages) + "\n\nAnswer:\n"
            return tok.encode(text, add_special_tokens=False)
        try:
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as first:  # noqa: BLE001 - jinja templates raise their own exception types
            system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
            rest = [dict(m) for m in messages if m["role"] != "system"]
            if not system or not rest or rest[0]["role"] != "user":
                raise ValueError(f"the model's chat template refuses these messages: {first}") from None
            rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
            try:
                text = tok.apply_chat_template(rest, tokenize=False, add_generation_prompt=True)
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"the model's chat template refuses these messages: {e}") from None
        return tok.encode(text, add_special_tokens=False)

    def generate(self, rows: list[Row]) -> list[Completion]:
        """Completions for `rows`, in order (grouping rules in the module docstring)."""
        groups: dict[tuple, list[int]] = {}
        for i, row in enumerate(rows):
            if row.temperature == 0:
                key = ("greedy",)
            elif row.seed is not None:
                key = ("seeded", i)
            else:
                key = ("sample", row.temperature, row.top_p)
            groups.setdefault(key, []).append(i)
        out: list[Completion | None] = [None] * len(rows)
        for key, index in groups.items():
            for i, completion in zip(index, self._generate_group([rows[i] for i in index], key[0])):
                out[i] = completion
        return out

    def _generate_group(self, rows: list[Row], kind: str) -> list[Completion]:
        import torch

        from listopd.train.rollout import sample

        generator = None
        if kind == "seeded":
            generator = torch.Generator().manual_seed(rows[0].seed % 2**64)
        elif kind == "sample":
            generator = self.generator
        rollout = sample(self.model, [r.prompt_ids for r in rows], max_new_tokens=max(r.max_tokens for r in rows),
                         eos_id=self.eos_id, pad_id=self.pad_id, generator=generator, greedy=kind == "greedy",
                         temperature=rows[0].temperature or 1.0, top_p=rows[0].top_p)
        self.batches += 1
        self.max_batch_seen = max(self.max_batch_seen, len(rows))
        self.rows_generated += len(rows)
        completions = []
        for row, ids in zip(rows, rollout.completion_ids.tolist()):
            ids = ids[:row.max_tokens]
            if self.eos_id in ids:
                n = ids.index(self.eos_id) + 1
                text_ids, reason = ids[:n - 1], "stop"
            else:
                n, text_ids, reason = len(ids), ids, "length"
            with self._tokenizer_lock:
                text = self.tokenizer.decode(text_ids, skip_special_tokens=True)
            completions.append(Completion(text, n, reason))
        return completions


@dataclass
class _Pending:
    row: Row
    future: asyncio.Future


class Batcher:
    """The bounded queue and the one worker task that feeds the Engine (see the module docstring)."""

    def __init__(self, engine: Engine, *, max_batch: int = 8, queue_size: int = 64, window_s: float = 0.005,
                 drain_timeout_s: float = 30.0):
        self.engine = engine
        self.max_batch, self.queue_size, self.window_s = max_batch, queue_size, window_s
        self.drain_timeout_s = drain_timeout_s
        self.draining = False
        self.drain_deadline = float("inf")
        self.running = 0
        self.rejected = 0  # refused because the queue was full
        self.dropped = 0  # failed at the drain deadline
        self.queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.queue_size)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="listopd-generate")
        self._task = asyncio.get_running_loop().create_task(self._work())

    def submit(self, row: Row) -> asyncio.Future:
        """Queue one row; the returned future resolves to its Completion. Raises Overloaded or ShuttingDown
        at once instead of waiting."""
        if self.draining:
            raise ShuttingDown("the server is shutting down and accepts no new requests")
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Pending(row, future))
        except asyncio.QueueFull:
            self.rejected += 1
            raise Overloaded(f"the request queue is full ({self.queue_size} waiting); retry later") from None
        return future

    def begin_drain(self) -> None:
        """Stop accepting requests; queued ones still run until the drain deadline."""
        if not self.draining:
            self.draining = True
            self.drain_deadline = time.monotonic() + self.drain_timeout_s

    async def stop(self) -> None:
        """Stop the worker and fail whatever is still queued (normally nothing: the server drains first)."""
        self.begin_drain()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._fail(self._take_all(), ShuttingDown("the server stopped before this request ran"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def stats(self) -> dict:
        e = self.engine
        return {"queued": self.queue.qsize() if self.queue else 0, "running": self.running,
                "queue_size": self.queue_size, "max_batch": self.max_batch, "batches": e.batches,
                "max_batch_seen": e.max_batch_seen, "rows_generated": e.rows_generated,
                "rejected_queue_full": self.rejected, "dropped_at_shutdown": self.dropped}

    def _take_all(self, limit: int | None = None) -> list[_Pending]:
        taken = []
        while self.queue is not None and not self.queue.empty() and (limit is None or len(taken) < limit):
            taken.append(self.queue.get_nowait())
        return taken

    def _fail(self, pending: list[_Pending], error: Exception) -> None:
        for p in pending:
            if not p.future.done():
                p.future.set_exception(error)
                self.dropped += 1

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            if self.window_s > 0 and self.queue.qsize() < self.max_batch - 1:
                await asyncio.sleep(self.window_s)
            batch += self._take_all(self.max_batch - 1)
            if self.draining and time.monotonic() >= self.drain_deadline:
                self._fail(batch + self._take_all(),
                           ShuttingDown("the server shut down before this request ran (drain timeout)"))
                continue
            live = [p for p in batch if not p.future.done()]
            if not live:
                continue
            self.running = len(live)
            try:
                results = await loop.run_in_executor(self._executor, self.engine.generate, [p.row for p in live])
            except Exception as e:  # noqa: BLE001 - reported to each waiting request as a 500
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(e)
            else:
                for p, completion in zip(live, results):
                    if not p.future.done():
                        p.future.set_result(completion)
            finally:
                self.running = 0
