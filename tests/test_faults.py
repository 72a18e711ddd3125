"""Injected faults in the trainers (tiny models, in-process): crashes lose nothing.

- numerical: NaN teacher log-probs at step k (OPD) or a NaN cross-entropy at step k (SFT) stop the run with a
  ListopdError naming the step and the quantity; the last checkpoint before k is intact, loadable and finite,
  and no final model is exported;
- disk: ENOSPC while writing a checkpoint (in safetensors' save_file, torch.save or the final rename; chmod
  does not work as root, so the write functions are made to fail) gives a clear error naming the path and
  saying the previous checkpoint is intact, leaves no temporary folder, and the previous checkpoint is the one
  `latest_checkpoint` returns; re-running the same config then ends bitwise where an uninterrupted run ends;
- a full disk while appending to metrics.jsonl is a clear error too, not a traceback.
"""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from listopd.train import checkpoint
from listopd.cli import main
from listopd.util.errors import ListopdError
from listopd.train.models import load_model
from listopd.train.opd import run_opd
from listopd.train.sft import run_sft
from tiny_world import opd_config, sft_config

STEPS, SAVE_EVERY = 6, 2


def metric_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_intact_checkpoint(run: Path, step: int, world, *, student: str) -> None:
    found = checkpoint.latest_checkpoint(run)
    assert found is not None, f"no intact checkpoint in {run}"
    folder, state = found
    assert folder.name == f"step-{step:07d}" and state["step"] == step
    assert checkpoint.verify(folder) is not None
    weights, opt_state, rng = checkpoint.load_checkpoint(folder)
    assert weights and all(bool(torch.isfinite(v).all()) for v in weights.values()), "non-finite weights saved"
    for group in opt_state["optimizer"]["state"].values():
        for v in group.values():
            if torch.is_tensor(v) and v.is_floating_point():
                assert bool(torch.isfinite(v).all()), "non-finite optimizer state saved"
    model = load_model(student)
    checkpoint.load_trainable_weights(model, weights)  # fits the model
    assert not list((run / "checkpoints").glob(".tmp-*")), "a temporary checkpoint folder was left behind"


# --------------------------------------------------------------------------------------------- NaN

@pytest.mark.parametrize("bad_step", [1, 5])
def test_opd_nan_teacher_logprobs_stop_with_step_and_quantity(world, tmp_path, monkeypatch, bad_step):
    import listopd.train.opd

    real = listopd.train.opd.listopd_loss
    calls = {"n": 0}
    micro_per_step = 2  # batch 4, micro-batch 2

    def poisoned(lp_new, lp_old, lp_teacher, *args, **kw):
        calls["n"] += 1
        if (calls["n"] - 1) // micro_per_step + 1 == bad_step:
            lp_teacher = torch.full_like(lp_teacher, float("nan"))
        return real(lp_new, lp_old, lp_teacher, *args, **kw)

    monkeypatch.setattr(listopd.train.opd, "listopd_loss", poisoned)
    run = tmp_path / "run"
    cfg = opd_config(world, run, steps=STEPS, save_every=SAVE_EVERY)
    with pytest.raises(ListopdError, match=rf"non-finite loss \(nan\) at step {bad_step};") as e:
        run_opd(cfg, quiet=True)
    assert "last good checkpoint is kept" in str(e.value)
    assert not (run / "final").exists() and not (run / "summary.json").exists()
    assert metric_steps(run) == list(range(1, bad_step))
    last_good = (bad_step - 1) // SAVE_EVERY * SAVE_EVERY
    if last_good == 0:
        assert checkpoint.latest_checkpoint(run) is None
    else:
        assert_intact_checkpoint(run, last_good, world, student=world.student)


def test_sft_nan_loss_through_the_cli(world, tmp_path, monkeypatch, capsys):
    real = torch.nn.functional.cross_entropy
    calls = {"n": 0}

    def poisoned(*args, **kw):
        calls["n"] += 1
        out = real(*args, **kw)
        return out * float("nan") if (calls["n"] - 1) // 2 + 1 == 4 else out  # 2 micro-batches per step

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", poisoned)
    run = tmp_path / "run"
    cfg = sft_config(world, run, steps=STEPS, save_every=SAVE_EVERY)
    argv = ["sft", "--model", cfg.model, "--tokenizer", cfg.tokenizer, "--tasks", cfg.tasks, "--out", str(run),
            "--steps", str(STEPS), "--save-every", str(SAVE_EVERY), "--batch-size", "4", "--micro-batch-size", "2",
            "--warmup-steps", "2", "--eval-every", "0", "--threads", "1"]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    last = err.rstrip("\n").splitlines()[-1]  # above it: the progress bar
    assert "Traceback" not in err
    assert last.startswith("listopd sft: error: non-finite loss (nan) at step 4;"), last
    assert metric_steps(run) == [1, 2, 3]
    found = checkpoint.latest_checkpoint(run)
    assert found is not None and found[1]["step"] == 2
    weights, _, _ = checkpoint.load_checkpoint(found[0])
    assert all(bool(torch.isfinite(v).all()) for v in weights.values())


# --------------------------------------------------------------------------------------------- disk

def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fail_at_step(monkeypatch, where: str, step: int) -> dict:
    """Make checkpoint `step`'s write fail with ENOSPC at `where` (save_file, torch.save or the rename)."""
    import safetensors.torch

    hit = {"n": 0}

    def is_target(path) -> bool:
        return f"tmp-step-{step:07d}" in os.fspath(path)

    if where == "save_file":
        real = safetensors.torch.save_file

        def fake(tensors, filename, *a, **k):
            if is_target(filename):
                hit["n"] += 1
                _enospc()
            return real(tensors, filename, *a, **k)
        monkeypatch.setattr(safetensors.torch, "save_file", fake)
    elif where == "torch.save":
        real = torch.save

        def fake(obj, f, *a, **k):
            if is_target(f) and str(f).endswith("rng.pt"):  # after the weights and optimizer were written
                hit["n"] += 1
                _enospc()
            return real(obj, f, *a, **k)
        monkeypatch.setattr(torch, "save", fake)
    else:
        real = os.replace

        def fake(src, dst, *a, **k):
            if is_target(src):
                hit["n"] += 1
                _enospc()
            return real(src, dst, *a, **k)
        monkeypatch.setattr(os, "replace", fake)
    return hit


@pytest.mark.parametrize("trainer", ["opd", "sft"])
@pytest.mark.parametrize("where", ["save_file", "torch.save", "os.replace"])
def test_disk_full_during_checkpoint_keeps_the_previous_one(world, tmp_path, monkeypatch, where, trainer):
    make_cfg, run_fn = (opd_config, run_opd) if trainer == "opd" else (sft_config, run_sft)
    run = tmp_path / "run"
    cfg = make_cfg(world, run, steps=STEPS, save_every=SAVE_EVERY)
    with monkeypatch.context() as m:
        hit = _fail_at_step(m, where, 4)
        with pytest.raises(ListopdError) as e:
            run_fn(cfg, quiet=True)
    assert hit["n"] == 1
    message = str(e.value)
    assert str(run / "checkpoints" / "step-0000004") in message
    assert "No space left on device" in message and "the previous checkpoint is intact" in message
    assert "\n" not in message
    assert not (run / "checkpoints" / "step-0000004").exists()
    student = world.student if trainer == "opd" else None
    if student:
        assert_intact_checkpoint(run, 2, world, student=student)
    else:
        found = checkpoint.latest_checkpoint(run)
        assert found is not None and found[1]["step"] == 2
        assert not list((run / "checkpoints").glob(".tmp-*"))
        weights, _, _ = checkpoint.load_checkpoint(found[0])
        assert all(bool(torch.isfinite(v).all()) for v in weights.values())
    assert metric_steps(run) == [1, 2, 3, 4]

    if where != "os.replace":
        return  # one resume per trainer is enough: it must end where an uninterrupted run ends
    run_fn(cfg, quiet=True)
    assert metric_steps(run) == list(range(1, STEPS + 1))
    clean = tmp_path / "clean"
    run_fn(make_cfg(world, clean, steps=STEPS, save_every=SAVE_EVERY), quiet=True)
    a = load_file(str(run / "final" / "model.safetensors"))
    b = load_file(str(clean / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_disk_full_on_metrics_log_is_a_clear_error(world, tmp_path, monkeypatch):
    real = os.fsync

    def fake(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) == "metrics.jsonl":  # the append, not the rewrite
            _enospc()
        return real(fd)

    run = tmp_path / "run"
    cfg = sft_config(world, run, steps=2, save_every=1)
    monkeypatch.setattr(os, "fsync", fake)
    with pytest.raises(ListopdError, match=r"cannot write .*metrics\.jsonl: No space left on device; the last checkpoint"):
        run_sft(cfg, quiet=True)


def test_torn_checkpoint_is_skipped_and_resume_uses_the_previous(world, tmp_path):
    """A checkpoint whose file no longer matches its hash (a torn write the rename made visible, or bit rot)
    is skipped; the run resumes from the one before and ends bitwise where an uninterrupted run ends."""
    run, clean = tmp_path / "run", tmp_path / "clean"
    run_sft(sft_config(world, clean, steps=STEPS, save_every=SAVE_EVERY), quiet=True)
    cfg = sft_config(world, run, steps=4, save_every=SAVE_EVERY)
    run_sft(cfg, quiet=True)
    torn = run / "checkpoints" / "step-0000004" / "optimizer.pt"
    torn.write_bytes(torn.read_bytes()[:100])
    with pytest.warns(UserWarning, match="skipping torn or corrupted checkpoint"):
        assert checkpoint.latest_checkpoint(run)[1]["step"] == 2
    import shutil

    shutil.rmtree(run / "final")
    with pytest.warns(UserWarning, match="skipping torn"):
        run_sft(sft_config(world, run, steps=STEPS, save_every=SAVE_EVERY), quiet=True)
    assert metric_steps(run) == list(range(1, STEPS + 1))
    a = load_file(str(run / "final" / "model.safetensors"))
    b = load_file(str(clean / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert math.isfinite(sum(float(v.sum()) for v in a.values()))
