"""The ListOPD trainer: on-policy distillation with reward extrapolation λ and clip strength c.

Each step:
  1. sample one completion per prompt from the student (KV cache; temperature 1, top-p 1, no top-k);
  2. score the sampled tokens under the teacher and the base π_B (default: a frozen copy of the warm start
     the student starts from; `base` may name any other model folder), and under the rollout student
     (π_old) when several optimiser steps reuse a rollout;
  3. compute advantages and the loss with `listopd.core.loss.listopd_loss` only, over micro-batches whose loss is
     normalised by the global completion-token count (gradient accumulation = one big batch); with
     `estimator: expected`, `listopd_expected_loss` applies the same loss to every vocabulary entry at each
     sampled prefix, weighted by the student's probability (same expected gradient, much less noise: on the
     tiny pair the sampled-token gradients of two batches of 16 pointed in unrelated directions, cosine
     −0.43…0.38, the expected ones agreed, 0.31…0.80 — scripts/gradient_noise.py);
  4. AdamW step with gradient clipping; `ppo_epochs` > 1 reuses the rollout (then the PPO ratio matters).
With the sampled estimator only the [batch, completion] log-probs of the sampled tokens are kept;
[batch, completion, vocab] logits exist inside one micro-batch's forward only. The expected estimator keeps
[micro-batch, completion, vocab] log-prob tables of the teacher and the base for one step.

Logged per step (`RUN/metrics.jsonl`): teacher KL on the samples (k1, k3), advantage mean/std/min/max,
PPO clip fraction, fraction of tokens where the c-cap binds, entropy, completion length, EOS and truncation
rates, the strict parse rate of the rollouts; every `eval_every` steps the validation strict parse rate and
NDCG@1 (parsed and strict).

Cliff guard: with the clip mode `teacher_ratio` and (p, b) given (`cliff_p`, `cliff_b`, or a calibration
JSON file with "version": 1 and top-level "p" and "b"), λ*(p, b, c) is computed at start and λ ≥ λ* is
refused unless `allow_above_cliff`. During training, when the rollout parse rate (mean over the last `guard_window`
steps) falls more than `guard_margin` below its best, the run checkpoints and stops.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

from listopd.util.config import finite_positive, require
from listopd.util.errors import ListopdError
from listopd.core.loss import CLIP_MODES, check_loss_args


ESTIMATORS = ("sampled", "expected")


@dataclass
class OPDConfig:
    student: str
    teacher: str
    tasks: str
    out: str
    base: str | None = None
    val_tasks: str | None = None
    reward_scale: float = 1.0
    clip_strength: float = 5.0
    clip_mode: str = "teacher_ratio"
    estimator: str = "sampled"
    eps_low: float = 0.2
    eps_high: float = 0.2
    steps: int = 100
    batch_size: int = 8
    micro_batch_size: int = 8
    ppo_epochs: int = 1
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"
    grad_clip: float = 1.0
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    eval_every: int = 50
    eval_tasks: int = 64
    eval_temperature: float = 0.0
    save_every: int = 50
    seed: int = 0
    bf16: bool = False
    lora_r: int = 0
    lora_alpha: int = 16
    threads: int = 0
    cliff_p: float | None = None
    cliff_b: float | None = None
    calibration: str | None = None
    allow_above_cliff: bool = False
    guard_margin: float | None = None
    guard_window: int = 10

    HELP = {
        "student": "warm-start model folder (the student starts here)", "teacher": "teacher model folder",
        "tasks": "training task file (prompts)", "out": "run folder",
        "base": "base/reference model π_B (default: a frozen copy of the student's warm start)",
        "val_tasks": "validation task file", "reward_scale": "λ, the reward extrapolation coefficient",
        "clip_strength": "c, the importance-sampling clip strength",
        "clip_mode": "what c caps: " + ", ".join(CLIP_MODES),
        "estimator": "sampled: the advantage of the sampled token only (the paper's); expected: the same "
                     "loss summed over the whole vocabulary at each sampled prefix, weighted by the student's "
                     "probabilities (same expected gradient, far less noise; needs [batch, length, vocab] "
                     "tables of teacher and base log-probs)",
        "eps_low": "PPO ratio clip below", "eps_high": "PPO ratio clip above",
        "batch_size": "prompts per step (global)", "micro_batch_size": "prompts per forward in each process",
        "ppo_epochs": "optimiser steps per rollout batch", "schedule": "constant or cosine",
        "max_new_tokens": "completion length limit", "temperature": "sampling temperature (1: unbiased)",
        "top_p": "nucleus sampling (1: off)", "top_k": "top-k sampling (0: off)",
        "eval_every": "validate every N steps (0: only at the end)", "eval_tasks": "validation tasks used",
        "eval_temperature": "validation decoding: 0 greedy; > 0 one sample per task at this temperature, "
                            "from a fixed seed (the same draws in every run)",
        "save_every": "checkpoint every N steps", "bf16": "bfloat16 autocast",
        "lora_r": "LoRA rank (0: full fine-tuning)", "threads": "torch CPU threads (0: torch's default)",
        "cliff_p": "teacher modal mass p for the cliff guard", "cliff_b": "warm-start modal mass b",
        "calibration": "calibration.json (version 1, top-level p and b) instead of cliff_p/cliff_b",
        "allow_above_cliff": "train at λ ≥ λ*(p,b,c) anyway",
        "guard_margin": "stop when the rollout parse rate falls this far below its best (off when unset)",
        "guard_window": "steps averaged for the guard's parse rate",
    }

    def validate(self) -> None:
        check_loss_args(self.reward_scale, self.clip_strength, self.clip_mode, self.eps_low, self.eps_high)
        require(self.steps >= 1, f"steps must be ≥ 1; got {self.steps}")
        require(self.batch_size >= 1 and self.micro_batch_size >= 1, "batch sizes must be ≥ 1")
        require(self.ppo_epochs >= 1, f"ppo_epochs must be ≥ 1; got {self.ppo_epochs}")
        require(self.estimator in ESTIMATORS,
                f"estimator must be one of {', '.join(ESTIMATORS)}; got {self.estimator!r}")
        require(self.estimator == "sampled" or (self.ppo_epochs == 1 and self.clip_mode != "truncated_is"),
                "estimator expected needs ppo_epochs 1 and a clip_mode other than truncated_is (it sums over "
                "the vocabulary under the current student, so there is no sampler mismatch to correct)")
        require(finite_positive(self.lr), f"lr must be a finite number > 0; got {self.lr}")
        require(self.schedule in ("constant", "cosine"), f"schedule must be constant or cosine; got {self.schedule}")
        require(self.max_new_tokens >= 1, "max_new_tokens must be ≥ 1")
        require(finite_positive(self.temperature), "temperature must be > 0")
        require(self.eval_temperature >= 0 and math.isfinite(self.eval_temperature),
                f"eval_temperature must be ≥ 0 (0: greedy); got {self.eval_temperature}")
        require(0 < self.top_p <= 1, f"top_p must be in (0, 1]; got {self.top_p}")
        require(self.top_k >= 0, "top_k must be ≥ 0")
        require(self.eval_every >= 0 and self.save_every >= 1, "eval_every ≥ 0 and save_every ≥ 1")
        require(self.grad_clip > 0, "grad_clip must be > 0")
        require(self.lora_r >= 0, "lora_r must be ≥ 0")
        require((self.cliff_p is None) == (self.cliff_b is None),
                "cliff_p and cliff_b go together: give both or neither")
        require(not (self.calibration and self.cliff_p is not None),
                "give either calibration or cliff_p/cliff_b, not both")
        require(self.guard_window >= 1, "guard_window must be ≥ 1")
        require(self.guard_margin is None or 0 < self.guard_margin < 1,
                f"guard_margin must be in (0, 1); got {self.guard_margin}")
        require(not (self.reward_scale == 1.0 and self.base is not None),
                "base is ignored at reward_scale 1 (plain OPD: π_B cancels); drop it or set λ ≠ 1")

    def cliff_pb(self) -> tuple[float, float] | None:
        if self.cliff_p is not None:
            return self.cliff_p, self.cliff_b
        if self.calibration:
            from listopd.experiment.calibrate import read_calibration_file

            data = read_calibration_file(self.calibration)
            return float(data["p"]), float(data["b"])
        return None


def cliff_check(cfg: OPDConfig) -> dict:
    """λ*(p, b, c) for the configured run; refuses λ ≥ λ* unless allowed. Returns what it found."""
    from listopd.core import theory

    pb = cfg.cliff_pb()
    if pb is None:
        return {}
    p, b = pb
    lam_star = float(theory.lambda_star(p, b, cfg.clip_strength))
    info = {"cliff_p": p, "cliff_b": b, "lambda_star": lam_star}
    if cfg.clip_mode != "teacher_ratio":
        info["cliff_note"] = f"λ* assumes clip_mode teacher_ratio; this run uses {cfg.clip_mode}"
        return info
    if cfg.reward_scale >= lam_star and not cfg.allow_above_cliff:
        raise ListopdError(f"reward_scale λ = {cfg.reward_scale} is at or above the predicted cliff "
                           f"λ*(p={p:g}, b={b:g}, c={cfg.clip_strength:g}) = {lam_star:.4f}; "
                           f"use allow_above_cliff to train there anyway")
    return info


def _load_frozen(path: str, dtype=None):
    from listopd.train.models import load_model

    model = load_model(path, dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    return model


def run_opd(cfg: OPDConfig, *, quiet: bool = False) -> dict:
    import torch
    from tqdm import tqdm

    from listopd.train import checkpoint as ckpt
    from listopd.task.contract import RankingContract
    from listopd.util.io import atomic_write_json
    from listopd.core.loss import listopd_expected_loss, listopd_loss
    from listopd.train.models import check_model_vocabulary, check_same_vocabulary, load_model, load_tokenizer
    from listopd.train.rollout import completion_logprob_table, completion_logprobs, sample, warn_if_truncated_sampling
    from listopd.train.sft import apply_lora
    from listopd.task.tasks import read_tasks
    from listopd.train.training import (MetricsLog, batch_indices, check_finite, decode_completions, encode_prompt,
                                  evaluate, export_model, headline, lr_factor, make_accelerator, make_optimizer,
                                  ranks_agree, reduce_numbers, shard)

    cliff = cliff_check(cfg)
    warn_if_truncated_sampling(cfg.temperature, cfg.top_p, cfg.top_k)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    accelerator = make_accelerator(cfg.bf16)
    rank, world = accelerator.process_index, accelerator.num_processes
    require(cfg.batch_size >= world, f"batch_size ({cfg.batch_size}) must be ≥ the number of processes ({world})")
    device = accelerator.device
    run_dir = Path(cfg.out)
    torch.manual_seed(cfg.seed)

    tokenizer = load_tokenizer(cfg.student)
    teacher_tok = load_tokenizer(cfg.teacher)
    base_path = cfg.base or cfg.student
    base_tok = load_tokenizer(base_path) if cfg.base else None
    check_same_vocabulary(tokenizer, teacher_tok, base_tok)
    tasks = read_tasks(cfg.tasks)
    val = read_tasks(cfg.val_tasks)[:cfg.eval_tasks] if cfg.val_tasks else []
    prompts = [encode_prompt(t, tokenizer) for t in tasks]
    contracts = [RankingContract.for_task(t) for t in tasks]

    student = load_model(cfg.student)
    frozen_dtype = torch.bfloat16 if cfg.bf16 else None  # frozen scorers need no float32 master weights
    teacher = _load_frozen(cfg.teacher, frozen_dtype).to(device)
    base = _load_frozen(base_path, frozen_dtype).to(device) if cfg.reward_scale != 1.0 else None
    for name, model in (("student", student), ("teacher", teacher), ("base", base)):
        if model is not None:
            check_model_vocabulary(model, tokenizer, name=name)
    if cfg.lora_r:
        student = apply_lora(student, cfg.lora_r, cfg.lora_alpha)
    optimizer = make_optimizer(student, cfg.lr, cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.schedule))
    generator = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank)  # multinomial needs it on device

    start_step, guard = 0, {"best": None, "history": []}
    resumed = ckpt.resume_training(run_dir, student, optimizer, scheduler, generator)
    if resumed is not None:
        start_step, trainer_state, rng = resumed
        guard = trainer_state["guard"]
        if len(rng.get("generators") or []) == world:  # each rank's own sampling stream (same world size)
            generator.set_state(rng["generators"][rank].clone())
    student, optimizer = accelerator.prepare(student, optimizer)
    is_main = accelerator.is_main_process
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        # the options as configured; what the cliff check derived from them (p, b from a calibration file,
        # λ*) under a key of its own, so a re-run compares the same options
        atomic_write_json(run_dir / "config.json", {**dataclasses.asdict(cfg), "cliff_check": cliff})
    log = MetricsLog(run_dir, resume_step=start_step, enabled=is_main)

    def save(step: int) -> None:
        # one row per rank; cloned (a row view keeps a storage offset, which Generator.set_state mis-reads)
        states = [s.clone() for s in accelerator.gather(generator.get_state().to(device)[None]).cpu()] \
            if world > 1 else None
        if is_main:
            ckpt.save_training_state(run_dir, step, accelerator.unwrap_model(student), optimizer, scheduler,
                                     rng={**ckpt.rng_state(generator), "generators": states},
                                     trainer_state={"guard": guard})
        accelerator.wait_for_everyone()

    def validate() -> dict:
        if not val:
            return {}
        return headline(evaluate(accelerator.unwrap_model(student), tokenizer, val,
                                 max_new_tokens=cfg.max_new_tokens, temperature=cfg.eval_temperature))

    def score_under(model, roll, scorer=completion_logprobs):
        with torch.no_grad(), accelerator.autocast():
            return scorer(model, roll)

    expected = cfg.estimator == "expected"
    # teacher and base: the sampled tokens' log-probs, or whole log-prob tables for the expected estimator
    frozen_scorer = completion_logprob_table if expected else completion_logprobs

    bar = tqdm(total=cfg.steps, initial=start_step, desc=f"opd λ={cfg.reward_scale:g}",
               disable=quiet or not is_main, dynamic_ncols=True)
    step, t0 = start_step, time.time()
    stop_reason = guard.get("stopped") or "steps"  # a run the guard stopped stays stopped when re-run
    while step < cfg.steps and stop_reason == "steps":
        rows = shard(batch_indices(len(tasks), cfg.batch_size, step, cfg.seed), rank, world)
        rollout = sample(accelerator.unwrap_model(student), [prompts[i] for i in rows],
                         max_new_tokens=cfg.max_new_tokens, eos_id=tokenizer.eos_token_id,
                         pad_id=tokenizer.pad_token_id, generator=generator, temperature=cfg.temperature,
                         top_p=cfg.top_p, top_k=cfg.top_k)
        rollout = rollout.rows(slice(None))  # trim to the longest completion
        micro = [rollout.rows(slice(i, i + cfg.micro_batch_size))
                 for i in range(0, len(rows), cfg.micro_batch_size)]
        lp_teacher = [score_under(teacher, m, frozen_scorer) for m in micro]
        lp_base = [score_under(base, m, frozen_scorer) if base is not None else torch.zeros_like(lp_teacher[j])
                   for j, m in enumerate(micro)]
        lp_old = [score_under(accelerator.unwrap_model(student), m) for m in micro] if cfg.ppo_epochs > 1 else None
        n_local = float(rollout.completion_mask.sum())
        n_global = float(accelerator.reduce(torch.tensor(n_local, device=device), reduction="sum"))
        normaliser = max(n_global, 1.0) / world  # DDP averages gradients over ranks

        student.train()
        stats_sum, entropy_sum = {}, 0.0
        for epoch in range(cfg.ppo_epochs):
            for j, m in enumerate(micro):
                sync = j == len(micro) - 1 or world == 1
                with (contextlib.nullcontext() if sync else accelerator.no_sync(student)):
                    loss_args = dict(reward_scale=cfg.reward_scale, clip_strength=cfg.clip_strength,
                                     clip_mode=cfg.clip_mode, eps_low=cfg.eps_low, eps_high=cfg.eps_high,
                                     num_tokens=normaliser)
                    if expected:
                        with accelerator.autocast():
                            table = completion_logprob_table(student, m)
                        with torch.no_grad():
                            entropy = -(table.exp() * table).sum(-1) * m.completion_mask
                        out = listopd_expected_loss(table, lp_teacher[j], lp_base[j], m.completion_ids,
                                                    m.completion_mask, **loss_args)
                    else:
                        with accelerator.autocast():
                            lp_new, entropy = completion_logprobs(student, m, with_entropy=True)
                        old = lp_old[j] if lp_old is not None else lp_new.detach()
                        out = listopd_loss(lp_new, old, lp_teacher[j], lp_base[j], m.completion_mask,
                                           lp_sampler=m.sampler_logprobs, **loss_args)
                    accelerator.backward(out.loss)
                if epoch == 0 and out.stats.get("tokens"):
                    weight = out.stats["tokens"]
                    for k, v in out.stats.items():
                        if k == "adv_min":
                            stats_sum[k] = min(stats_sum.get(k, math.inf), v)
                        elif k == "adv_max":
                            stats_sum[k] = max(stats_sum.get(k, -math.inf), v)
                        else:
                            stats_sum[k] = stats_sum.get(k, 0.0) + (v if k == "tokens" else v * weight)
                    entropy_sum += float(entropy.sum())
            grad_norm = float(accelerator.clip_grad_norm_(student.parameters(), cfg.grad_clip))
            check_finite(step + 1, loss=out.loss.item(), grad_norm=grad_norm,
                         advantage_max=stats_sum.get("adv_max"))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step += 1

        texts = decode_completions(tokenizer, rollout)
        parsed = [contracts[i].judge(t).ok for i, t in zip(rows, texts)]
        lengths = rollout.completion_mask.sum(1)
        # sums and maxima over all processes: the record and the cliff guard describe the global batch, the
        # same on every rank (a rank-local guard could stop one rank and not the others)
        sum_keys = sorted(k for k in stats_sum if k not in ("adv_min", "adv_max"))
        sums = reduce_numbers(accelerator, [stats_sum[k] for k in sum_keys] + [
            entropy_sum, sum(parsed), len(parsed), float(lengths.sum()), float(rollout.ended.sum())])
        maxes = reduce_numbers(accelerator, [stats_sum.get("adv_max", -math.inf), -stats_sum.get("adv_min", math.inf),
                                             float(lengths.max())], reduction="max")
        stats_sum = {**dict(zip(sum_keys, sums)), "adv_max": maxes[0], "adv_min": -maxes[1]}
        entropy_sum, n_parsed, n_rows, length_sum, n_ended = sums[len(sum_keys):]
        tokens = max(stats_sum.get("tokens", 0.0), 1.0)
        # token-weighted means over micro-batches (adv_std: the mean of per-micro-batch stds)
        record = {"step": step, "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                  **{k: (v if k in ("adv_min", "adv_max") else v / tokens)
                     for k, v in stats_sum.items() if k != "tokens"},
                  "entropy": entropy_sum / tokens, "completion_len_mean": length_sum / n_rows,
                  "completion_len_max": maxes[2], "eos_rate": n_ended / n_rows,
                  "truncated_rate": 1.0 - n_ended / n_rows,
                  "rollout_parse_rate": n_parsed / n_rows, "elapsed_s": round(time.time() - t0, 2)}
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
            record.update(validate())
        log.write(record)
        bar.update(1)
        bar.set_postfix(parse=f"{record['rollout_parse_rate']:.2f}", kl=f"{record['teacher_kl_k3']:.3f}")

        if cfg.guard_margin is not None:
            guard["history"] = (guard["history"] + [record["rollout_parse_rate"]])[-cfg.guard_window:]
            if len(guard["history"]) == cfg.guard_window:
                level = sum(guard["history"]) / cfg.guard_window
                guard["best"] = level if guard["best"] is None else max(guard["best"], level)
                if level < guard["best"] - cfg.guard_margin:
                    stop_reason = (f"cliff guard: rollout parse rate {level:.3f} fell more than "
                                   f"{cfg.guard_margin} below its best {guard['best']:.3f} at step {step}")
                    guard["stopped"] = stop_reason
                    save(step)
                    break
        if step % cfg.save_every == 0:
            save(step)
    bar.close()
    if step % cfg.save_every and stop_reason == "steps":
        save(step)
    final = validate()
    summary = {"steps": step, "stop_reason": stop_reason, **cliff, **final,
               "ranks_identical": ranks_agree(accelerator, student), "world_size": world}
    if is_main:
        export_model(accelerator.unwrap_model(student), tokenizer, run_dir / "final")
        atomic_write_json(run_dir / "summary.json", summary)
    log.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()  # destroys the process group: a rank exiting without it can abort (gloo)
    if stop_reason.startswith("cliff guard") and not quiet:
        print(stop_reason)
    return summary
