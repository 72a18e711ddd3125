"""The SFT trainer's options (`listopd sft`): one field each, its help beside it. Torch-free. The trainer:
train/sft.py."""

from __future__ import annotations

from dataclasses import dataclass

from listopd.util.config import finite_positive, option, require


@dataclass
class SFTConfig:
    tasks: str = option(help="training task file (JSONL)")
    out: str = option(help="run folder")
    tokenizer: str | None = option(None, "tokenizer folder (required when model is a preset)")
    model: str = option("tiny-teacher", "a preset name (tiny-student, tiny-teacher, small-student, small-teacher) "
                                        "or a model folder")
    val_tasks: str | None = option(None, "validation task file")
    steps: int = option(300, "optimiser steps")
    max_train_tokens: int | None = option(None, "stop after this many supervised (target) tokens")
    batch_size: int = option(16, "tasks per optimiser step (global)")
    micro_batch_size: int = option(16, "tasks per forward pass in each process")
    lr: float = option(1e-3, "peak learning rate (AdamW, betas 0.9/0.95)")
    weight_decay: float = option(0.0, "AdamW weight decay (matrices only)")
    warmup_steps: int = option(20, "linear learning-rate warm-up steps")
    schedule: str = option("cosine", "constant or cosine (decay to 10% of the peak after warm-up)")
    grad_clip: float = option(1.0, "gradient-norm clip")
    eval_every: int = option(100, "validate every N steps (0: only at the end)")
    eval_tasks: int = option(64, "validation tasks per evaluation")
    max_new_tokens: int = option(64, "completion length limit of the validation outputs")
    save_every: int = option(100, "checkpoint every N steps")
    seed: int = option(0, "seed of the model initialisation (presets), the data order and any LoRA initialisation")
    bf16: bool = option(False, "bfloat16 autocast")
    lora_r: int = option(0, "LoRA rank (0: full fine-tuning)")
    lora_alpha: int = option(16, "LoRA scaling α (the update is scaled by α / r)")
    threads: int = option(0, "torch CPU threads (0: torch's default, all cores)")

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
