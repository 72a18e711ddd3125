"""Two processes on the CPU (gloo DDP): the SFT and ListOPD trainers under a real multi-process launch.

Launcher: `python -m torch.distributed.run --standalone --nproc_per_node 2 -m listopd ...`. `--standalone`
lets the rendezvous store bind port 0, so every launch gets its own free port (no MASTER_PORT collisions
between concurrent test runs). `accelerate launch --cpu --num_processes 2` is not used: with `--cpu` it
takes accelerate's simple launcher, which starts ONE process (world size 1) without complaint; `accelerate
launch --multi_gpu --num_processes 2` does start two gloo processes on a CPU-only machine (it calls the same
torch.distributed.run), but picks port 29500 (or a probed free port, which another run can take before the
launch binds it). The trainers see the same torch.distributed environment either way.

Checked:
- SFT, 2 processes vs 1 process with the same global batch (8 tasks, micro-batches of 2, so each rank
  accumulates 2 micro-batches under no_sync): per-step loss to 1e-5 relative, grad norm to 1e-4 relative,
  the same token counts, final weights to 1e-4 absolute (measured: loss ~3e-8 relative, weights ~5e-6 max
  absolute after 4–6 steps at lr 1e-3; not bitwise: the all-reduce sums the two ranks' gradients in a
  different order than one process accumulates them);
- both runs report ranks_identical (bit-identical weight fingerprints on all ranks) and world_size;
- ListOPD, 2 processes, λ = 1.25 (teacher and base scored): completes, ranks identical, metrics per step;
  resuming a 2-process run from its checkpoint reproduces the uninterrupted run exactly (each rank's own
  sampling generator is checkpointed), after a clean stop and after a SIGKILL of both ranks mid-run.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

import pytest
from dist_helpers import read_metrics, read_summary

pytestmark = pytest.mark.timeout(600)

LAUNCH_TIMEOUT_S = 300
_DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
             "TORCHELASTIC_RUN_ID", "ACCELERATE_USE_CPU", "ACCELERATE_MIXED_PRECISION")


def _flags(cfg) -> list[str]:
    out = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if v is not None:
            out += ["--" + f.name.replace("_", "-"), str(v).lower() if isinstance(v, bool) else str(v)]
    return out


def launch2(command: str, cfg, timeout: float = LAUNCH_TIMEOUT_S) -> str:
    """Run `listopd <command>` with cfg's options in 2 processes; return its output (fails on rc ≠ 0).
    The launcher runs in its own session so a timeout kills it and both workers."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--max_restarts", "0", "-m", "listopd", command, *_flags(cfg)]
    env = {k: v for k, v in os.environ.items() if k not in _DIST_ENV}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"2-process `listopd {command}` did not finish in {timeout} s:\n{out[-3000:]}")
    assert proc.returncode == 0, f"2-process `listopd {command}` failed (rc {proc.returncode}):\n{out[-5000:]}"
    return out


def _final_weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "final" / "model.safetensors"))


def test_sft_two_processes_match_one(dist_world, tmp_path):
    from listopd.train.sft import run_sft
    from listopd.train.sft_config import SFTConfig

    def cfg(out):
        return SFTConfig(model="tiny-student", tokenizer=dist_world.tok, tasks=dist_world.tasks,
                         val_tasks=dist_world.val, eval_tasks=4, max_new_tokens=16, eval_every=0, out=str(out),
                         steps=4, batch_size=8, micro_batch_size=2, lr=1e-3, warmup_steps=0, save_every=2,
                         threads=1, seed=0)

    t0 = time.time()
    one = run_sft(cfg(tmp_path / "one"), quiet=True)
    t1 = time.time()
    launch2("sft", cfg(tmp_path / "two"))
    t2 = time.time()
    print(f"sft: 1 process {t1 - t0:.1f} s (in-process), 2 processes {t2 - t1:.1f} s (launch included)")

    two = read_summary(tmp_path / "two")
    assert one["ranks_identical"] is True and one["world_size"] == 1
    assert two["ranks_identical"] is True and two["world_size"] == 2
    assert two["steps"] == 4 and two["tokens_seen"] == one["tokens_seen"]
    assert "val_strict_parse_rate" in two

    m1, m2 = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [r["step"] for r in m2] == [1, 2, 3, 4]
    worst_loss = worst_grad = 0.0
    for a, b in zip(m1, m2):
        assert a["tokens_seen"] == b["tokens_seen"]
        worst_loss = max(worst_loss, abs(a["loss"] - b["loss"]) / abs(a["loss"]))
        worst_grad = max(worst_grad, abs(a["grad_norm"] - b["grad_norm"]) / a["grad_norm"])
    w1, w2 = _final_weights(tmp_path / "one"), _final_weights(tmp_path / "two")
    assert set(w1) == set(w2)
    worst_w = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    print(f"1 vs 2 processes: loss rel {worst_loss:.2e}, grad norm rel {worst_grad:.2e}, weights abs {worst_w:.2e}")
    assert worst_loss <= 1e-5
    assert worst_grad <= 1e-4
    assert worst_w <= 1e-4
    # the 2-process checkpoint holds the same weights as the exported model (saved by rank 0 only, once)
    from safetensors.torch import load_file

    ck = load_file(str(tmp_path / "two" / "checkpoints" / "step-0000004" / "model.safetensors"))
    assert all(float((ck[k] - w2[k]).abs().max()) == 0.0 for k in ck if k in w2)


def _opd_cfg(world, out, steps):
    from listopd.train.opd_config import OPDConfig

    return OPDConfig(student=world.student, teacher=world.teacher, tasks=world.tasks, out=str(out), steps=steps,
                     batch_size=4, micro_batch_size=1, max_new_tokens=12, reward_scale=1.25, lr=1e-4,
                     eval_every=0, save_every=2, threads=1, seed=0)


def test_opd_two_processes(dist_world, tmp_path):
    t0 = time.time()
    launch2("opd", _opd_cfg(dist_world, tmp_path / "opd", steps=3))
    print(f"opd: 2 processes, 3 steps: {time.time() - t0:.1f} s (launch included)")
    summary = read_summary(tmp_path / "opd")
    assert summary["ranks_identical"] is True and summary["world_size"] == 2 and summary["steps"] == 3
    metrics = read_metrics(tmp_path / "opd")
    assert [r["step"] for r in metrics] == [1, 2, 3]
    for r in metrics:
        # rates over whole rollouts (sanity only: 4 rows globally, 2 per rank, both give multiples of 1/4)
        for key in ("rollout_parse_rate", "eos_rate"):
            assert r[key] * 4 == pytest.approx(round(r[key] * 4))
        assert r["adv_min"] <= r["adv_mean"] <= r["adv_max"]
    import torch

    rng = torch.load(tmp_path / "opd" / "checkpoints" / "step-0000003" / "rng.pt", weights_only=False)
    assert len(rng["generators"]) == 2 and not torch.equal(rng["generators"][0], rng["generators"][1])


@pytest.mark.slow  # three launches: ~45 s on 2 busy cores
def test_opd_two_processes_resume_matches_uninterrupted(dist_world, tmp_path):
    """3 steps in one go vs 2 steps, stop, then resume to 3: the same step-3 record and final weights."""
    t0 = time.time()
    launch2("opd", _opd_cfg(dist_world, tmp_path / "whole", steps=3))
    launch2("opd", _opd_cfg(dist_world, tmp_path / "split", steps=2))
    launch2("opd", _opd_cfg(dist_world, tmp_path / "split", steps=3))
    print(f"opd resume: three 2-process launches {time.time() - t0:.1f} s")
    whole, split = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "split")
    assert [r["step"] for r in split] == [1, 2, 3]
    for a, b in zip(whole, split):
        a.pop("elapsed_s"), b.pop("elapsed_s")
        assert a == b
    w1, w2 = _final_weights(tmp_path / "whole"), _final_weights(tmp_path / "split")
    assert all(float((w1[k] - w2[k]).abs().max()) == 0.0 for k in w1)


def test_opd_two_processes_killed_then_resumed_matches_uninterrupted(dist_world, tmp_path):
    """SIGKILL both ranks (and the launcher) right after the step-2 checkpoint of a 6-step 2-process run, then
    the same command again: it resumes and ends exactly where an uninterrupted 2-process run ends (Hugging
    Face's atomic checkpoint save broke multi-process training: the kill lands while rank 0 may be writing)."""
    t0 = time.time()
    launch2("opd", _opd_cfg(dist_world, tmp_path / "whole", steps=6))
    cfg = _opd_cfg(dist_world, tmp_path / "killed", steps=6)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--max_restarts", "0", "-m", "listopd", "opd", *_flags(cfg)]
    env = {k: v for k, v in os.environ.items() if k not in _DIST_ENV}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    first = tmp_path / "killed" / "checkpoints" / "step-0000002"
    deadline = time.time() + LAUNCH_TIMEOUT_S
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.exists(), "the run never wrote its step-2 checkpoint"
    assert not (tmp_path / "killed" / "summary.json").exists(), "the run finished before the kill: test is void"
    launch2("opd", cfg)
    print(f"opd kill-and-resume: 2-process launches {time.time() - t0:.1f} s")
    whole, resumed = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "killed")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(whole, resumed):
        a.pop("elapsed_s"), b.pop("elapsed_s")
        assert a == b
    w1, w2 = _final_weights(tmp_path / "whole"), _final_weights(tmp_path / "killed")
    assert all(float((w1[k] - w2[k]).abs().max()) == 0.0 for k in w1)
    assert read_summary(tmp_path / "killed")["ranks_identical"] is True


def test_weights_fingerprint_sees_any_change():
    import torch

    from listopd.train.distributed import weights_fingerprint

    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Linear(7, 3))
    b = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Linear(7, 3))
    b.load_state_dict(a.state_dict())
    assert weights_fingerprint(a) == weights_fingerprint(b)
    with torch.no_grad():
        b[0].weight[2, 3] += 1e-6  # one element, by float32 rounding's worth
    assert weights_fingerprint(a) != weights_fingerprint(b)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        b[0].weight[[0, 1]] = b[0].weight[[1, 0]].clone()  # a permutation keeps every plain sum
    assert weights_fingerprint(a) != weights_fingerprint(b)
