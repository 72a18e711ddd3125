"""Pieces shared by the SFT and ListOPD loops: data order, prompt encoding, optimiser and schedule,
the metrics log, evaluation by generation, and the final-model export.

Data order is a pure function of (seed, step): step s takes rows [s·B, (s+1)·B) of a seeded permutation
of the training tasks, re-shuffled every epoch. So a resumed run sees exactly the batches an
uninterrupted run would have seen, with nothing to save. Under several processes, rank r takes every
world-th row of the global batch.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from listopd.util.errors import ListopdError
from listopd.task.prompts import render_prompt


def batch_indices(n_items: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The global batch of step `step`: a slice of the seeded permutation of its epoch."""
    out = []
    start = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n_items)
        perm = np.random.default_rng([seed, epoch]).permutation(n_items)
        take = min(batch_size - len(out), n_items - offset)
        out.extend(int(i) for i in perm[offset:offset + take])
    return out


def shard(indices: list[int], rank: int, world: int) -> list[int]:
    return indices[rank::world]


def encode_prompt(task, tokenizer) -> list[int]:
    return tokenizer.encode(render_prompt(task, tokenizer), add_special_tokens=False)


def make_optimizer(model, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    # fused: one kernel for all parameters (on the CPU 4x faster than the per-tensor loop for a 5M model)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95), fused=True)


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Linear warm-up, then constant or cosine decay to 10% of the peak."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine" and total_steps > warmup_steps:
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


class MetricsLog:
    """Append-only `metrics.jsonl` (one JSON object per step, fsynced) plus TensorBoard when installed.

    On resume from checkpoint step s, records with step > s (written after that checkpoint by the run
    that crashed) are dropped first, so the file has no duplicated or missing steps.
    """

    def __init__(self, run_dir: Path, resume_step: int | None, enabled: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        keep = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line torn by a crash mid-write
                if resume_step is not None and rec.get("step", 0) <= resume_step:
                    keep.append(line)
        from listopd.util.io import atomic_write_text

        atomic_write_text(self.path, "".join(line + "\n" for line in keep))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        except Exception:  # noqa: BLE001 - TensorBoard is optional
            self.tb = None

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # a torn last line is dropped on resume
            raise ListopdError(f"cannot write {self.path}: {e.strerror or e}; the last checkpoint is intact") from e
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step" and v is not None and math.isfinite(v):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def decode_completions(tokenizer, rollout) -> list[str]:
    texts = []
    for ids, mask in zip(rollout.completion_ids, rollout.completion_mask):
        texts.append(tokenizer.decode(ids[mask > 0].tolist(), skip_special_tokens=True))
    return texts


@torch.no_grad()
def prompt_batches(tasks, tokenizer, batch_size: int):
    """Yield (row indices into `tasks`, their encoded prompts) in batches of similar prompt length, so that
    left padding stays short."""
    encoded = [encode_prompt(t, tokenizer) for t in tasks]
    order = sorted(range(len(tasks)), key=lambda i: len(encoded[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        yield rows, [encoded[i] for i in rows]


def generate_outputs(model, tokenizer, tasks, *, max_new_tokens: int, batch_size: int = 16,
                     greedy: bool = True, generator: torch.Generator | None = None,
                     temperature: float = 1.0) -> dict[str, str]:
    """Task id -> decoded completion (greedy by default), in batches sorted by prompt length."""
    from listopd.train.rollout import sample

    outputs = {}
    for rows, prompts in prompt_batches(tasks, tokenizer, batch_size):
        rollout = sample(model, prompts, max_new_tokens=max_new_tokens,
                         eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, greedy=greedy,
                         generator=generator, temperature=temperature)
        for i, text in zip(rows, decode_completions(tokenizer, rollout)):
            outputs[tasks[i].id] = text
    return outputs


EVAL_SEED = 20260101  # sampled evaluations draw from this seed: the same draws at every evaluation of every run


def evaluate(model, tokenizer, tasks, *, max_new_tokens: int, batch_size: int = 16, n_boot: int = 200,
             temperature: float = 0.0) -> dict:
    """Outputs on `tasks`, scored by listopd.task.metrics.score (strict parse, NDCG parsed/strict, …).

    temperature 0: greedy. temperature > 0: one sample per task at that temperature from a generator seeded
    with EVAL_SEED, so two evaluations differ only through the model. Sampling measures the distribution
    that on-policy training shapes; greedy decoding only its argmax (a warm start can parse 100% greedily
    and 44% of the time when sampled)."""
    from listopd.task.metrics import score

    sampled = temperature > 0
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(EVAL_SEED) if sampled else None
    outputs = generate_outputs(model, tokenizer, tasks, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               greedy=not sampled, generator=generator, temperature=temperature if sampled else 1.0)
    return score(tasks, outputs, n_boot=n_boot)


def headline(metrics: dict) -> dict:
    """The few validation numbers logged every evaluation."""
    return {"val_strict_parse_rate": metrics["strict_parse_rate"],
            "val_ndcg@1_parsed": metrics["ndcg@1_parsed"],
            "val_ndcg@1_strict": metrics["ndcg@1_strict"]}


def export_model(model, tokenizer, folder: Path) -> None:
    """save_pretrained into a temporary folder, then rename: the final model appears whole or not at all."""
    import shutil

    from listopd.util.io import refused_write

    folder = Path(folder)
    tmp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    with refused_write(tmp, f"the final model to {folder}"):
        if hasattr(model, "merge_and_unload"):  # LoRA: export plain merged weights
            model = model.merge_and_unload()
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)


def check_finite(step: int, **values: float) -> None:
    """Stop on NaN/inf with the step and the quantity named (the caller keeps the last good checkpoint)."""
    for name, v in values.items():
        if v is not None and not math.isfinite(v):
            raise ListopdError(f"non-finite {name} ({v}) at step {step}; stopped without saving this step — "
                               f"the last good checkpoint is kept")


def make_accelerator(bf16: bool):
    """The trainers' Accelerator: the GPU when there is one, else the CPU; bf16 autocast or none.
    accelerate keeps these settings in a process-wide singleton and refuses a different mixed precision
    later in the same process; that part is reset here (the distributed set-up, PartialState, is kept), so
    one process can run several trainings with different settings (tests, in-process sweeps)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if bf16 else "no")


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
