"""Supervised fine-tuning on the task JSONL: makes the teacher and the warm-start student.

Completion-only loss: each example is  prompt (chat template, masked) + target_text + EOS  and the
cross-entropy is averaged over the target and EOS tokens of the whole global batch. The warm start must
keep parse headroom (the paper's warm start parses 33.5%), so SFT can stop on a step budget (`steps`) or a
budget of supervised tokens (`max_train_tokens`), whichever comes first.

Runs in one process or under `accelerate launch` (DDP); resumes from its last checkpoint when started
again with the same command; writes `RUN/metrics.jsonl`, `RUN/config.json`, `RUN/final/` (model +
tokenizer, loadable by path) and `RUN/summary.json`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from listopd.util.config import finite_positive, require


@dataclass
class SFTConfig:
    tasks: str
    out: str
    tokenizer: str | None = None
    model: str = "tiny-teacher"
    val_tasks: str | None = None
    steps: int = 300
    max_train_tokens: int | None = None
    batch_size: int = 16
    micro_batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    schedule: str = "cosine"
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_tasks: int = 64
    max_new_tokens: int = 64
    save_every: int = 100
    seed: int = 0
    bf16: bool = False
    lora_r: int = 0
    lora_alpha: int = 16
    threads: int = 0

    HELP = {
        "tasks": "training task file (JSONL)", "out": "run folder",
        "tokenizer": "tokenizer folder (required when model is a preset)",
        "model": "a preset name (tiny-student, tiny-teacher, small-student, small-teacher) or a model folder",
        "val_tasks": "validation task file", "steps": "optimiser steps",
        "max_train_tokens": "stop after this many supervised (target) tokens",
        "batch_size": "tasks per optimiser step (global)", "micro_batch_size": "tasks per forward pass in each process",
        "schedule": "constant or cosine", "eval_every": "validate every N steps (0: only at the end)",
        "eval_tasks": "validation tasks per evaluation", "save_every": "checkpoint every N steps",
        "bf16": "bfloat16 autocast", "lora_r": "LoRA rank (0: full fine-tuning)",
        "threads": "torch CPU threads (0: torch's default, all cores)",
    }

    def validate(self) -> None:
        require(self.steps >= 1, f"steps must be ≥ 1; got {self.steps}")
        require(self.batch_size >= 1 and self.micro_batch_size >= 1, "batch sizes must be ≥ 1")
        require(self.batch_size % self.micro_batch_size == 0,
                f"batch_size ({self.batch_size}) must be a multiple of micro_batch_size "
                f"({self.micro_batch_size})")
        require(finite_positive(self.lr), f"lr must be a finite number > 0; got {self.lr}")
        require(self.schedule in ("constant", "cosine"), f"schedule must be constant or cosine; got {self.schedule}")
        require(self.max_train_tokens is None or self.max_train_tokens >= 1, "max_train_tokens must be ≥ 1")
        require(self.eval_every >= 0 and self.save_every >= 1, "eval_every ≥ 0 and save_every ≥ 1")
        require(self.lora_r >= 0, "lora_r must be ≥ 0")
        require(self.grad_clip > 0, "grad_clip must be > 0")


def encode_example(task, tokenizer) -> tuple[list[int], list[int]]:
    """(input ids, labels) with the prompt masked to −100; the target ends with EOS."""
    from listopd.task.prompts import target_text
    from listopd.train.training import encode_prompt

    prompt = encode_prompt(task, tokenizer)
    target = tokenizer.encode(target_text(task), add_special_tokens=False) + [tokenizer.eos_token_id]
    return prompt + target, [-100] * len(prompt) + target


def collate(examples, pad_id: int):
    """Right-padded (input ids, labels, attention mask) tensors."""
    import torch

    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, :len(x)] = torch.tensor(x)
        labels[i, :len(y)] = torch.tensor(y)
        mask[i, :len(x)] = 1
    return ids, labels, mask


def build_or_load(model_spec: str, tokenizer, seed: int):
    from listopd.train.models import PRESETS, build_model, check_model_vocabulary, load_model

    model = build_model(model_spec, tokenizer, seed=seed) if model_spec in PRESETS else load_model(model_spec)
    check_model_vocabulary(model, tokenizer, name=model_spec)
    return model


def apply_lora(model, r: int, alpha: int):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))


def run_sft(cfg: SFTConfig, *, quiet: bool = False) -> dict:
    import torch
    from tqdm import tqdm

    from listopd.train import checkpoint as ckpt
    from listopd.util.io import atomic_write_json
    from listopd.train.models import load_tokenizer
    from listopd.task.tasks import read_tasks
    from listopd.train.training import (MetricsLog, batch_indices, check_finite, evaluate, export_model, headline,
                                  lr_factor, make_accelerator, make_optimizer, ranks_agree, shard)

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    accelerator = make_accelerator(cfg.bf16)
    rank, world = accelerator.process_index, accelerator.num_processes
    require(cfg.batch_size >= world, f"batch_size ({cfg.batch_size}) must be ≥ the number of processes ({world})")
    run_dir = Path(cfg.out)
    torch.manual_seed(cfg.seed)

    tok_spec = cfg.tokenizer or cfg.model
    tokenizer = load_tokenizer(tok_spec)
    tasks = read_tasks(cfg.tasks)
    val = read_tasks(cfg.val_tasks)[:cfg.eval_tasks] if cfg.val_tasks else []
    examples = [encode_example(t, tokenizer) for t in tasks]
    model = build_or_load(cfg.model, tokenizer, cfg.seed)
    if cfg.lora_r:
        model = apply_lora(model, cfg.lora_r, cfg.lora_alpha)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.schedule))

    start_step, tokens_seen = 0, 0
    resumed = ckpt.resume_training(run_dir, model, optimizer, scheduler)
    if resumed is not None:
        start_step, trainer_state, _ = resumed
        tokens_seen = trainer_state["tokens_seen"]
    model, optimizer = accelerator.prepare(model, optimizer)
    is_main = accelerator.is_main_process
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", dataclasses.asdict(cfg))
    log = MetricsLog(run_dir, resume_step=start_step, enabled=is_main)

    def save(step: int) -> None:
        if is_main:
            ckpt.save_training_state(run_dir, step, accelerator.unwrap_model(model), optimizer, scheduler,
                                     rng=ckpt.rng_state(), trainer_state={"tokens_seen": tokens_seen})
        accelerator.wait_for_everyone()

    def validate() -> dict:
        if not val:
            return {}
        return headline(evaluate(accelerator.unwrap_model(model), tokenizer, val,
                                 max_new_tokens=cfg.max_new_tokens))

    bar = tqdm(total=cfg.steps, initial=start_step, desc="sft", disable=quiet or not is_main, dynamic_ncols=True)
    step, stop_reason = start_step, "steps"
    t0 = time.time()
    while step < cfg.steps:
        if cfg.max_train_tokens is not None and tokens_seen >= cfg.max_train_tokens:
            stop_reason = "max_train_tokens"
            break
        model.train()
        rows = shard(batch_indices(len(examples), cfg.batch_size, step, cfg.seed), rank, world)
        batch = [examples[i] for i in rows]
        n_local = sum(sum(1 for y in labels if y != -100) for _, labels in batch)
        n_global = int(accelerator.reduce(torch.tensor(n_local, device=accelerator.device), reduction="sum"))
        total_loss = 0.0
        chunks = [batch[i:i + cfg.micro_batch_size] for i in range(0, len(batch), cfg.micro_batch_size)]
        for j, chunk in enumerate(chunks):
            ids, labels, mask = collate(chunk, tokenizer.pad_token_id)
            ids, labels, mask = ids.to(accelerator.device), labels.to(accelerator.device), mask.to(accelerator.device)
            with accelerator.autocast():
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
            loss_sum = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                         labels[:, 1:].reshape(-1), ignore_index=-100,
                                                         reduction="sum")
            loss = loss_sum * world / max(n_global, 1)  # DDP averages over ranks: this gives the global mean
            sync = j == len(chunks) - 1
            with (accelerator.no_sync(model) if not sync and world > 1 else contextlib.nullcontext()):
                accelerator.backward(loss)
            total_loss += float(loss_sum.detach())
        grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        mean_loss = float(accelerator.reduce(torch.tensor(total_loss, dtype=torch.float64, device=accelerator.device),
                                             reduction="sum")) / max(n_global, 1)
        check_finite(step + 1, loss=mean_loss, grad_norm=grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens_seen += n_global
        record = {"step": step, "loss": mean_loss, "grad_norm": grad_norm, "lr": scheduler.get_last_lr()[0],
                  "tokens_seen": tokens_seen, "elapsed_s": round(time.time() - t0, 2)}
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
            record.update(validate())
        log.write(record)
        bar.update(1)
        bar.set_postfix(loss=f"{mean_loss:.3f}", **({"parse": f"{record['val_strict_parse_rate']:.2f}"}
                                                    if "val_strict_parse_rate" in record else {}))
        if step % cfg.save_every == 0:
            save(step)
    bar.close()
    if step % cfg.save_every:
        save(step)
    final = validate()
    summary = {"steps": step, "tokens_seen": tokens_seen, "stop_reason": stop_reason, **final,
               "ranks_identical": ranks_agree(accelerator, model), "world_size": world}
    if is_main:
        export_model(accelerator.unwrap_model(model), tokenizer, run_dir / "final")
        atomic_write_json(run_dir / "summary.json", summary)
    log.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()  # destroys the process group: a rank exiting without it can abort (gloo)
    return summary

