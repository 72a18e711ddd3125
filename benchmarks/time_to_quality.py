"""Benchmark: time to quality — training seconds for a λ = 1 run to bring its student's teacher KL down to a
fixed target, listopd (synchronous and pipelined) against TRL's DistillationTrainer, on a trained tiny pair.

    pip install -e '.[bench]'                                      # trl
    python benchmarks/time_to_quality.py --pair runs/round2_explore/pairE --target 0.05
        -> benchmarks/results/time_to_quality.{json,md,png}

The pair folder holds teacher/final, a warm start (--warm, default warm_short/final) and data/train.jsonl and
data/validation.jsonl, as `listopd demo` and configs/experiments/round2_explore/run.sh write them. The recipe is
round 2's, the same on every side: batch 16, lr 3e-4 after 10 warm-up steps then constant, AdamW (betas 0.9 /
0.95, grad clip 1), up to 64 new tokens at temperature 1, one optimiser step per rollout.

    listopd          run_opd, λ = 1, expected estimator (the full-vocabulary reverse-KL gradient on the student's
                     own samples), --listopd-threads threads (default 2, the machine's two cores)
    listopd-ahead    the same with rollout_ahead 1 (two processes, one thread each)
    trl-distill      trl.DistillationTrainer, beta 1 (reverse KL over the vocabulary), always on-policy, use_cpu,
                     two threads (its best CPU setting in benchmarks/opd_step.py)

Quality is measured the same way for every side and outside the timed training: every `--every` steps the
student draws one completion (temperature 1, a fixed seed) for each of `--eval-prompts` validation prompts and
the exact per-token KL(student ‖ teacher) over the whole vocabulary is averaged over those tokens. Training time
is the trainer's own loop: listopd's metrics log (elapsed_s; the run trains in chunks of `--every` steps, each
resuming the last from its checkpoint on one FrozenPool, so models, prompt caches and the rollout worker carry
over; a pipelined chunk starts with an on-policy rollout, which costs it one wait per chunk), TRL's from a
callback (train begin to step end, the evaluations' own time taken out). Time to quality: the training seconds at
the first evaluation whose KL is at or below the target.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCH, NEW_TOKENS, LR, WARMUP = 16, 64, 3e-4, 10


def teacher_kl(student, teacher, prompts: list[list[int]], tokenizer, seed: int = 0) -> float:
    """Mean per-token KL(student ‖ teacher) over the whole vocabulary, on one completion per prompt drawn from
    the student (temperature 1, `seed`)."""
    import torch

    from listopd.train.rollout import completion_logprob_table, sample

    with torch.no_grad():
        rollout = sample(student, prompts, max_new_tokens=NEW_TOKENS, eos_id=tokenizer.eos_token_id,
                         pad_id=tokenizer.pad_token_id, generator=torch.Generator().manual_seed(seed))
        lp_s = completion_logprob_table(student, rollout)
        lp_t = completion_logprob_table(teacher, rollout)
        kl = (lp_s.exp() * (lp_s - lp_t)).sum(-1)  # [B, T]
        mask = rollout.completion_mask[:, :kl.shape[1]]
        return float((kl * mask).sum() / mask.sum())


def side_listopd(args, pair: Path, ahead: bool, evaluate) -> list[dict]:
    from listopd.train.frozen_pool import FrozenPool
    from listopd.train.models import load_model
    from listopd.train.opd import run_opd
    from listopd.train.opd_config import OPDConfig

    out = Path(tempfile.mkdtemp(prefix="ttq-listopd-")) / "run"
    pool, points, trained = FrozenPool(), [], 0.0
    points.append({"step": 0, "train_s": 0.0, "kl": evaluate(load_model(str(pair / args.warm)))})
    try:
        for step in range(args.every, args.steps + 1, args.every):
            cfg = OPDConfig(student=str(pair / args.warm), teacher=str(pair / "teacher/final"),
                            tasks=str(pair / "data/train.jsonl"), out=str(out), reward_scale=1.0,
                            estimator="expected", lr=LR, warmup_steps=WARMUP, batch_size=BATCH,
                            micro_batch_size=BATCH, max_new_tokens=NEW_TOKENS, steps=step, save_every=args.every,
                            eval_every=0, threads=1 if ahead else args.listopd_threads, seed=0,
                            rollout_ahead=int(ahead), clip_mode=args.clip_mode)
            run_opd(cfg, quiet=True, pool=pool)
            records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            trained += [r for r in records if r.get("step") == step][-1]["elapsed_s"]  # this chunk's loop time
            points.append({"step": step, "train_s": round(trained, 2), "kl": evaluate(load_model(str(out / "final")))})
            print(f"  {'listopd-ahead' if ahead else 'listopd'} step {step}: {points[-1]}", file=sys.stderr)
    finally:
        pool.close()
    return points


def side_trl(args, pair: Path, evaluate) -> list[dict]:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DistillationConfig, DistillationTrainer

    from listopd.task.prompts import render_messages
    from listopd.task.tasks import read_tasks
    from listopd.train.models import load_model, load_tokenizer

    torch.set_num_threads(2)
    tokenizer = load_tokenizer(str(pair / args.warm))
    tokenizer.padding_side = "left"
    student, teacher = load_model(str(pair / args.warm)), load_model(str(pair / "teacher/final"))
    tasks = read_tasks(str(pair / "data/train.jsonl"))
    rows = [{"prompt": render_messages(tasks[i % len(tasks)])} for i in range(args.steps * BATCH)]
    config = DistillationConfig(
        output_dir=tempfile.mkdtemp(prefix="ttq-trl-"), use_cpu=True, bf16=False, fp16=False,
        gradient_checkpointing=False, per_device_train_batch_size=BATCH, gradient_accumulation_steps=1,
        max_steps=args.steps, learning_rate=LR, warmup_steps=WARMUP, lr_scheduler_type="constant_with_warmup",
        adam_beta1=0.9, adam_beta2=0.95, weight_decay=0.0, max_grad_norm=1.0, logging_steps=10_000,
        save_strategy="no", report_to=[], dataloader_num_workers=0, disable_dropout=True, seed=0,
        beta=1.0, temperature=1.0, max_completion_length=NEW_TOKENS)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=config,
                                  train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    points = [{"step": 0, "train_s": 0.0, "kl": evaluate(student)}]

    class Clock(TrainerCallback):
        def __init__(self):
            self.t0, self.paused = None, 0.0

        def on_train_begin(self, *_, **__):
            self.t0 = time.perf_counter()

        def on_step_end(self, _args, state, *__, **___):
            if state.global_step % args.every == 0:
                train_s = time.perf_counter() - self.t0 - self.paused
                t = time.perf_counter()
                points.append({"step": state.global_step, "train_s": round(train_s, 2),
                               "kl": evaluate(trainer.model)})
                self.paused += time.perf_counter() - t
                print(f"  trl-distill step {state.global_step}: {points[-1]}", file=sys.stderr)

    trainer.add_callback(Clock())
    trainer.train()
    return points


def curve_key(side: str, clip_mode: str) -> str:
    """A curve's name in the results: the side, with the clip mode when it is not the default teacher_ratio
    (TRL's side has no clip mode)."""
    return side if side == "trl-distill" or clip_mode == "teacher_ratio" else f"{side} (clip {clip_mode})"


def first_at_or_below(points: list[dict], target: float) -> float | None:
    return next((p["train_s"] for p in points if p["kl"] <= target), None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pair", type=Path, required=True, help="a pair folder (see the module docstring)")
    ap.add_argument("--warm", default="warm_short/final", help="the warm start inside --pair")
    ap.add_argument("--sides", nargs="+", default=["listopd", "listopd-ahead", "trl-distill"],
                    choices=["listopd", "listopd-ahead", "trl-distill"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=25, help="steps between quality evaluations")
    ap.add_argument("--eval-prompts", type=int, default=32)
    ap.add_argument("--target", type=float, default=0.05, help="teacher KL (nats per token) to reach")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/time_to_quality")
    ap.add_argument("--listopd-threads", type=int, default=2,
                    help="torch threads of the synchronous listopd side (the pipelined side: one per process)")
    ap.add_argument("--clip-mode", default="teacher_ratio", choices=["teacher_ratio", "none"],
                    help="clip mode of the listopd sides (c = 5 by default); `none` is the plain reverse-KL "
                         "gradient TRL's side takes. Sides run with `none` are stored as '<side> (clip none)'")
    ap.add_argument("--append", action="store_true",
                    help="keep the other sides' curves already in --out's .json (same pair, warm start, target, "
                         "steps and evaluation); the sides run now replace theirs")
    args = ap.parse_args()
    if args.steps % args.every:
        ap.error("--steps must be a multiple of --every")

    import torch

    from listopd.task.prompts import encode_prompt
    from listopd.task.tasks import read_tasks
    from listopd.train.models import load_model, load_tokenizer

    torch.set_num_threads(1)
    tokenizer = load_tokenizer(str(args.pair / args.warm))
    teacher = load_model(str(args.pair / "teacher/final")).eval()
    prompts = [encode_prompt(t, tokenizer) for t in read_tasks(str(args.pair / "data/validation.jsonl"))
               [:args.eval_prompts]]

    def evaluate(student) -> float:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return round(teacher_kl(student, teacher, prompts, tokenizer), 5)
        finally:
            torch.set_num_threads(threads)

    setting = {"pair": str(args.pair), "warm": args.warm, "target": args.target, "steps": args.steps,
               "every": args.every, "eval_prompts": args.eval_prompts}
    curves, side_threads = {}, {}  # side_threads: the torch threads of each synchronous listopd curve, as measured
    if args.append and args.out.with_suffix(".json").exists():
        previous = json.loads(args.out.with_suffix(".json").read_text())
        if {k: previous.get(k) for k in setting} != setting:
            ap.error(f"--append: {args.out.with_suffix('.json')} was measured with other settings "
                     f"({ {k: previous.get(k) for k in setting} })")
        run_now = {curve_key(s, args.clip_mode) for s in args.sides}
        curves = {s: c for s, c in previous["curves"].items() if s not in run_now}
        side_threads = {s: n for s, n in previous.get("threads", {}).items() if s in curves}
    for side in args.sides:
        key = curve_key(side, args.clip_mode)
        if side == "trl-distill":
            curves[key] = side_trl(args, args.pair, evaluate)
        else:
            curves[key] = side_listopd(args, args.pair, side == "listopd-ahead", evaluate)
            if side == "listopd":
                side_threads[key] = args.listopd_threads
    result = {**setting, "threads": side_threads, "curves": curves,
              "time_to_target_s": {s: first_at_or_below(c, args.target) for s, c in curves.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [f"Time to teacher KL ≤ {args.target:g} (λ = 1, {args.pair}; `python benchmarks/time_to_quality.py`)",
             "", "| side | training s to target | KL at the end | steps |", "|---|---|---|---|"]
    for side, c in curves.items():
        t = result["time_to_target_s"][side]
        label = f"{side} ({side_threads[side]} threads)" if side in side_threads else side
        lines.append(f"| {label} | {'not reached' if t is None else f'{t:.0f}'} | {c[-1]['kl']:.4f} | {c[-1]['step']} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for side, c in curves.items():
        ax.plot([p["train_s"] for p in c], [p["kl"] for p in c], marker="o", label=side)
    ax.axhline(args.target, color="grey", ls="--", lw=1, label=f"target {args.target:g}")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("teacher KL on validation samples (nats/token)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
