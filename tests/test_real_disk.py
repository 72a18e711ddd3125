"""Real disk faults, not simulated ones: a tmpfs that fills up in the middle of a run, and a read-only folder.

Needs `mount` (root in a VM or container that allows it); skipped with the reason otherwise.

- SFT (tiny student, a checkpoint every step, ~15 MB each) writes into a 24 MB tmpfs: the first checkpoint
  fits, the second cannot. The process exits 2 with one line naming the checkpoint and the disk error; the
  first checkpoint is intact and is what a restart resumes from. After the disk grows (remount), the same
  command finishes, with weights bitwise equal to an uninterrupted run on an ordinary disk.
- An output folder on a read-only mount: exit 2, one line naming the folder, no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from listopd.train import checkpoint

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def mounts():
    """Mount helper that unmounts everything it mounted, innermost first; skips when mounting is not allowed."""
    mounted: list[Path] = []

    def do(kind: str, target: Path, *, size_mb: int | None = None, source: Path | None = None) -> None:
        target.mkdir(parents=True, exist_ok=True)
        try:
            if kind == "tmpfs":
                mount("-t", "tmpfs", "-o", f"size={size_mb}M", "tmpfs", str(target))
            else:  # a read-only bind mount of `source`
                mount("--bind", str(source), str(target))
                mounted.append(target)
                mount("-o", "remount,bind,ro", str(target))
                return
        except (OSError, subprocess.CalledProcessError) as e:
            pytest.skip(f"cannot mount here ({getattr(e, 'stderr', '') or e}); a real-disk fault needs mount")
        mounted.append(target)

    yield do
    for target in reversed(mounted):
        subprocess.run(["umount", str(target)], capture_output=True)


def sft(world, out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "listopd", "sft", "--model", "tiny-student", "--tokenizer", world.tok_dir,
           "--tasks", world.train, "--out", str(out), "--steps", "3", "--save-every", "1", "--batch-size", "4",
           "--micro-batch-size", "2", "--eval-every", "0", "--threads", "1", "--warmup-steps", "1"]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)


def test_disk_fills_up_mid_run_then_the_run_finishes_after_it_grows(world, tmp_path, mounts):
    disk = tmp_path / "disk"
    mounts("tmpfs", disk, size_mb=24)
    run = disk / "run"
    failed = sft(world, run)
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert "Traceback" not in failed.stderr, failed.stderr[-2000:]
    error = failed.stderr.strip().splitlines()[-1]  # after the progress bar
    assert error.startswith("listopd sft: error: ") and "No space left on device" in error and "checkpoint" in error, error
    found = checkpoint.latest_checkpoint(run)
    assert found is not None and found[1]["step"] == 1, "the first checkpoint must survive, intact"
    weights, _, _ = checkpoint.load_checkpoint(found[0])
    assert all(bool(torch.isfinite(v).all()) for v in weights.values())

    mount("-o", "remount,size=200M", str(disk))
    assert sft(world, run).returncode == 0
    clean = tmp_path / "clean"
    assert sft(world, clean).returncode == 0
    a, b = load_file(str(run / "final" / "model.safetensors")), load_file(str(clean / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_read_only_output_folder_is_a_one_line_error(world, tmp_path, mounts):
    source, target = tmp_path / "source", tmp_path / "readonly"
    source.mkdir()
    mounts("ro", target, source=source)
    result = sft(world, target / "run")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("listopd sft: error: ") and "Read-only file system" in error and str(target / "run") in error, error
    assert not any(source.iterdir())
