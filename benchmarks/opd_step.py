"""Benchmark: one ListOPD step against TRL's on-policy distillation trainers, and against this machine's
matmul throughput.

    pip install -e '.[bench]'           # trl, only the benchmark needs it (`make bench` does both)
    python benchmarks/opd_step.py       # -> benchmarks/results/opd_step.{json,md}, table on stdout

The work (the same on every side): 8 prompts of the synthetic fashion task (291–322 tokens, tokenizer trained
with listopd.task.tokenizer), exactly 64 sampled tokens each (EOS never ends a row: ListOPD samples with no stop
id, TRL with `min_new_tokens=64`), one optimiser step on the 8 completions (AdamW, betas 0.9/0.95, lr 1e-5,
grad clip 1.0). Models are random-init Qwen3 presets (weights do not change the time):

    tiny:  student tiny-student (~1.3M at this vocabulary), teacher tiny-teacher (~4.6M)
    small: student tiny-teacher (~4.6M),                     teacher small-teacher (~28.8M)

Sides, each in its own subprocess (separate peak memory, separate imports):

    listopd, listopd-bf16     the ListOPD step as `listopd.train.opd.run_opd` runs it (same calls, same order):
                              rollout.sample (KV cache) -> completion_logprobs under the teacher and the base
                              (λ = 1.5, so the base is scored: work TRL does not do), from their prompt caches
                              (the trainer's default; the 8 prompts repeat, so after the warm-up step every
                              prompt is a hit, where a real run's first pass over its data misses) -> student
                              log-probs with entropy -> listopd_loss -> backward -> clip -> AdamW. `-bf16` is
                              the trainer's bf16 option (autocast, frozen scorers held in bfloat16).
    listopd-bf16-sample32     bf16 with `bf16_sampling: false`: the rollout is sampled in float32 from the master
                              weights (no autocast), scoring and update as listopd-bf16.
    listopd-ahead             the same step with `rollout_ahead: 1` (train/rollout_ahead.py): a worker process
                              draws the next rollout and scores it under teacher and base while this process
                              runs the update; each process gets half the threads. Step = one take of a
                              rollout to the next; generate/teacher/base are the worker's own times (overlapped),
                              "wait" the trainer's wait for it; CPU time and peak RSS count both processes.
    listopd-ahead-bf16        listopd-ahead with bf16: the worker samples in float32 (in every bf16 pipelined run:
                              the student's copy reaches it without accelerate's autocast forward) and scores
                              under bfloat16 teacher and base; the update under autocast.
    trl-distill[-bf16]        trl.DistillationTrainer, beta = 1 (reverse KL), fully on-policy.
    trl-gkd[-bf16]            trl.experimental.gkd.GKDTrainer, lmbda = 1 (always on-policy), beta = 1 (reverse KL).
                              Both TRL sides: use_cpu, gradient checkpointing off, dataloader workers 0, no logging
                              or saving inside the timed steps, the teacher in bfloat16 for the -bf16 variant.

Timing: median over `--steps` steps after `--warmup` steps, wall time and the process's CPU time (the steadier
number when other jobs share the cores; on such a machine use `--threads 1`, two threads fighting another job
for two cores ran 10-20x slower). ListOPD phases are timed inside the step (run_opd's per-step bookkeeping —
decoding, contract checks, the metrics log — is left out, as TRL's logging is); TRL's
step is timed by a TrainerCallback from on_step_begin to on_step_end (generation, loss, backward, optimiser;
the collation of the batch is outside, in TRL's favour), its generation by wrapping `model.generate` and its
teacher by wrapping the teacher's forward. Peak memory is the process's RSS high-water mark (getrusage),
reported with the RSS right before the first step.

FLOP convention (stated in the output): a forward costs 2·N FLOPs per token and a training step 6·N, with
N = non-embedding parameters plus the LM head; the body counts every prompt and completion token, the LM head
only the completion positions (that is all the step needs) — except teacher and base, which run over the
completion positions only (their prompts' keys and values come from the prompt cache, filled in the warm-up
step); attention's score/value products are not counted, so the fractions are lower bounds. Each phase's FLOP per CPU-second is compared with that of the best fp32
(and bf16) GEMM this machine ran at the same thread count (`matmul` rows of the result).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCH, NEW_TOKENS, LR, REWARD_SCALE, CLIP = 8, 64, 1e-5, 1.5, 5.0
PAIRS = {"tiny": ("tiny-student", "tiny-teacher"), "small": ("tiny-teacher", "small-teacher")}
SEEDS = {"tiny-student": 1, "tiny-teacher": 2, "small-teacher": 3}
SIDES = ("listopd", "listopd-bf16", "listopd-bf16-sample32", "listopd-ahead", "listopd-ahead-bf16",
         "trl-distill", "trl-distill-bf16", "trl-gkd", "trl-gkd-bf16")


def is_bf16(side: str) -> bool:
    return "-bf16" in side


def samples_in_fp32(side: str) -> bool:
    """The bf16 sides that sample in float32 (the trainer's `bf16_sampling: false`)."""
    return side.endswith("-sample32")


# ------------------------------------------------------------------------------------------ workspace

def build_workspace(work: Path) -> None:
    """Tasks, tokenizer, the 8 prompts and one folder per preset (random init, saved with the tokenizer)."""
    from listopd.task.data.synth import make_synth_tasks
    from listopd.task.prompts import encode_prompt, render_messages, target_text
    from listopd.task.tokenizer import task_texts, train_tokenizer
    from listopd.train.models import build_model

    tasks = make_synth_tasks(n_users=400)
    tok = train_tokenizer(task_texts(tasks), vocab_size=2048)
    chosen = [t for t in tasks if t.split == "train"][:BATCH]
    prompts = [encode_prompt(t, tok) for t in chosen]
    rows = [{"messages": render_messages(t), "target": target_text(t)} for t in chosen]
    (work / "prompts.json").write_text(json.dumps({"ids": prompts, "rows": rows}))
    for preset, seed in SEEDS.items():
        folder = work / preset
        build_model(preset, tok, seed=seed).save_pretrained(str(folder))
        tok.save_pretrained(str(folder))


def load_prompts(work: Path) -> dict:
    return json.loads((work / "prompts.json").read_text())


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): on a busy machine the CPU time is the steadier one."""
    return time.perf_counter(), time.process_time()


def medians(phases: dict[str, list[tuple[float, float]]], warmup: int) -> dict:
    """Median wall and CPU seconds per phase over the timed steps, and the raw step times."""
    timed = {k: v[warmup:] for k, v in phases.items()}
    return {"phases": {k: statistics.median(w for w, _ in v) for k, v in timed.items()},
            "cpu_phases": {k: statistics.median(c for _, c in v) for k, v in timed.items()},
            "step_times": [w for w, _ in timed["step"]], "step_cpu_times": [c for _, c in timed["step"]]}


def model_flops_params(folder: Path) -> dict:
    """N_body (non-embedding, non-head parameters) and N_head (the LM head) from config.json."""
    from listopd.train.models import Preset

    cfg = json.loads((folder / "config.json").read_text())
    p = Preset(hidden_size=cfg["hidden_size"], num_hidden_layers=cfg["num_hidden_layers"],
               num_attention_heads=cfg["num_attention_heads"], num_key_value_heads=cfg["num_key_value_heads"],
               head_dim=cfg["head_dim"], intermediate_size=cfg["intermediate_size"])
    head = cfg["vocab_size"] * cfg["hidden_size"]
    total = p.n_parameters(cfg["vocab_size"])  # tied embeddings counted once
    return {"n_total": total, "n_body": total - head, "n_head": head}


# ------------------------------------------------------------------------------------------ workers

def worker_matmul(args) -> dict:
    """fp32 (and, when a bf16 side runs, bf16) GEMM throughput at the models' layer shapes and one big square
    (a CPU without native bf16 takes minutes over the bf16 GEMMs)."""
    import torch

    torch.set_num_threads(args.threads)
    tokens = BATCH * 386  # about B·(P+T)
    shapes = {"big square 2048³": (2048, 2048, 2048)}
    for name in ("tiny-teacher", "small-teacher"):
        cfg = json.loads((args.work / name / "config.json").read_text())
        h, inter, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
        shapes[f"{name} MLP up [{tokens}x{h}]·[{h}x{inter}]"] = (tokens, h, inter)
        shapes[f"{name} MLP down [{tokens}x{inter}]·[{inter}x{h}]"] = (tokens, inter, h)
        shapes[f"{name} LM head [{BATCH * NEW_TOKENS}x{h}]·[{h}x{v}]"] = (BATCH * NEW_TOKENS, h, v)
    out = []
    for name, (m, k, n) in shapes.items():
        for dtype in (torch.float32, torch.bfloat16) if any(map(is_bf16, args.sides)) else (torch.float32,):
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            reps = max(1, int(2e9 / (2 * m * k * n)))
            for _ in range(2):
                a @ b
            times = []
            for _ in range(5):
                t = clock()
                for _ in range(reps):
                    a @ b
                end = clock()
                times.append(((end[0] - t[0]) / reps, (end[1] - t[1]) / reps))
            flop = 2 * m * k * n
            out.append({"shape": name, "dtype": str(dtype).replace("torch.", ""),
                        "gflops": flop / statistics.median(w for w, _ in times) / 1e9,
                        "gflops_per_cpu_s": flop / statistics.median(c for _, c in times) / 1e9})
    return {"matmul": out}


def update(accelerator, student, optimizer, rollout, lp_teacher, lp_base, **loss_options) -> float:
    """The ListOPD update on one rollout (student log-probs with entropy -> listopd_loss -> backward -> clip ->
    AdamW); returns the completion-token count."""
    from listopd.core.loss import listopd_loss
    from listopd.train.rollout import completion_logprobs

    n_tokens = float(rollout.completion_mask.sum())
    student.train()
    with accelerator.autocast():
        lp_new, _ = completion_logprobs(student, rollout, with_entropy=True)
    out = listopd_loss(lp_new, lp_new.detach(), lp_teacher, lp_base, rollout.completion_mask,
                       reward_scale=REWARD_SCALE, clip_strength=CLIP, lp_sampler=rollout.sampler_logprobs,
                       num_tokens=n_tokens, **loss_options)
    accelerator.backward(out.loss)
    accelerator.clip_grad_norm_(student.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    float(out.loss)
    return n_tokens


def worker_listopd(args) -> dict:
    """The ListOPD step, phase by phase, exactly as `run_opd` runs it (batch = micro-batch = 8)."""
    import torch

    from listopd.train.models import load_frozen, load_model, load_tokenizer
    from listopd.train.prompt_cache import PromptCache
    from listopd.train.rollout import completion_logprobs, sample
    from listopd.train.distributed import make_accelerator, own_forward
    from listopd.train.optim import make_optimizer

    if args.side.startswith("listopd-ahead"):
        return worker_listopd_ahead(args)

    torch.set_num_threads(args.threads)
    bf16 = is_bf16(args.side)
    student_dir, teacher_dir = (args.work / m for m in PAIRS[args.pair])
    accelerator = make_accelerator(bf16)
    tokenizer = load_tokenizer(student_dir)
    student = load_model(student_dir)
    frozen_dtype = torch.bfloat16 if bf16 else None
    teacher = load_frozen(teacher_dir, frozen_dtype)
    base = load_frozen(student_dir, frozen_dtype)
    optimizer = make_optimizer(student, LR, 0.0)
    student, optimizer = accelerator.prepare(student, optimizer)
    generator = torch.Generator().manual_seed(0)
    prompts = load_prompts(args.work)["ids"]
    NO_STOP = -1  # no token id is -1: every row samples exactly NEW_TOKENS tokens

    caches = {id(m): PromptCache(m, 4096) for m in (teacher, base)}

    def score(model, roll):
        with torch.no_grad(), accelerator.autocast():
            return completion_logprobs(model, roll, prompt_cache=caches[id(model)])

    rss_before = rss_mib()
    phases = {k: [] for k in ("generate", "teacher", "base", "update", "step")}
    for _ in range(args.warmup + args.steps):
        t0 = clock()
        sampler = accelerator.unwrap_model(student)
        with own_forward(sampler) if samples_in_fp32(args.side) else contextlib.nullcontext(sampler) as sampler:
            rollout = sample(sampler, prompts, max_new_tokens=NEW_TOKENS, eos_id=NO_STOP,
                             pad_id=tokenizer.pad_token_id, generator=generator)
        rollout = rollout.rows(slice(None))
        t1 = clock()
        lp_teacher = score(teacher, rollout)
        t2 = clock()
        lp_base = score(base, rollout)
        t3 = clock()
        n_tokens = update(accelerator, student, optimizer, rollout, lp_teacher, lp_base)
        t4 = clock()
        for k, (a, b) in zip(phases, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t0, t4))):
            phases[k].append((b[0] - a[0], b[1] - a[1]))
    assert rollout.completion_mask.shape == (BATCH, NEW_TOKENS) and n_tokens == BATCH * NEW_TOKENS
    return {**medians(phases, args.warmup), "completion_tokens": BATCH * NEW_TOKENS,
            "prompt_tokens": sum(len(p) for p in prompts), "prompt_width": max(len(p) for p in prompts),
            "rss_before_mib": rss_before, "peak_rss_mib": peak_rss_mib()}


def worker_listopd_ahead(args) -> dict:
    """The pipelined step (rollout_ahead 1; fp32, or bf16: the worker samples in float32 either way, scores
    under bfloat16 teacher and base, this process updates under autocast)."""
    import torch

    from listopd.train.models import load_frozen, load_model, load_tokenizer
    from listopd.train.rollout_ahead import RolloutAhead, Scoring
    from listopd.train.distributed import make_accelerator
    from listopd.train.optim import make_optimizer

    threads = max(1, args.threads // 2)
    torch.set_num_threads(threads)
    bf16 = is_bf16(args.side)
    student_dir, teacher_dir = (args.work / m for m in PAIRS[args.pair])
    accelerator = make_accelerator(bf16)
    tokenizer = load_tokenizer(student_dir)
    student = load_model(student_dir)
    frozen_dtype = torch.bfloat16 if bf16 else None
    teacher, base = load_frozen(teacher_dir, frozen_dtype), load_frozen(student_dir, frozen_dtype)
    optimizer = make_optimizer(student, LR, 0.0)
    student, optimizer = accelerator.prepare(student, optimizer)
    prompts = load_prompts(args.work)["ids"]
    ahead = RolloutAhead(accelerator.unwrap_model(student), teacher, base, seed=0, threads=threads,
                         scoring=Scoring(BATCH, tables=False, prompt_cache_mb=4096, bf16=bf16),
                         max_new_tokens=NEW_TOKENS, eos_id=-1, pad_id=tokenizer.pad_token_id)
    clock_ticks = os.sysconf("SC_CLK_TCK")

    def both_clock() -> tuple[float, float]:  # wall, CPU of this process and of the worker
        fields = Path(f"/proc/{ahead._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        wall, cpu = clock()
        return wall, cpu + (int(fields[11]) + int(fields[12])) / clock_ticks  # utime, stime

    rss_before = rss_mib()
    phases = {k: [] for k in ("wait", "update", "step")}
    with ahead:
        ahead.submit(accelerator.unwrap_model(student), prompts)
        for _ in range(args.warmup + args.steps):
            t0 = both_clock()
            drawn = ahead.take()
            t1 = both_clock()
            ahead.submit(accelerator.unwrap_model(student), prompts)  # the next rollout, drawn during the update
            rollout = drawn.rollout.rows(slice(None))
            n_tokens = update(accelerator, student, optimizer, rollout, drawn.teacher[0], drawn.base[0],
                              rollout_is_cap=2.0)
            t2 = both_clock()
            for k, (a, b) in zip(phases, ((t0, t1), (t1, t2), (t0, t2))):
                phases[k].append((b[0] - a[0], b[1] - a[1]))
        ahead.take()
        worker_peak = next(int(line.split()[1]) for line in Path(f"/proc/{ahead._process.pid}/status").read_text()
                           .splitlines() if line.startswith("VmHWM:")) / 1024
    assert rollout.completion_mask.shape == (BATCH, NEW_TOKENS) and n_tokens == BATCH * NEW_TOKENS
    return {**medians(phases, args.warmup), "completion_tokens": BATCH * NEW_TOKENS,
            "prompt_tokens": sum(len(p) for p in prompts), "prompt_width": max(len(p) for p in prompts),
            # both processes' high-water marks (the shared teacher and base pages count in both)
            "rss_before_mib": rss_before, "peak_rss_mib": peak_rss_mib() + worker_peak,
            "threads_per_process": threads}


def worker_trl(args) -> dict:
    """TRL's trainer on the same prompts, models, batch and token count; its step timed by a callback."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from listopd.train.models import load_model, load_tokenizer

    torch.set_num_threads(args.threads)
    bf16 = is_bf16(args.side)
    student_dir, teacher_dir = (args.work / m for m in PAIRS[args.pair])
    tokenizer = load_tokenizer(student_dir)
    tokenizer.padding_side = "left"
    student = load_model(student_dir)
    teacher = load_model(teacher_dir, dtype=torch.bfloat16 if bf16 else None)
    rows = load_prompts(args.work)["rows"]
    n_steps = args.warmup + args.steps
    out_dir = tempfile.mkdtemp(prefix="trl-bench-")
    common = dict(output_dir=out_dir, use_cpu=True, bf16=bf16, fp16=False, gradient_checkpointing=False,
                  per_device_train_batch_size=BATCH, gradient_accumulation_steps=1, max_steps=n_steps,
                  learning_rate=LR, adam_beta1=0.9, adam_beta2=0.95, weight_decay=0.0, max_grad_norm=1.0,
                  lr_scheduler_type="constant", logging_steps=10_000, save_strategy="no", report_to=[],
                  dataloader_num_workers=0, disable_dropout=True, seed=0)

    if args.side.startswith("trl-distill"):
        from trl import DistillationConfig, DistillationTrainer

        config = DistillationConfig(**common, beta=1.0, temperature=1.0, max_completion_length=NEW_TOKENS,
                                    generation_kwargs={"min_new_tokens": NEW_TOKENS})
        data = Dataset.from_list([{"prompt": r["messages"]} for r in rows] * n_steps)
        trainer = DistillationTrainer(model=student, teacher_model=teacher, args=config, train_dataset=data,
                                      processing_class=tokenizer)
        teacher_module = trainer.teacher_model.model  # DistillationTrainer runs the teacher's backbone
    else:
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        config = GKDConfig(**common, lmbda=1.0, beta=1.0, temperature=1.0, max_new_tokens=NEW_TOKENS,
                           max_length=1024)
        data = Dataset.from_list([{"messages": r["messages"] + [{"role": "assistant", "content": r["target"]}]}
                                  for r in rows] * n_steps)
        trainer = GKDTrainer(model=student, teacher_model=teacher, args=config, train_dataset=data,
                             processing_class=tokenizer)
        trainer.generation_config.min_new_tokens = NEW_TOKENS
        teacher_module = trainer.teacher_model

    gen_times, teacher_times, shapes = [], [], []

    def timed(fn, sink, record=False):
        def wrapper(*a, **k):
            t = clock()
            result = fn(*a, **k)
            end = clock()
            sink.append((end[0] - t[0], end[1] - t[1]))
            if record:
                seq = result.sequences if hasattr(result, "sequences") else result
                shapes.append((tuple(k["input_ids"].shape), tuple(seq.shape), int(k["attention_mask"].sum())))
            return result
        return wrapper

    trainer.model.generate = timed(trainer.model.generate, gen_times, record=True)
    teacher_module.forward = timed(teacher_module.forward, teacher_times)

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], None

        def on_step_begin(self, *_, **__):
            self.t0 = clock()

        def on_step_end(self, *_, **__):
            end = clock()
            self.times.append((end[0] - self.t0[0], end[1] - self.t0[1]))

    timer = StepTimer()
    trainer.add_callback(timer)
    rss_before = rss_mib()
    trainer.train()
    (p_shape, s_shape, prompt_tokens) = shapes[-1]
    assert len(timer.times) == n_steps and s_shape[1] - p_shape[1] == NEW_TOKENS, (len(timer.times), shapes[-1])
    # the rest of TRL's step (student forward and backward, loss, clipping, optimiser) is the update
    rest = [(s[0] - g[0] - t[0], s[1] - g[1] - t[1]) for s, g, t in zip(timer.times, gen_times, teacher_times)]
    phases = {"generate": gen_times, "teacher": teacher_times, "update": rest, "step": timer.times}
    return {**medians(phases, args.warmup), "completion_tokens": BATCH * NEW_TOKENS,
            "prompt_tokens": prompt_tokens, "prompt_width": p_shape[1],
            "rss_before_mib": rss_before, "peak_rss_mib": peak_rss_mib()}


# ------------------------------------------------------------------------------------------ driver

def run_worker(args, side: str, pair: str | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", side, "--work", str(args.work), "--threads", str(args.threads),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--sides", *args.sides] + (
        ["--pair", pair] if pair else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": str(args.threads), "TRANSFORMERS_VERBOSITY": "error"}
    t = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"worker {side} {pair or ''} failed (exit {proc.returncode})")
    result = json.loads(lines[-1][len("RESULT "):])
    print(f"  {side:<17} {pair or '':<6} done in {time.time() - t:5.1f} s", flush=True)
    return result


def phase_flops(params_s: dict, params_t: dict, prompt_tokens: int, completion_tokens: int) -> dict:
    """FLOPs of each ListOPD phase (convention in the module docstring)."""
    all_tokens = prompt_tokens + completion_tokens

    def fwd(p):
        return 2 * (p["n_body"] * all_tokens + p["n_head"] * completion_tokens)

    def cached_fwd(p):  # prompt keys and values from the cache: the body runs over the completion positions only
        return 2 * (p["n_body"] + p["n_head"]) * completion_tokens

    return {"generate": fwd(params_s), "teacher": cached_fwd(params_t), "base": cached_fwd(params_s),
            "update": 3 * fwd(params_s)}


def summarise(args, results: dict, matmul: list) -> dict:
    peak = {d: max((m["gflops_per_cpu_s"] for m in matmul if m["dtype"] == d), default=math.nan)
            for d in ("float32", "bfloat16")}
    pairs = {}
    for pair, sides in results.items():
        s_name, t_name = PAIRS[pair]
        ps, pt = model_flops_params(args.work / s_name), model_flops_params(args.work / t_name)
        any_side = next(iter(sides.values()))
        flops = phase_flops(ps, pt, any_side["prompt_tokens"], any_side["completion_tokens"])
        trl = {k: v for k, v in sides.items() if k.startswith("trl")}
        ours = {k: v for k, v in sides.items() if k.startswith("listopd")}
        best_trl = min(trl, key=lambda k: trl[k]["phases"]["step"]) if trl else None
        best_ours = min(ours, key=lambda k: ours[k]["phases"]["step"]) if ours else None
        for name, r in sides.items():
            r["tokens_per_s"] = r["completion_tokens"] / r["phases"]["step"]
            if name.startswith("listopd") and "generate" in r["phases"]:  # the pipelined side overlaps them
                def dtype(phase: str) -> str:
                    fp32 = not is_bf16(name) or (phase == "generate" and samples_in_fp32(name))
                    return "float32" if fp32 else "bfloat16"
                r["gflops_per_s"] = {k: flops[k] / r["phases"][k] / 1e9 for k in flops}
                r["gflops_per_cpu_s"] = {k: flops[k] / r["cpu_phases"][k] / 1e9 for k in flops}
                r["fraction_of_fp32_peak"] = {k: v / peak["float32"] for k, v in r["gflops_per_cpu_s"].items()}
                r["fraction_of_same_dtype_peak"] = {k: v / peak[dtype(k)] for k, v in r["gflops_per_cpu_s"].items()}
        summary = {"student": s_name, "teacher": t_name, "params": {"student": ps, "teacher": pt},
                   "phase_gflop": {k: v / 1e9 for k, v in flops.items()}, "sides": sides,
                   "best_trl": best_trl, "best_listopd": best_ours}
        if best_trl and best_ours:
            summary["speedup_vs_best_trl"] = (sides[best_trl]["phases"]["step"]
                                              / sides[best_ours]["phases"]["step"])
            best_trl_cpu = min(r["cpu_phases"]["step"] for r in trl.values())
            best_ours_cpu = min(r["cpu_phases"]["step"] for r in ours.values())
            summary["speedup_vs_best_trl_cpu_time"] = best_trl_cpu / best_ours_cpu
            summary["peak_rss_ratio_vs_best_trl"] = (sides[best_ours]["peak_rss_mib"]
                                                     / sides[best_trl]["peak_rss_mib"])
        pairs[pair] = summary
    return {"settings": {"batch": BATCH, "new_tokens": NEW_TOKENS, "threads": args.threads,
                         "steps": args.steps, "warmup": args.warmup, "reward_scale": REWARD_SCALE,
                         "load_average": os.getloadavg(), "cpu": cpu_name()},
            "matmul": matmul, "matmul_peak_gflops": peak, "pairs": pairs}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def markdown(summary: dict) -> str:
    s = summary["settings"]
    peak = summary["matmul_peak_gflops"]
    lines = [f"ListOPD step vs TRL — {s['cpu']}, {s['threads']} torch thread(s), batch {s['batch']} × "
             f"{s['new_tokens']} new tokens, median of {s['steps']} steps after {s['warmup']} warm-up; "
             f"load average at the end {', '.join(f'{x:.1f}' for x in s['load_average'])}.", "",
             "Wall seconds (median); CPU seconds of the process in brackets, the steadier number when other "
             "jobs share the cores. TRL's update is its step minus generation and teacher.", "",
             "| pair | side | step s | generate | teacher | base | update | completion tok/s | "
             "peak RSS MiB (before steps) | throughput vs best TRL: wall (CPU) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for pair, p in summary["pairs"].items():
        trl = [r for k, r in p["sides"].items() if k.startswith("trl")]
        best = min((r["phases"]["step"] for r in trl), default=None)
        best_cpu = min((r["cpu_phases"]["step"] for r in trl), default=None)
        for name, r in p["sides"].items():
            ph, cpu = r["phases"], r["cpu_phases"]
            cell = lambda k: f"{ph[k]:.3f} ({cpu[k]:.3f})" if k in ph else "—"  # noqa: E731
            ratio = f"{best / ph['step']:.2f}× ({best_cpu / cpu['step']:.2f}×)" if best else "—"
            lines.append(f"| {pair} | {name} | {cell('step')} | {cell('generate')} | {cell('teacher')} | "
                         f"{cell('base')} | {cell('update')} | {r['tokens_per_s']:.0f} | "
                         f"{r['peak_rss_mib']:.0f} ({r['rss_before_mib']:.0f}) | {ratio} |")
    bf16_peak = "not measured (no bf16 side)" if math.isnan(peak["bfloat16"]) else f"{peak['bfloat16']:.0f}"
    lines += ["", f"Matmul peak measured here: fp32 {peak['float32']:.0f}, bf16 {bf16_peak} GFLOP per "
                  "CPU-second (best of the GEMMs in the JSON). Achieved FLOP/s of the ListOPD phases "
              "(2·N per token forward, 6·N training; N = non-embedding params + LM head; attention products "
              "not counted); the fractions compare FLOP per CPU-second with the GEMM's, so that time the cores "
              "spent on other jobs counts on neither side:", "",
              "| pair | side | phase | GFLOP | GFLOP/s (wall) | GFLOP per CPU-s | % of fp32 GEMM | "
              "% of same-dtype GEMM |",
              "|---|---|---|---|---|---|---|---|"]
    for pair, p in summary["pairs"].items():
        for name, r in p["sides"].items():
            if "gflops_per_s" not in r:
                continue
            for k, v in r["gflops_per_s"].items():
                lines.append(f"| {pair} | {name} | {k} | {p['phase_gflop'][k]:.1f} | {v:.0f} | "
                             f"{r['gflops_per_cpu_s'][k]:.0f} | {100 * r['fraction_of_fp32_peak'][k]:.0f}% | "
                             f"{100 * r['fraction_of_same_dtype_peak'][k]:.0f}% |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    ap.add_argument("--sides", nargs="+", default=list(SIDES), choices=list(SIDES))
    ap.add_argument("--steps", type=int, default=5, help="timed steps per side (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads on every side")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--pair", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        fn = {"matmul": worker_matmul}.get(args.worker) or (
            worker_listopd if args.worker.startswith("listopd") else worker_trl)
        args.side = args.worker
        print("RESULT " + json.dumps(fn(args)), flush=True)
        return 0

    with tempfile.TemporaryDirectory(prefix="opd-bench-") as tmp:
        args.work = Path(tmp)
        print(f"building the workspace in {tmp} ...", flush=True)
        build_workspace(args.work)
        matmul = run_worker(args, "matmul", None)["matmul"]
        results = {pair: {side: run_worker(args, side, pair) for side in args.sides} for pair in args.pairs}
        summary = summarise(args, results, matmul)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "opd_step.json").write_text(json.dumps(summary, indent=1) + "\n")
    table = markdown(summary)
    (args.out / "opd_step.md").write_text(table)
    print(table)
    for pair, p in summary["pairs"].items():
        if "speedup_vs_best_trl" in p:
            print(f"{pair}: best ListOPD ({p['best_listopd']}) is {p['speedup_vs_best_trl']:.2f}× the step "
                  f"throughput of best TRL ({p['best_trl']}) in wall time, "
                  f"{p['speedup_vs_best_trl_cpu_time']:.2f}× in CPU time; "
                  f"peak RSS ratio {p['peak_rss_ratio_vs_best_trl']:.2f}")
    print(f"wrote {args.out / 'opd_step.json'} and {args.out / 'opd_step.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
