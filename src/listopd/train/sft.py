"""Supervised fine-tuning on the task JSONL: makes the teacher and the warm-start student. Options:
train/sft_config.py.

Completion-only loss: each example is  prompt (chat template, masked) + target_text + EOS  and the
cross-entropy is averaged over the target and EOS tokens of the whole global batch. The warm start must
keep parse headroom (the paper's warm start parses 33.5%), so SFT can stop on a step budget (`steps`) or a
budget of supervised tokens (`max_train_tokens`), whichever comes first.

Runs in one process or under `accelerate launch` (DDP); resumes from its last checkpoint when started
again with the same command; writes `RUN/metrics.jsonl`, `RUN/config.json`, `RUN/final/` (model +
tokenizer, loadable by path) and `RUN/summary.json` (train/scaffold.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import torch
from tqdm import tqdm

from listopd.task.prompts import encode_prompt, refuse_long_prompts, target_text
from listopd.task.tasks import read_tasks
from listopd.train import checkpoint as ckpt
from listopd.train.data_order import batch_indices, shard
from listopd.train.evaluation import check_prompts_fit
from listopd.train.models import (PRESETS, apply_lora, build_model, check_model_vocabulary, context_length, keep_layers,
                                  load_model, load_tokenizer)
from listopd.train.optim import lr_factor, make_optimizer
from listopd.train.scaffold import TrainingRun, check_finite
from listopd.train.sft_config import SFTConfig
from listopd.util.config import field_defaults


def encode_example(task, tokenizer) -> tuple[list[int], list[int]]:
    """(input ids, labels) with the prompt masked to −100; the target ends with EOS."""
    prompt = encode_prompt(task, tokenizer)
    target = tokenizer.encode(target_text(task), add_special_tokens=False) + [tokenizer.eos_token_id]
    return prompt + target, [-100] * len(prompt) + target


def collate(examples, pad_id: int):
    """Right-padded (input ids, labels, attention mask) tensors."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, :len(x)] = torch.tensor(x)
        labels[i, :len(y)] = torch.tensor(y)
        mask[i, :len(x)] = 1
    return ids, labels, mask


def target_loss_sum(model, ids, labels, mask) -> torch.Tensor:
    """Summed cross-entropy of the target tokens (labels ≠ −100), teacher-forced in one forward pass.

    Logits are computed only from the position before the batch's earliest target on (`logits_to_keep`): the
    prompt positions before it carry no loss, and at a real vocabulary (SmolLM2: 49,152 tokens) their lm_head
    and log-softmax are about a fifth of the step. The same sum over the same target tokens as full logits."""
    supervised = (labels != -100).any(dim=0)
    first = max(1, int(supervised.nonzero()[0])) if supervised.any() else labels.shape[1] - 1
    out = model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=ids.shape[1] - first + 1)
    logits = out.logits[:, :-1].float()  # position i predicts token i + 1: positions first − 1 … W − 2
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, first:].reshape(-1),
                                             ignore_index=-100, reduction="sum")


def build_or_load(model_spec: str, tokenizer, seed: int, layers: list[int] | None = None):
    model = build_model(model_spec, tokenizer, seed=seed) if model_spec in PRESETS else load_model(model_spec)
    check_model_vocabulary(model, tokenizer, name=model_spec)
    return model if layers is None else keep_layers(model, layers)


def sft_step(cfg: SFTConfig, run: TrainingRun, batch: list, step: int, pad_id: int) -> tuple[float, int, float]:
    """One optimiser step on a batch of examples; returns (mean loss per target token, global target tokens,
    gradient norm)."""
    model, accelerator, device = run.model, run.accelerator, run.device
    model.train()
    n_local = sum(sum(1 for y in labels if y != -100) for _, labels in batch)
    n_global = int(accelerator.reduce(torch.tensor(n_local, device=device), reduction="sum"))
    total_loss = 0.0
    chunks = [batch[i:i + cfg.micro_batch_size] for i in range(0, len(batch), cfg.micro_batch_size)]
    for j, chunk in enumerate(chunks):
        ids, labels, mask = (t.to(device) for t in collate(chunk, pad_id))
        with accelerator.autocast():
            loss_sum = target_loss_sum(model, ids, labels, mask)
        loss = loss_sum * run.world / max(n_global, 1)  # DDP averages over ranks: this gives the global mean
        sync = j == len(chunks) - 1
        with (accelerator.no_sync(model) if not sync and run.world > 1 else contextlib.nullcontext()):
            accelerator.backward(loss)
        total_loss += float(loss_sum.detach())
    grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip))
    mean_loss = float(accelerator.reduce(torch.tensor(total_loss, dtype=torch.float64, device=device),
                                         reduction="sum")) / max(n_global, 1)
    check_finite(step + 1, loss=mean_loss, grad_norm=grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return mean_loss, n_global, grad_norm


BAR_RATES = {"parse": "val_strict_parse_rate", "sampled": "val_sampled_strict_parse_rate"}  # progress bar: log key


def run_sft(cfg: SFTConfig, *, quiet: bool = False) -> dict:
    """Train an SFT run into cfg.out (resuming its last checkpoint); returns its summary."""
    # setup
    cfg.validate()  # a config built in Python has not been through load_config
    run = TrainingRun(cfg.out, seed=cfg.seed, threads=cfg.threads, bf16=cfg.bf16, batch_size=cfg.batch_size)
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
    tasks = read_tasks(cfg.tasks)
    val = read_tasks(cfg.val_tasks)[:cfg.eval_tasks] if cfg.val_tasks else []
    examples = [encode_example(t, tokenizer) for t in tasks]
    model = build_or_load(cfg.model, tokenizer, cfg.seed, cfg.layer_list())
    refuse_long_prompts(tasks, [len(ids) for ids, _ in examples], context_length(model), source=cfg.tasks,
                        what="prompt + target")
    check_prompts_fit([model], tokenizer, val, source=cfg.val_tasks, room=cfg.max_new_tokens)
    if cfg.lora_r:
        model = apply_lora(model, cfg.lora_r, cfg.lora_alpha)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.schedule))
    start_step, trainer_state, _ = run.resume(model, optimizer, scheduler, config=dataclasses.asdict(cfg),
                                              path_keys=("tasks", "val_tasks", "tokenizer", "model"),
                                              defaults=field_defaults(SFTConfig))
    tokens_seen = trainer_state.get("tokens_seen", 0)
    run.start(model, optimizer, scheduler, config=dataclasses.asdict(cfg), start_step=start_step)

    def save(step: int) -> None:
        run.save(step, rng=ckpt.rng_state(), trainer_state={"tokens_seen": tokens_seen, "stop_reason": stop_reason})

    # train
    bar = tqdm(total=cfg.steps, initial=start_step, desc="sft", disable=quiet or not run.is_main, dynamic_ncols=True)
    step, stop_reason, t0 = start_step, trainer_state.get("stop_reason", "steps"), time.time()
    greedy = None  # the latest evaluation's greedy numbers: the summary's, where training stops right after one
    while step < cfg.steps and stop_reason != "sampled_parse":  # a run stopped by its parse target stays stopped
        if cfg.max_train_tokens is not None and tokens_seen >= cfg.max_train_tokens:
            stop_reason = "max_train_tokens"
            break
        rows = shard(batch_indices(len(examples), cfg.batch_size, step, cfg.seed), run.rank, run.world)
        mean_loss, n_tokens, grad_norm = sft_step(cfg, run, [examples[i] for i in rows], step, tokenizer.pad_token_id)
        step += 1
        tokens_seen += n_tokens
        record = {"step": step, "loss": mean_loss, "grad_norm": grad_norm, "lr": scheduler.get_last_lr()[0],
                  "tokens_seen": tokens_seen, "elapsed_s": round(time.time() - t0, 2)}
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
            if cfg.eval_greedy:
                greedy = run.validate(tokenizer, val, max_new_tokens=cfg.max_new_tokens)
                record.update(greedy)
            if cfg.stop_at_sampled_parse is not None:
                sampled = run.validate(tokenizer, val, max_new_tokens=cfg.max_new_tokens, temperature=1.0)
                record["val_sampled_strict_parse_rate"] = sampled["val_strict_parse_rate"]
                if sampled["val_strict_parse_rate"] >= cfg.stop_at_sampled_parse:
                    stop_reason = "sampled_parse"
        run.log(record)
        bar.update(1)
        bar.set_postfix(loss=f"{mean_loss:.3f}", **{k: f"{record[v]:.2f}" for k, v in BAR_RATES.items() if v in record})
        if step % cfg.save_every == 0 or stop_reason == "sampled_parse":
            save(step)
    bar.close()
    # save and clean up
    if step % cfg.save_every and stop_reason != "sampled_parse":  # (that stop saved its step already)
        save(step)
    stopped_at_eval = stop_reason == "sampled_parse" and greedy is not None  # (same weights: not validated twice)
    final = greedy if stopped_at_eval else run.validate(tokenizer, val, max_new_tokens=cfg.max_new_tokens)
    return run.finish(tokenizer, {"steps": step, "tokens_seen": tokens_seen, "stop_reason": stop_reason, **final})
