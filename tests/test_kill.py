"""SIGKILL at random moments, and during checkpoint writes: a restarted run loses nothing.

`python -m listopd sft ...` and `python -m listopd opd ...` (tiny models, 8 steps, a checkpoint every 2) run
as subprocesses and are killed with SIGKILL at seeded random moments, and as soon as a `.tmp-step-*` folder
(a checkpoint being written) appears. The same command is started again until one run completes. Then:

- the final weights equal an uninterrupted run's bitwise, and metrics.jsonl holds steps 1..8 exactly once
  with the same numbers as the uninterrupted run's;
- after every kill, the newest `step-*` folder is intact (the rename is atomic: a half-written checkpoint is
  never visible under its final name) and is what `latest_checkpoint` returns; a torn `.tmp-step-*` folder is
  not a candidate, and none is left once the run has completed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from listopd.train import checkpoint

pytestmark = pytest.mark.slow

STEPS, SAVE_EVERY = 8, 2
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def command(trainer: str, world, out: Path) -> list[str]:
    common = ["--out", str(out), "--steps", str(STEPS), "--save-every", str(SAVE_EVERY), "--batch-size", "4",
              "--micro-batch-size", "2", "--eval-every", "0", "--threads", "1", "--lr", "1e-3"]
    if trainer == "sft":
        args = ["sft", "--model", "tiny-student", "--tokenizer", world.tok_dir, "--tasks", world.train,
                "--warmup-steps", "2", "--seed", "0"]
    else:
        args = ["opd", "--student", world.student, "--teacher", world.teacher, "--tasks", world.train,
                "--max-new-tokens", "8", "--seed", "3"]
    return [sys.executable, "-m", "listopd", *args, *common]


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "ab"), env=ENV)


def kill(proc: subprocess.Popen) -> bool:
    """SIGKILL; True when the process was still running (a real kill)."""
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def tmp_folders(run: Path) -> list[Path]:
    return sorted((run / "checkpoints").glob(".tmp-step-*")) if (run / "checkpoints").is_dir() else []


def check_after_kill(run: Path) -> int | None:
    """The invariants a kill must keep; returns the step a restart resumes from."""
    steps = sorted((run / "checkpoints").glob("step-*")) if (run / "checkpoints").is_dir() else []
    found = checkpoint.latest_checkpoint(run)
    if not steps:
        assert found is None
        return None
    assert found is not None and found[0] == steps[-1], f"newest checkpoint {steps[-1]} is torn"
    weights, _, _ = checkpoint.load_checkpoint(found[0])
    assert all(bool(torch.isfinite(v).all()) for v in weights.values())
    return found[1]["step"]


def metrics(run: Path) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rec.pop("elapsed_s", None)
        out.append(rec)
    return out


def tmp_identity(run: Path) -> set[tuple[str, int]]:
    out = set()
    for p in tmp_folders(run):
        try:
            out.add((p.name, p.stat().st_mtime_ns))
        except FileNotFoundError:  # removed while we looked
            pass
    return out


def run_with_kills(cmd: list[str], run: Path, plan: list[tuple[str, float]], log: Path,
                   duration: float) -> list[dict]:
    """Run `cmd`, killing it per `plan` entries: ("time", f) after the fraction f of the time this attempt
    still needs (the uninterrupted `duration` scaled by the steps left after the last checkpoint, so that a
    resumed attempt, which has less to do, is still killed while it runs), or ("tmp", n) the moment a
    checkpoint of step >= n is being written (a `.tmp-step-*` folder this process made appears); then once
    more to completion. Returns one record per planned kill."""
    record = []
    for kind, arg in plan:
        before = tmp_identity(run)  # torn folders of earlier kills do not count
        resume = check_after_kill(run) or 0
        proc = start(cmd, log)
        t0 = time.monotonic()
        if kind == "time":
            startup = min(2.0, 0.3 * duration)  # interpreter and model loading, paid by every attempt
            arg = startup + arg * (duration - startup) * (STEPS - resume) / STEPS
            while proc.poll() is None and time.monotonic() - t0 < arg:
                time.sleep(0.005)
        else:
            while proc.poll() is None and not any(int(name.rsplit("-", 1)[1]) >= arg
                                                  for name, _ in tmp_identity(run) - before):
                time.sleep(0.0005)
        killed = kill(proc)
        torn_now = sorted(name for name, _ in tmp_identity(run) - before)
        resume = check_after_kill(run)
        record.append({"kind": kind, "arg": round(arg, 2), "at_s": round(time.monotonic() - t0, 2),
                       "killed": killed, "torn_by_this_kill": torn_now, "resume_from": resume})
        assert killed or proc.returncode == 0, f"run failed with {proc.returncode}; see {log}"
    proc = start(cmd, log)
    assert proc.wait(timeout=600) == 0, f"final run failed; see {log}: {log.read_text()[-2000:]}"
    return record


@pytest.mark.parametrize("trainer", ["sft", "opd"])
def test_sigkill_anywhere_then_restart_equals_uninterrupted(world, tmp_path, trainer):
    clean, run = tmp_path / "clean", tmp_path / "run"
    t0 = time.monotonic()
    proc = start(command(trainer, world, clean), tmp_path / "clean.log")
    assert proc.wait(timeout=600) == 0, (tmp_path / "clean.log").read_text()[-2000:]
    duration = time.monotonic() - t0

    rng = random.Random(20261128 + (trainer == "opd"))
    plan = [("tmp", 2), ("time", rng.uniform(0.1, 0.9)), ("tmp", 4), ("time", rng.uniform(0.1, 0.9)),
            ("tmp", 8), ("time", rng.uniform(0.5, 0.95))]
    record = run_with_kills(command(trainer, world, run), run, plan, tmp_path / "run.log", duration)
    print(f"{trainer}: uninterrupted {duration:.1f} s; kills: {json.dumps(record)}")

    kills = [r for r in record if r["killed"]]
    in_write = [r for r in record if r["kind"] == "tmp" and r["killed"] and r["torn_by_this_kill"]]
    assert len(kills) >= 4, record
    assert len(in_write) >= 2, f"fewer than two kills landed inside a checkpoint write: {record}"

    assert [m["step"] for m in metrics(run)] == list(range(1, STEPS + 1))
    assert metrics(run) == metrics(clean)
    a, b = load_file(str(run / "final" / "model.safetensors")), load_file(str(clean / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"restarted run differs from the uninterrupted one in {different[:5]}"
    assert not tmp_folders(run), "a torn temporary checkpoint folder survived the completed run"
    assert not (run / ".tmp-final").exists()
    assert json.loads((run / "summary.json").read_text())["steps"] == STEPS


# ------------------------------------------------------------------------------------ a whole sweep

SWEEP_STEPS = 4
TIMING_KEYS = ("train_seconds", "step_time_s", "started_at", "ended_at")


def write_sweep_config(world, folder: Path) -> Path:
    """FOLDER/sweep.yaml for a 3-run sweep into FOLDER/out."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)

    base = dict(student=world.student, teacher=world.teacher, tasks=world.train, val_tasks=world.val,
                batch_size=4, micro_batch_size=2, max_new_tokens=8, lr=1e-3, eval_every=2, save_every=1,
                threads=1)
    grid = {"reward_scale": [1.0, 1.5, 2.0], "seed": [0], "steps": SWEEP_STEPS}
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({"out": str(folder / "out"), "base": base, "grid": grid}))
    return path


def sweep_state(out: Path) -> dict:
    """Everything a finished sweep must reproduce: result files less their timings, each run's metrics
    (less wall-clock time) and final weights. The sweep folder's own path (and so the config hash) is
    the only difference allowed between two sweep folders."""
    state = {}
    for result in sorted((out / "results").glob("*.json")):
        record = json.loads(result.read_text().replace(str(out), "OUT"))
        for key in (*TIMING_KEYS, "sweep_config_hash"):
            record.pop(key)
        run = out / "runs" / record["name"]
        weights = load_file(str(run / "final" / "model.safetensors"))
        state[record["name"]] = (record, metrics(run), {k: v.tolist() for k, v in weights.items()})
    return state


def test_sigkill_a_sweep_between_and_inside_runs(world, tmp_path):
    """A sweep killed right after a run's result file appears (between runs), in the middle of a run and
    inside a checkpoint write, then started again, ends with the same results, metrics and weights as an
    uninterrupted sweep; no run is done twice or lost, and no temporary file is left in results/."""
    clean_cfg, cfg = write_sweep_config(world, tmp_path / "clean"), write_sweep_config(world, tmp_path / "killed")
    clean_out, out = clean_cfg.parent / "out", cfg.parent / "out"
    sweep_cmd = [sys.executable, "-m", "listopd", "sweep"]
    t0 = time.monotonic()
    proc = start([*sweep_cmd, str(clean_cfg), "--quiet"], tmp_path / "clean.log")
    assert proc.wait(timeout=600) == 0, (tmp_path / "clean.log").read_text()[-2000:]
    duration = time.monotonic() - t0

    names = sorted(p.stem for p in (clean_out / "results").glob("*.json"))
    assert len(names) == 3
    run_dirs = [out / "runs" / name for name in names]
    cmd = [*sweep_cmd, str(cfg), "--quiet"]
    log = tmp_path / "run.log"
    rng = random.Random(20261128)
    record = []

    def results() -> set[str]:
        """The result files a reader sees (a killed write may leave a hidden .NAME.XXXX.tmp, never a
        partial NAME.json)."""
        return {p.name for p in (out / "results").glob("*.json")} if (out / "results").is_dir() else set()

    def partial_results() -> list[str]:
        bad = []
        for name in results():
            try:
                json.loads((out / "results" / name).read_text())["summary"]
            except (ValueError, KeyError):
                bad.append(name)
        return bad

    def kill_when(condition, what: str):
        proc = start(cmd, log)
        t_start = time.monotonic()
        while proc.poll() is None and not condition():
            time.sleep(0.0005)
        killed = kill(proc)
        for run in run_dirs:
            if run.is_dir():
                check_after_kill(run)
        assert not partial_results(), partial_results()
        record.append({"what": what, "at_s": round(time.monotonic() - t_start, 2), "killed": killed,
                       "results": len(results())})
        assert killed or proc.returncode == 0, f"sweep failed with {proc.returncode}; see {log}"

    # between runs: the moment the first result file exists
    kill_when(lambda: len(results()) >= 1, "after the first result")
    # inside a run: a random moment while the second run trains
    second_started = lambda: any((run / "metrics.jsonl").is_file() and run.name not in
                                 {n.removesuffix(".json") for n in results()} for run in run_dirs)
    deadline = [None]

    def mid_run():
        if deadline[0] is None and second_started():
            deadline[0] = time.monotonic() + rng.uniform(0.0, duration / 6)
        return deadline[0] is not None and time.monotonic() >= deadline[0]
    kill_when(mid_run, "inside a run")
    # inside a checkpoint write of whichever run is training now
    def all_tmp() -> set:
        return {(run.name, *ident) for run in run_dirs for ident in tmp_identity(run)}
    torn_before = all_tmp()  # torn folders of earlier kills do not count
    kill_when(lambda: bool(all_tmp() - torn_before), "inside a checkpoint write")
    kill_when(lambda: len(results()) >= 2, "after the second result")

    proc = start(cmd, log)
    assert proc.wait(timeout=600) == 0, f"final sweep failed; see {log}: {log.read_text()[-2000:]}"
    print(f"sweep: uninterrupted {duration:.1f} s; kills: {json.dumps(record)}")
    assert sum(r["killed"] for r in record) >= 3, record

    assert sorted(p.name for p in (out / "results").iterdir()) == [f"{name}.json" for name in names], \
        "a stale temporary file survived the completed sweep"
    for name in names:
        assert [m["step"] for m in metrics(out / "runs" / name)] == list(range(1, SWEEP_STEPS + 1))
        assert not tmp_folders(out / "runs" / name)
    assert sweep_state(out) == sweep_state(clean_out)
