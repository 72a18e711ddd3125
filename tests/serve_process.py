"""Start a real `listopd serve` subprocess on loopback for the serve and judge tests.

`start_server(model, *flags)` runs `python -m listopd serve MODEL --port 0 --threads 1 ...`, reads stdout until
the one "listening on http://HOST:PORT" line, and returns a ServerProcess with the base URL; every later
stdout line is collected in `.lines`. `.stop(sig)` sends a signal and returns the exit code. Use it as a
context manager so that a failing test never leaves a server behind.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

READY = re.compile(r"listening on (http://\S+:\d+)")


class ServerProcess:
    def __init__(self, proc: subprocess.Popen, url: str, lines: list[str]):
        self.proc, self.url, self.lines = proc, url, lines

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def health(self) -> dict:
        import httpx

        return httpx.get(self.url + "/health", timeout=10).json()

    def wait_for(self, predicate, timeout: float = 30.0) -> dict:
        """Poll /health until predicate(health) is true; returns that health."""
        deadline = time.monotonic() + timeout
        while True:
            h = self.health()
            if predicate(h):
                return h
            if time.monotonic() > deadline:
                raise AssertionError(f"server never reached the expected state; last /health: {h}")
            time.sleep(0.01)

    def stop(self, sig=signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"listopd serve did not exit within {timeout} s of {sig!r}") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_server(model: str, *flags: str, timeout: float = 120.0) -> ServerProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "listopd", "serve", model, "--port", "0", "--threads", "1", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    ready: queue.Queue = queue.Queue()

    def read():
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            m = READY.search(line)
            if m:
                ready.put(m.group(1))
        ready.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        url = ready.get(timeout=timeout)
    except queue.Empty:
        url = None
    if url is None:
        proc.kill()
        proc.wait()
        raise AssertionError("listopd serve did not start:\n" + "\n".join(lines))
    return ServerProcess(proc, url, lines)
