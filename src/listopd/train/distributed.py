"""The accelerate side of training: the Accelerator both trainers use, the student's own float32 forward for
a block, numbers reduced over processes, and the check that data-parallel ranks hold bit-identical weights."""

from __future__ import annotations

import contextlib

import torch


def make_accelerator(bf16: bool):
    """The trainers' Accelerator: the GPU when there is one, else the CPU; bf16 autocast or none.
    accelerate keeps these settings in a process-wide singleton and refuses a different mixed precision
    later in the same process; that part is reset here (the distributed set-up, PartialState, is kept), so
    one process can run several trainings with different settings (tests, in-process sweeps)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if bf16 else "no")


@contextlib.contextmanager
def own_forward(model):
    """The prepared (unwrapped) model with its own forward for the block: float32 master weights, no autocast.
    accelerate's mixed precision replaces the instance's `forward` by an autocast one and keeps the model's own
    as `_original_forward`; unwrap_model(keep_fp32_wrapper=False) would strip the autocast for good, the
    update's forward included, so here the model's own forward stands in for the block only. A model without
    the autocast forward (a float32 run) is yielded as it is."""
    patched, own = model.__dict__.get("forward"), model.__dict__.get("_original_forward")
    if patched is None or own is None:
        yield model
        return
    model.forward = own
    try:
        yield model
    finally:
        model.forward = patched


def reduce_numbers(accelerator, values: list[float], reduction: str = "sum") -> list[float]:
    """Python numbers reduced over all processes ("sum" or "max"), as float64 on the accelerator's device
    (NCCL refuses CPU tensors). Every rank must call it with the same number of values."""
    if accelerator.num_processes == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=accelerator.device)
    return [float(v) for v in accelerator.reduce(t, reduction=reduction).cpu()]


def weights_fingerprint(model) -> float:
    """One float64 number that changes when any parameter changes: Σ_k [(k+1)·Σx + Σ_i x_i·w_i] over the
    parameters in name order, with fixed pseudo-random weights w_i ∈ [0, 1) (so a permutation or sign flip
    inside a tensor shows). Computed in float64 in fixed-size chunks; identical weights on identical
    hardware give bit-identical fingerprints."""
    total = 0.0
    chunk = 1 << 22
    with torch.no_grad():
        for k, (_, p) in enumerate(sorted(model.named_parameters(), key=lambda kv: kv[0])):
            flat = p.detach().reshape(-1)
            s, c = 0.0, 0.0
            for start in range(0, flat.numel(), chunk):
                x = flat[start:start + chunk].double()
                w = (torch.arange(start, start + x.numel(), dtype=torch.float64, device=x.device)
                     * 0.6180339887498949).frac()
                s += float(x.sum())
                c += float((x * w).sum())
            total += (k + 1) * s + c
    return total


def _params_sharded(accelerator) -> bool:
    """FSDP and DeepSpeed ZeRO-3 hold a different shard on each rank: no per-rank comparison is possible."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        plugin = getattr(accelerator.state, "deepspeed_plugin", None)
        return getattr(plugin, "zero_stage", 0) == 3
    return False


def ranks_agree(accelerator, model) -> bool | None:
    """True when every process holds bit-identical weights (their fingerprints, gathered, are all equal),
    as data-parallel training must keep them; None where the parameters are sharded (FSDP, ZeRO-3).
    A collective: every rank must call it."""
    if accelerator.num_processes == 1:
        return True
    if _params_sharded(accelerator):
        return None
    fp = weights_fingerprint(accelerator.unwrap_model(model))
    gathered = accelerator.gather(torch.tensor([fp], dtype=torch.float64, device=accelerator.device))
    return bool((gathered == gathered[0]).all())


def bf16_is_fast() -> bool:
    """Whether bfloat16 matmuls run at least at float32 speed here: on a GPU when it supports bf16; on a CPU
    when a 256×256 bf16 matmul is not much slower than a float32 one. CPUs with AMX or AVX512-BF16 run bf16
    natively (faster than float32); on AVX2-only CPUs torch emulates it, measured ~100× slower (0.45 against
    42 GFLOP/s on one core of an AMD EPYC), which turns a 7-minute job into hours."""
    import time

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    a = torch.randn(256, 256)

    def seconds(x) -> float:
        x @ x  # warm-up
        t = time.perf_counter()
        for _ in range(3):
            x @ x
        return time.perf_counter() - t

    return seconds(a.bfloat16()) < 1.5 * seconds(a)
