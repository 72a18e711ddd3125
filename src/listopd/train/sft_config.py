"""The SFT trainer's options (`listopd sft`): one field each, its help beside it. Torch-free. The trainer:
train/sft.py."""

from __future__ import annotations

from dataclasses import dataclass

from listopd.util.config import check_at_least, finite_positive, option, require


@dataclass
class SFTConfig:
    tasks: str = option(help="training task file (JSONL)")
    out: str = option(help="run folder")
    tokenizer: str | None = option(None, "tokenizer folder (required when model is a preset)")
    model: str = option("tiny-teacher", "a preset name (tiny-student, tiny-teacher, small-student, small-teacher) "
                                        "or a model folder")
    val_tasks: str | None = option(None, "validation task file")
    keep_layers: str | None = option(None, "start from MODEL with only these decoder layers (comma-separated "
                                           "indices, e.g. 0,10,20,29): a smaller student initialised from a "
                                           "pretrained teacher's weights")
    steps: int = option(300, "optimiser steps", at_least=1)
    max_train_tokens: int | None = option(None, "stop after this many supervised (target) tokens", at_least=1)
    batch_size: int = option(16, "tasks per optimiser step (global)", at_least=1)
    micro_batch_size: int = option(16, "tasks per forward pass in each process", at_least=1)
    lr: float = option(1e-3, "peak learning rate (AdamW, betas 0.9/0.95)")
    weight_decay: float = option(0.0, "AdamW weight decay (matrices only)")
    warmup_steps: int = option(20, "linear learning-rate warm-up steps (0: none)", at_least=0)
    schedule: str = option("cosine", "constant or cosine (decay to 10% of the peak after warm-up)")
    grad_clip: float = option(1.0, "gradient-norm clip")
    eval_every: int = option(100, "validate every N steps (0: only at the end)", at_least=0)
    eval_tasks: int = option(64, "validation tasks per evaluation", at_least=1)
    stop_at_sampled_parse: float | None = option(
        None, "stop once the strict parse rate of one sample per validation task at T = 1 reaches this (checked "
              "every eval_every steps): a warm start stopped with parse headroom, at whatever step its format "
              "starts to click on this machine")
    eval_greedy: bool = option(True, "decode greedily at each evaluation too (False: only the sampled check of "
                                     "stop_at_sampled_parse runs there, half the evaluation's cost; the final "
                                     "validation is greedy either way)")
    max_new_tokens: int = option(64, "completion length limit of the validation outputs", at_least=1)
    save_every: int = option(100, "checkpoint every N steps", at_least=1)
    seed: int = option(0, "seed of the model initialisation (presets), the data order and any LoRA initialisation",
                       at_least=0)
    bf16: bool = option(False, "bfloat16 autocast")
    lora_r: int = option(0, "LoRA rank (0: full fine-tuning)", at_least=0)
    lora_alpha: int = option(16, "LoRA scaling α (the update is scaled by α / r)", at_least=1)
    threads: int = option(0, "torch CPU threads (0: torch's default, all cores)", at_least=0)

    def validate(self) -> None:
        check_at_least(self)
        require(self.keep_layers is None or all(x.strip().isdigit() for x in self.keep_layers.split(",")),
                f"keep_layers must be comma-separated layer indices, e.g. 0,10,20; got {self.keep_layers!r}")
        require(self.batch_size % self.micro_batch_size == 0,
                f"batch_size ({self.batch_size}) must be a multiple of micro_batch_size "
                f"({self.micro_batch_size})")
        require(finite_positive(self.lr), f"lr must be a finite number > 0; got {self.lr}")
        require(self.schedule in ("constant", "cosine"), f"schedule must be constant or cosine; got {self.schedule}")
        require(self.grad_clip > 0, "grad_clip must be > 0")
        if self.stop_at_sampled_parse is not None:
            require(0 < self.stop_at_sampled_parse <= 1,
                    f"stop_at_sampled_parse must be in (0, 1]; got {self.stop_at_sampled_parse}")
            require(bool(self.val_tasks) and self.eval_every > 0,
                    "stop_at_sampled_parse needs val_tasks and eval_every > 0 (it is checked at each evaluation)")
        require(self.eval_greedy or self.stop_at_sampled_parse is not None,
                "eval_greedy false leaves the evaluations nothing to do without stop_at_sampled_parse")

    def layer_list(self) -> list[int] | None:
        return None if self.keep_layers is None else [int(x) for x in self.keep_layers.split(",")]
