"""A client for OpenAI-compatible chat completion endpoints (Gemini's OpenAI API, vLLM, llama.cpp's server,
`listopd serve`), built for batch grading: retries with exponential backoff and jitter, a request budget,
and a SQLite cache of responses so that a re-run sends no request it has already had answered.

Retries: on timeouts, connection errors, HTTP 429 and 5xx, up to `retries` times after the first attempt.
The wait before retry a (1, 2, ...) is d/2 + uniform(0, d/2) with d = backoff · 2^(a−1) ("equal jitter":
at least half the exponential delay, spread so that concurrent clients do not retry in lock-step), at
least the server's Retry-After when it sends one, at most `max_backoff`. Other 4xx answers are final: the
same request would fail the same way.

Budget: every HTTP request sent (first attempts and retries) takes one unit of a shared Budget; when it is
spent no request is sent. Cache hits cost nothing.

Cache key: sha256 over (a cache format number, the scope — the rubric version for `listopd judge` —, the
endpoint, the full JSON request body). The body holds the judge model's name, the rendered prompt (so the
task, the output graded and the rubric's text) and the sampling settings, which together fix what is
asked; the endpoint (scheme, host, port, path) is there because one model name on two servers can be two
different models; the scope lets a new rubric version start afresh even where the prompt text did not
change. The API key is not part of the key and is never stored. Only successful (HTTP 200) answers are
cached: failures are retried on the next run. The database uses WAL, so a reader never blocks the writer.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from listopd import __version__
from listopd.util.errors import ListopdError

CACHE_FORMAT = 1
LOOPBACK_HOSTS = ("localhost", "::1")


def normalise_endpoint(base_url: str) -> str:
    """scheme://host:port/path with the default port made explicit and no trailing slash; refuses URLs that
    are not http(s) with a host."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ListopdError(f"--base-url must be an http:// or https:// URL with a host, got {base_url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ListopdError(f"--base-url has an invalid port: {base_url!r}") from None
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}:{port}{parts.path.rstrip('/')}"


def is_loopback(base_url: str) -> bool:
    host = (urlsplit(base_url).hostname or "").lower()
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def cache_key(*, scope: str, endpoint: str, body: dict) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, "scope": scope, "endpoint": endpoint, "body": body},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Budget:
    """At most `limit` requests (None: no limit), shared by all threads."""

    def __init__(self, limit: int | None):
        self.limit, self.sent = limit, 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.limit is not None and self.sent >= self.limit:
                return False
            self.sent += 1
            return True


class ResponseCache:
    """key -> (request body, response JSON) in one SQLite table; safe to share between threads."""

    def __init__(self, path: str):
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, created REAL NOT NULL, "
                             "endpoint TEXT NOT NULL, scope TEXT NOT NULL, request TEXT NOT NULL, "
                             "response TEXT NOT NULL)")
            self._db.commit()
        except (sqlite3.Error, OSError) as e:
            raise ListopdError(f"{self.path}: cannot open the judge cache: {e}") from None

    def get(self, key: str) -> dict | None:
        try:
            with self._lock:
                row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as e:
            raise ListopdError(f"{self.path}: cannot read the judge cache: {e}") from None
        return None if row is None else json.loads(row[0])

    def put(self, key: str, *, endpoint: str, scope: str, request: dict, response: dict) -> None:
        try:
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)",
                                 (key, time.time(), endpoint, scope, json.dumps(request, ensure_ascii=False),
                                  json.dumps(response, ensure_ascii=False)))
                self._db.commit()
        except sqlite3.Error as e:
            raise ListopdError(f"{self.path}: cannot write the judge cache: {e}") from None

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass
class Reply:
    status: str  # "ok", "failed" (no usable answer) or "over_budget" (never sent: the budget was spent)
    content: str | None = None  # the assistant message's text ("" when the endpoint sent none)
    error: str | None = None
    attempts: int = 0  # HTTP requests sent for this call
    cached: bool = False


def message_content(response: dict) -> str:
    """choices[0].message.content of a chat completion; ValueError naming what is missing."""
    try:
        content = response["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ValueError("no choices[0].message in the response") from None
    if content is not None and not isinstance(content, str):
        raise ValueError(f"choices[0].message.content is {type(content).__name__}, not a string")
    return content or ""


class ChatClient:
    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 60.0, retries: int = 4,
                 backoff: float = 1.0, max_backoff: float = 60.0, budget: Budget | None = None,
                 cache: ResponseCache | None = None, scope: str = "", max_connections: int = 8,
                 seed: int | None = None):
        self.endpoint = normalise_endpoint(base_url)
        self.url = base_url.strip().rstrip("/") + "/chat/completions"
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.budget = budget or Budget(None)
        self.cache, self.scope = cache, scope
        self.cache_hits = 0
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        headers = {"User-Agent": f"listopd/{__version__}"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(timeout=httpx.Timeout(timeout), headers=headers,
                                  limits=httpx.Limits(max_connections=max_connections))
        self.timeout = timeout

    def close(self) -> None:
        self._http.close()

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1, 2, ...)."""
        d = self.backoff * 2 ** (attempt - 1)
        with self._rng_lock:
            wait = d / 2 + self._rng.uniform(0, d / 2)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.max_backoff)

    def complete(self, body: dict) -> Reply:
        """One chat completion for `body` (a JSON request), from the cache when it has it."""
        key = cache_key(scope=self.scope, endpoint=self.endpoint, body=body)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.cache_hits += 1
                return Reply("ok", message_content(hit), cached=True)
        attempts, error = 0, None
        while True:
            if not self.budget.take():
                if attempts == 0:
                    return Reply("over_budget", error="not sent: the request budget was spent")
                return Reply("failed", error=f"{error}; not retried: the request budget was spent", attempts=attempts)
            attempts += 1
            retry_after = None
            try:
                r = self._http.post(self.url, json=body)
            except httpx.TimeoutException:
                error, retryable = f"timed out after {self.timeout:g} s", True
            except httpx.TransportError as e:
                error, retryable = f"connection error: {type(e).__name__}: {e}", True
            else:
                if r.status_code == 200:
                    try:
                        response = r.json()
                        content = message_content(response)
                    except ValueError as e:
                        return Reply("failed", error=f"malformed response: {str(e)[:200]}", attempts=attempts)
                    if self.cache is not None:
                        self.cache.put(key, endpoint=self.endpoint, scope=self.scope, request=body, response=response)
                    return Reply("ok", content, attempts=attempts)
                error = f"HTTP {r.status_code}: {_error_text(r)}"
                retryable = r.status_code == 429 or r.status_code >= 500
                retry_after = _retry_after(r)
            if not retryable or attempts > self.retries:
                return Reply("failed", error=error, attempts=attempts)
            time.sleep(self.delay(attempts, retry_after))


def _error_text(r: httpx.Response) -> str:
    try:
        message = r.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = r.text
    return " ".join(str(message).split())[:300]


def _retry_after(r: httpx.Response) -> float | None:
    try:
        value = float(r.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return value if value >= 0 else None
