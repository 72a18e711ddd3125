"""The ListOPD trainer: on-policy distillation with reward extrapolation λ and clip strength c
(docs/method.md#the-objective). Options: train/opd_config.py.

One step (`listopd_step`):
  1. sample one completion per prompt from the student (KV cache; temperature 1, top-p 1, no top-k);
  2. score the sampled tokens under the teacher and the base π_B (default: a frozen copy of the warm start
     the student starts from; `base` may name any other model folder), and under the rollout student
     (π_old) when several optimiser steps reuse a rollout;
  3. compute advantages and the loss with `listopd.core.loss` only, over micro-batches whose loss is
     normalised by the global completion-token count (gradient accumulation = one big batch); with
     `estimator: expected`, `listopd_expected_loss` applies the same loss to every vocabulary entry at each
     sampled prefix, weighted by the student's probability (docs/method.md#estimators);
  4. AdamW step with gradient clipping; `ppo_epochs` > 1 reuses the rollout (then the PPO ratio matters).
With `rollout_ahead: 1` steps 1 and 2 are done ahead by a worker process (sampling from the previous step's
weights, then the frozen models' scoring) while the trainer updates (train/rollout_ahead.py); the loss then
weights the stale tokens (`rollout_is_cap`).
With the sampled estimator only the [batch, completion] log-probs of the sampled tokens are kept;
[batch, completion, vocab] logits exist inside one micro-batch's forward only. The expected estimator keeps
[micro-batch, completion, vocab] log-prob tables of the teacher and the base for one step.

Logged per step (`RUN/metrics.jsonl`, train/opd_stats.py): teacher KL on the samples (k1, k3), advantage
mean/std/min/max, PPO clip fraction, fraction of tokens where the c-cap binds, entropy, completion length, EOS
and truncation rates, the strict parse rate of the rollouts; every `eval_every` steps the validation strict
parse rate and NDCG@1 (parsed and strict).

The cliff (train/cliff.py): with the clip mode `teacher_ratio` and (p, b) given (`cliff_p`, `cliff_b`, or a
calibration file), λ ≥ λ*(p, b, c) is refused unless `allow_above_cliff`; with `guard_margin` set, a run whose
rollout parse rate falls that far below its best checkpoints and stops.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from listopd.core.loss import listopd_expected_loss, listopd_loss
from listopd.task.contract import RankingContract
from listopd.task.tasks import read_tasks
from listopd.train import checkpoint as ckpt
from listopd.train.cliff import ParseRateGuard, cliff_check
from listopd.train.data_order import batch_indices, shard
from listopd.train.evaluation import check_prompts_fit, decode_completions
from listopd.train.models import (apply_lora, check_model_vocabulary, check_same_vocabulary, load_model,
                                  load_tokenizer, model_vocab_size)
from listopd.train.opd_config import OPDConfig
from listopd.train.opd_stats import accumulate, step_record
from listopd.train.optim import lr_factor, make_optimizer
from listopd.train.keeping import KeepingMasks
from listopd.train.frozen_pool import FrozenPool
from listopd.train.prompt_cache import PromptCache
from listopd.train.role_mass import RoleProbe
from listopd.train.rollout import (completion_logprob_table, completion_logprobs, micro_batches, sample,
                                   warn_if_truncated_sampling)
from listopd.train.rollout_ahead import Scored, Scoring
from listopd.train import scaffold
from listopd.train.scaffold import TrainingRun, check_finite
from listopd.util.config import field_defaults, require


@dataclass
class Scorers:
    """The frozen models a ListOPD step scores its rollouts under (base None at λ = 1: π_B cancels), their
    prompt KV caches (None: whole-sequence forwards), and the contract-keeping masks when extrapolation is
    contract-aware."""
    teacher: torch.nn.Module
    base: torch.nn.Module | None
    keeping: KeepingMasks | None = None
    teacher_cache: PromptCache | None = None
    base_cache: PromptCache | None = None
    cache_start: dict = field(default_factory=dict)  # each cache's counts when this run began (a sweep shares them)

    @classmethod
    def build(cls, cfg: OPDConfig, run: TrainingRun, pool: FrozenPool, keeping: KeepingMasks | None) -> "Scorers":
        dtype = torch.bfloat16 if cfg.bf16 else None  # frozen scorers need no float32 master weights
        teacher = pool.model(cfg.teacher, dtype, run.device)
        base = pool.model(cfg.base or cfg.student, dtype, run.device) if cfg.reward_scale != 1.0 else None
        caches = {"teacher": pool.cache(teacher, cfg.prompt_cache_mb), "base": pool.cache(base, cfg.prompt_cache_mb)}
        return cls(teacher, base, keeping, caches["teacher"], caches["base"],
                   {name: c.stats() for name, c in caches.items() if c})

    def cache_stats(self) -> dict:
        """Per prompt cache: prompts and MiB held, and this run's hits and misses."""
        out = {}
        for name, c in (("teacher", self.teacher_cache), ("base", self.base_cache)):
            if c:
                now, start = c.stats(), self.cache_start[name]
                out[name] = {**now, "hits": now["hits"] - start["hits"], "misses": now["misses"] - start["misses"]}
        return out


def listopd_step(cfg: OPDConfig, run: TrainingRun, scorers: Scorers, prompts: list[list[int]], step: int,
                 generator: torch.Generator, eos_id: int, pad_id: int, contracts=None, drawn: Scored | None = None):
    """One ListOPD step on a batch of prompts (and their contracts, for contract-aware extrapolation):
    sample → score → loss → update; `drawn`: the batch's rollout drawn and scored by the rollout_ahead worker,
    instead of steps 1 and 2. Returns (rollout, summed loss statistics, summed entropy, gradient norm)."""
    student, accelerator = run.model, run.accelerator
    # 1. sample from the student, then split into micro-batches (each trimmed to its longest completion)
    if drawn:
        rollout = drawn.rollout
    else:
        with run.sampling() as model:
            rollout = sample(model, prompts, max_new_tokens=cfg.max_new_tokens, eos_id=eos_id, pad_id=pad_id,
                             generator=generator, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)
    rollout = rollout.rows(slice(None))
    micro = micro_batches(rollout, cfg.micro_batch_size)
    # 2. score: teacher and base (sampled tokens, or whole log-prob tables for the expected estimator), π_old
    frozen_scorer = completion_logprob_table if cfg.estimator == "expected" else completion_logprobs
    lp_teacher = drawn.teacher if drawn else [_score(run, scorers.teacher, m, frozen_scorer, scorers.teacher_cache)
                                              for m in micro]
    lp_base = drawn.base if drawn and drawn.base is not None else [
        _score(run, scorers.base, m, frozen_scorer, scorers.base_cache) if scorers.base is not None
        else torch.zeros_like(lp_teacher[j]) for j, m in enumerate(micro)]
    lp_old = [_score(run, run.unwrapped, m) for m in micro] if cfg.ppo_epochs > 1 else None
    keep = [scorers.keeping(contracts[i:i + cfg.micro_batch_size], m.completion_ids, m.completion_mask,
                            full=cfg.estimator == "expected")
            for i, m in zip(range(0, len(prompts), cfg.micro_batch_size), micro)] if scorers.keeping else None
    n_local = float(rollout.completion_mask.sum())
    n_global = float(accelerator.reduce(torch.tensor(n_local, device=run.device), reduction="sum"))
    normaliser = max(n_global, 1.0) / run.world  # DDP averages gradients over ranks
    # 3. loss and backward per micro-batch (gradients accumulate; DDP syncs on the last one), 4. update
    student.train()
    stats_sum, entropy_sum = {}, 0.0
    for epoch in range(cfg.ppo_epochs):
        for j, m in enumerate(micro):
            sync = j == len(micro) - 1 or run.world == 1
            with (contextlib.nullcontext() if sync else accelerator.no_sync(student)):
                out, entropy = _micro_batch_loss(cfg, run, m, lp_teacher[j], lp_base[j],
                                                 lp_old[j] if lp_old is not None else None, normaliser,
                                                 keep[j] if keep is not None else None)
                accelerator.backward(out.loss)
            if epoch == 0 and out.stats.get("tokens"):
                accumulate(stats_sum, out.stats)
                entropy_sum += float(entropy.sum())
        grad_norm = float(accelerator.clip_grad_norm_(student.parameters(), cfg.grad_clip))
        check_finite(step + 1, loss=out.loss.item(), grad_norm=grad_norm, advantage_max=stats_sum.get("adv_max"))
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    return rollout, stats_sum, entropy_sum, grad_norm


def _score(run: TrainingRun, model, rollout, scorer=completion_logprobs, prompt_cache=None):
    with torch.no_grad(), run.accelerator.autocast():
        return scorer(model, rollout, prompt_cache=prompt_cache)


def _micro_batch_loss(cfg: OPDConfig, run: TrainingRun, m, lp_teacher, lp_base, lp_old, normaliser: float,
                      keep=None):
    """(LossOutput, per-token entropy) of one micro-batch under the current student."""
    loss_args = dict(reward_scale=cfg.reward_scale, clip_strength=cfg.clip_strength, clip_mode=cfg.clip_mode,
                     eps_low=cfg.eps_low, eps_high=cfg.eps_high, num_tokens=normaliser, keep=keep,
                     rollout_is_cap=cfg.rollout_is_cap if cfg.rollout_ahead else None)  # stale rollouts
    if cfg.estimator == "expected":
        with run.accelerator.autocast():
            table = completion_logprob_table(run.model, m)
        with torch.no_grad():
            entropy = -(table.exp() * table).sum(-1) * m.completion_mask
        return listopd_expected_loss(table, lp_teacher, lp_base, m.completion_ids, m.completion_mask,
                                     lp_sampler=m.sampler_logprobs, **loss_args), entropy
    with run.accelerator.autocast():
        lp_new, entropy = completion_logprobs(run.model, m, with_entropy=True)
    old = lp_old if lp_old is not None else lp_new.detach()
    return listopd_loss(lp_new, old, lp_teacher, lp_base, m.completion_mask, lp_sampler=m.sampler_logprobs,
                        **loss_args), entropy


def trainer_threads(cfg: OPDConfig) -> int:
    """The trainer's torch threads. threads 0 is torch's default, one per core; with rollout_ahead the worker
    process runs sampler_threads of its own beside it, so the trainer takes the cores left (at least one)
    instead of oversubscribing the machine (2 + 1 threads on 2 cores ran slower than synchronous training)."""
    if cfg.threads or not cfg.rollout_ahead:
        return cfg.threads
    return max(1, scaffold.DEFAULT_THREADS - cfg.sampler_threads)


def run_opd(cfg: OPDConfig, *, quiet: bool = False, pool: FrozenPool | None = None) -> dict:
    """Train a ListOPD run into cfg.out (resuming its last checkpoint); returns its summary. `pool`: frozen
    models (and prompt caches) shared with other runs of this process (a sweep's)."""
    # setup
    cfg.validate()  # a config built in Python has not been through load_config
    cliff = cliff_check(cfg)
    warn_if_truncated_sampling(cfg.temperature, cfg.top_p, cfg.top_k)
    run = TrainingRun(cfg.out, seed=cfg.seed, threads=trainer_threads(cfg), bf16=cfg.bf16, batch_size=cfg.batch_size,
                      bf16_sampling=cfg.bf16_sampling)
    require(not cfg.rollout_ahead or run.world == 1, "rollout_ahead needs a single process (its worker is a "
            "second process beside it); under accelerate launch use rollout_ahead 0")
    tokenizer = load_tokenizer(cfg.student)
    check_same_vocabulary(tokenizer, load_tokenizer(cfg.teacher), load_tokenizer(cfg.base) if cfg.base else None)
    tasks = read_tasks(cfg.tasks)
    val = read_tasks(cfg.val_tasks)[:cfg.eval_tasks] if cfg.val_tasks else []
    contracts = [RankingContract.for_task(t) for t in tasks]
    student = load_model(cfg.student)
    own_pool, pool = pool is None, pool or FrozenPool()
    scorers = Scorers.build(cfg, run, pool,
                            keeping=KeepingMasks(tokenizer, model_vocab_size(student)) if cfg.contract_aware else None)
    for name, model in (("student", student), ("teacher", scorers.teacher), ("base", scorers.base)):
        if model is not None:
            check_model_vocabulary(model, tokenizer, name=name)
    models = (student, scorers.teacher, scorers.base)
    prompts = check_prompts_fit(models, tokenizer, tasks, source=cfg.tasks, room=cfg.max_new_tokens)
    check_prompts_fit(models, tokenizer, val, source=cfg.val_tasks, room=cfg.max_new_tokens)
    probe = RoleProbe(tokenizer, val[:cfg.role_probe_tasks], width=model_vocab_size(student)) \
        if cfg.role_probe_tasks and val else None
    if cfg.lora_r:
        student = apply_lora(student, cfg.lora_r, cfg.lora_alpha)
    optimizer = make_optimizer(student, cfg.lr, cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.schedule))
    generator = torch.Generator(device=run.device).manual_seed(cfg.seed * 1000 + run.rank)  # multinomial: on device
    start_step, trainer_state, rng = run.resume(student, optimizer, scheduler, generator,
                                                config=dataclasses.asdict(cfg),
                                                path_keys=("student", "teacher", "base", "tasks", "val_tasks",
                                                           "calibration"), defaults=field_defaults(OPDConfig))
    guard = ParseRateGuard(cfg.guard_margin, cfg.guard_window, trainer_state.get("guard"))
    if len(rng.get("generators") or []) == run.world:  # each rank's own sampling stream (same world size)
        generator.set_state(rng["generators"][run.rank].clone())
    # config.json: the options as configured; what the cliff check derived from them (p, b from a calibration
    # file, λ*) under a key of its own, so a re-run compares the same options
    run.start(student, optimizer, scheduler, config={**dataclasses.asdict(cfg), "cliff_check": cliff},
              start_step=start_step)

    def save(step: int) -> None:
        # one row per rank; cloned (a row view keeps a storage offset, which Generator.set_state mis-reads)
        states = [s.clone() for s in run.accelerator.gather(generator.get_state().to(run.device)[None]).cpu()] \
            if run.world > 1 else None
        best = guard.best_step  # keep the checkpoint the guard would fall back to
        in_flight = {"rollout_ahead": ahead.state()} if ahead else {}  # the next step's rollout, drawn already
        run.save(step, rng={**ckpt.rng_state(generator), "generators": states, **in_flight},
                 trainer_state={"guard": guard.state},
                 protect=None if best is None else ckpt.step_at_or_before(run.run_dir, best, verified=False))

    def batch(step: int) -> list[int]:
        return shard(batch_indices(len(tasks), cfg.batch_size, step, cfg.seed), run.rank, run.world)

    # train
    bar = tqdm(total=cfg.steps, initial=start_step, desc=f"opd λ={cfg.reward_scale:g}",
               disable=quiet or not run.is_main, dynamic_ncols=True)
    step, t0 = start_step, time.time()
    stop_reason = guard.stopped or "steps"  # a run the guard stopped stays stopped when re-run
    ahead = pool.rollout_worker(  # the pool's: a sweep's runs share one worker and its prompt caches
        run.unwrapped, scorers.teacher, scorers.base, seed=cfg.seed * 1000, threads=cfg.sampler_threads,
        scoring=Scoring(cfg.micro_batch_size, cfg.estimator == "expected", cfg.prompt_cache_mb, cfg.bf16),
        max_new_tokens=cfg.max_new_tokens, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
        temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
    ) if cfg.rollout_ahead and step < cfg.steps and stop_reason == "steps" else None
    if ahead and not ahead.restore(rng.get("rollout_ahead")):  # a new run draws its first rollout now
        ahead.submit(run.unwrapped, [prompts[i] for i in batch(step)])
    try:
        while step < cfg.steps and stop_reason == "steps":
            rows = batch(step)
            drawn = ahead.take() if ahead else None  # drawn from the previous step's weights, and scored
            if ahead and step + 1 < cfg.steps:
                ahead.submit(run.unwrapped, [prompts[i] for i in batch(step + 1)])  # drawn while this step updates
            rollout, stats_sum, entropy_sum, grad_norm = listopd_step(
                cfg, run, scorers, [prompts[i] for i in rows], step, generator, tokenizer.eos_token_id,
                tokenizer.pad_token_id, contracts=[contracts[i] for i in rows], drawn=drawn)
            scheduler.step()
            step += 1
            parsed = [contracts[i].check(t).ok for i, t in zip(rows, decode_completions(tokenizer, rollout))]
            record = step_record(run.accelerator, step, stats_sum=stats_sum, entropy_sum=entropy_sum, parsed=parsed,
                                 rollout=rollout, lr=scheduler.get_last_lr()[0], grad_norm=grad_norm,
                                 elapsed_s=round(time.time() - t0, 2))
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                record.update(run.validate(tokenizer, val, max_new_tokens=cfg.max_new_tokens,
                                           temperature=cfg.eval_temperature))
                record.update(probe.measure(run.unwrapped) if probe else {})
            run.log(record)
            bar.update(1)
            bar.set_postfix(parse=f"{record['rollout_parse_rate']:.2f}", kl=f"{record['teacher_kl_k3']:.3f}")
            if guard.update(step, record["rollout_parse_rate"]):
                stop_reason = guard.stopped
                save(step)
                break
            if step % cfg.save_every == 0:
                save(step)
    finally:
        if ahead:
            ahead.release()  # idle: its core is free for the final evaluation
        if own_pool:
            pool.close()
    bar.close()
    # save and clean up
    if step % cfg.save_every and stop_reason == "steps":
        save(step)
    stopped = stop_reason.startswith("cliff guard")
    # a stopped run exports the checkpoint before the drop (the newest at or before the guard's best step)
    restored = {"final_from_step": run.restore_weights(guard.best_step)} if stopped else {}
    final = run.validate(tokenizer, val, max_new_tokens=cfg.max_new_tokens, temperature=cfg.eval_temperature)
    final.update(probe.measure(run.unwrapped) if probe else {})
    pipeline = {"rollout_ahead": {"wait_s": round(ahead.wait_s, 2)}} if ahead else {}  # the trainer's waits
    summary = run.finish(tokenizer, {"steps": step, "stop_reason": stop_reason, **restored, **cliff, **final,
                                        "prompt_cache": scorers.cache_stats(), **pipeline})
    if stopped and not quiet:
        print(stop_reason + (f"; final/ is step {restored['final_from_step']}'s checkpoint"
                             if restored["final_from_step"] is not None else "; no checkpoint before the drop"))
    return summary
