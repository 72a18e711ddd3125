"""Crash-safe checkpoints and resume.

A checkpoint is a folder `RUN/checkpoints/step-0000123/` with
    model.safetensors   trainable weights (the full model, or the LoRA adapter)
    optimizer.pt        optimizer and scheduler state
    rng.pt              torch, numpy and python RNG states plus the rollout generator's state
    state.json          step, the trainer's own counters, the run's identity (train/run_identity.py: a resume
                        with other data or options is refused) and a sha256 of every file above
It is written into a hidden temporary folder, every file fsynced, then renamed into place (a rename is
atomic), and the parent folder fsynced. A folder whose state.json is missing or whose hashes do not match
(a torn or tampered write) is skipped with a warning and the previous checkpoint is used. The newest
`keep` checkpoints are kept, and the checkpoint of step `protect` if one is named (the cliff guard's best).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from listopd.util.errors import ListopdError
from listopd.util.io import _fsync_directory, refused_write

_FILES = ("model.safetensors", "optimizer.pt", "rng.pt")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def rng_state(generator: torch.Generator | None = None) -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "generator": None if generator is None else generator.get_state()}


def restore_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])


def trainable_weights(model) -> dict[str, torch.Tensor]:
    """The parameters to checkpoint: every trainable one (all of them, or a LoRA adapter's). Tied
    parameters appear once (named_parameters de-duplicates them)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_weights(model, weights: dict[str, torch.Tensor]) -> None:
    """Copy checkpointed parameters into `model`, refusing names it does not have or that are missing."""
    params = dict(model.named_parameters())
    expected = {name for name, p in params.items() if p.requires_grad}
    if set(weights) != expected:
        extra, missing = sorted(set(weights) - expected), sorted(expected - set(weights))
        raise ListopdError(f"checkpoint does not fit the model: unexpected {extra[:3]}, missing {missing[:3]}")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)


def checkpoint_folder(run_dir: str | Path, step: int) -> Path:
    """RUN/checkpoints/step-NNNNNNN."""
    return Path(run_dir) / "checkpoints" / f"step-{step:07d}"


def save_checkpoint(run_dir: str | Path, step: int, *, weights: dict[str, torch.Tensor], optimizer_state: dict,
                    rng: dict, trainer_state: dict, keep: int = 2, identity: dict | None = None,
                    protect: int | None = None) -> Path:
    """Write checkpoint `step` atomically; return its folder. Raises ListopdError if the disk refuses."""
    from safetensors.torch import save_file

    root = Path(run_dir) / "checkpoints"
    final = checkpoint_folder(run_dir, step)
    tmp = root / f".tmp-step-{step:07d}"
    with refused_write(tmp, f"checkpoint {final}", note="; the previous checkpoint is intact"):
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / "model.safetensors"))
        torch.save(optimizer_state, tmp / "optimizer.pt")
        torch.save(rng, tmp / "rng.pt")
        hashes = {name: _sha256(tmp / name) for name in _FILES}
        (tmp / "state.json").write_text(json.dumps({"step": step, "files": hashes, "trainer": trainer_state,
                                                    "run": identity}, indent=1))
        for name in (*_FILES, "state.json"):
            _fsync_file(tmp / name)
        _fsync_directory(str(tmp))
        if final.exists():  # a re-run of the same step (after a crash right after the rename)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_directory(str(root))
    for old in sorted(root.glob("step-*"))[:-keep]:
        if protect is None or old != checkpoint_folder(run_dir, protect):
            shutil.rmtree(old, ignore_errors=True)
    return final


def verify(folder: Path) -> dict | None:
    """The checkpoint's state.json if every file is present and matches its hash, else None."""
    try:
        state = json.loads((folder / "state.json").read_text())
        for name, digest in state["files"].items():
            if _sha256(folder / name) != digest:
                return None
        return state
    except (OSError, ValueError, KeyError, TypeError):
        return None


def latest_checkpoint(run_dir: str | Path) -> tuple[Path, dict] | None:
    """The newest intact checkpoint of a run (skipping torn ones with a warning), or None."""
    root = Path(run_dir) / "checkpoints"
    for folder in sorted(root.glob("step-*"), reverse=True):
        state = verify(folder)
        if state is not None:
            return folder, state
        warnings.warn(f"skipping torn or corrupted checkpoint {folder}", stacklevel=2)
    return None


def load_checkpoint(folder: Path) -> tuple[dict, dict, dict]:
    """(weights, optimizer_state, rng) of a verified checkpoint folder."""
    from safetensors.torch import load_file

    weights = load_file(str(folder / "model.safetensors"))
    optimizer_state = torch.load(folder / "optimizer.pt", weights_only=False)
    rng = torch.load(folder / "rng.pt", weights_only=False)
    return weights, optimizer_state, rng


def save_training_state(run_dir: str | Path, step: int, model, optimizer, scheduler, *, rng: dict,
                        trainer_state: dict, identity: dict | None = None, protect: int | None = None) -> Path:
    """Checkpoint a trainer: the model's trainable weights, optimiser and scheduler state, RNG states, the
    trainer's own counters and the run's identity (the SFT and ListOPD loops both save through here)."""
    return save_checkpoint(run_dir, step, weights=trainable_weights(model),
                           optimizer_state={"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                           rng=rng, trainer_state=trainer_state, identity=identity, protect=protect)


def step_at_or_before(run_dir: str | Path, step: int, *, verified: bool = True) -> int | None:
    """The step of the newest checkpoint of a step ≤ `step` (intact, unless verified=False: by folder name
    only, without hashing its files), or None."""
    for folder in sorted((Path(run_dir) / "checkpoints").glob("step-*"), reverse=True):
        if int(folder.name[5:]) <= step and (not verified or verify(folder) is not None):
            return int(folder.name[5:])
    return None


def resume_training(run_dir: str | Path, model, optimizer, scheduler,
                    generator: torch.Generator | None = None, check=None) -> tuple[int, dict, dict] | None:
    """Load the newest intact checkpoint of a run into model, optimiser and scheduler and restore the RNG
    states; return (step, trainer_state, rng) or None when the run has no checkpoint yet. `check(state)`, if
    given, sees the checkpoint's state.json first and may refuse it."""
    found = latest_checkpoint(run_dir)
    if found is None:
        return None
    folder, state = found
    if check is not None:
        check(state)
    weights, optimizer_state, rng = load_checkpoint(folder)
    load_trainable_weights(model, weights)
    optimizer.load_state_dict(optimizer_state["optimizer"])
    scheduler.load_state_dict(optimizer_state["scheduler"])
    restore_rng_state(rng, generator)
    return state["step"], state["trainer"], rng
