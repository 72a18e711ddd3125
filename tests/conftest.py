"""Shared test set-up: offline, single-threaded torch (as fast as two threads at these sizes, and deterministic),
and the fixtures tests take by name: `world` (tests/tiny_world.py), `dist_world` (tests/dist_helpers.py) and
`amazon_subset_dir`."""

import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "amazon_fashion"


@pytest.fixture(scope="session", autouse=True)
def _single_thread_torch():
    try:
        import torch
    except ImportError:  # theory tests run without torch
        return
    torch.set_num_threads(1)


class _CurrentStderr:
    """A stream that writes to whatever sys.stderr is at the moment of writing (a capsys buffer, pytest's
    capture, the real one)."""

    def write(self, text):
        return sys.stderr.write(text)

    def flush(self):
        sys.stderr.flush()


@pytest.fixture(autouse=True)
def _library_log_handlers_follow_stderr():
    """transformers' stderr handler writes to the current sys.stderr, as it does outside pytest. The handler
    keeps the stream it was made with: made during a capsys test, that stream is closed when the test ends and
    every later test that logs through it got '--- Logging error ---' tracebacks (the outcome depended on the
    order tests ran in); made elsewhere, what transformers logs never reached a capsys test's stderr, so the
    one-line-error tests could not see it."""
    for handler in logging.getLogger("transformers").handlers:
        if type(handler) is logging.StreamHandler and not isinstance(handler.stream, _CurrentStderr):
            handler.stream = _CurrentStderr()  # not setStream: it flushes the old stream, which may be closed
            if "flush" in vars(handler):  # transformers binds the handler's flush to the stderr it was made with
                del handler.flush
    yield


@pytest.fixture
def amazon_subset_dir() -> Path:
    """The read-only real Amazon Fashion subset; tests that need it skip where it is absent."""
    d = SHARED_DATA / "mingxuan_he_2023_subset"
    if not d.is_dir():
        pytest.skip(f"real Amazon Fashion subset not found at {d} (read-only shared data, not in the repo)")
    return d


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """The tiny-model world of the trainer tests (tests/tiny_world.py), built once per session."""
    from tiny_world import build_world

    return build_world(tmp_path_factory.mktemp("trainer_world"))


@pytest.fixture(scope="session")
def dist_world(tmp_path_factory):
    """The tiny world of the multi-process and trainer-option tests (tests/dist_helpers.py)."""
    from dist_helpers import build_world

    return build_world(tmp_path_factory.mktemp("dist_world"))
