"""Shared test set-up: offline, single-threaded torch (as fast as two threads at these sizes, and deterministic),
and the fixtures tests take by name: `world` (tests/tiny_world.py), `dist_world` (tests/dist_helpers.py) and
`amazon_subset_dir`."""

import os
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
