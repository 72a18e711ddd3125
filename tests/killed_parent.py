"""For the tests that a helper process ends with its parent: run a script that starts one and prints the helper's
pid, SIGKILL the script, and see whether the helper is still running 20 s later (it checks nothing periodically:
it should be gone at once)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")


def running(pid: int) -> bool:
    """Whether a process runs (an exited one that nobody has reaped yet, a zombie, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def helper_outlives_killed_parent(script: Path, env: dict) -> bool:
    """Start `script` (it prints its helper's pid on its first line, then waits), SIGKILL it, and return whether its
    helper still runs 20 s later. The helper is killed in any case before this returns."""
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    helper = None
    try:
        helper = int(proc.stdout.readline())
        assert running(helper), "the helper was not running before its parent was killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 20
        while running(helper) and time.monotonic() < deadline:
            time.sleep(0.1)
        return running(helper)
    finally:
        proc.kill()
        if helper is not None and running(helper):
            os.kill(helper, signal.SIGKILL)
