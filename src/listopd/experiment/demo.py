"""The main job, end to end on the embedded synthetic data and the tiny presets:

    data → tokenizer → SFT teacher → SFT warm start (stopped early: parse headroom) → calibration (λ*)
    → ListOPD at a λ below λ* and at one above → evaluation on the test split → report

Each stage writes into OUT/ and is skipped when its output is already there, so an interrupted demo
continues where it stopped. The λ pair is placed from the calibrated λ*: `below = 1 + below_frac·(λ* − 1)`
and `above = λ* + above_gap` (so the demo never picks its λ by looking at results).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from listopd.util.config import check_at_least, option, require


@dataclass
class DemoConfig:
    out: str = option("runs/demo", "output folder (each stage is skipped when its output is already there)")
    seed: int = option(0, "seed of the synthetic data", at_least=0)
    n_users: int = option(1500, "synthetic users (one task each; split 80/10/10 by user)", at_least=1)
    n_items: int = option(600, "synthetic catalogue items", at_least=1)
    history_len: int = option(3, "most history titles in a task's context", at_least=1)
    min_history: int = option(2, "fewest history titles in a task's context", at_least=1)
    # Budgets sized so that `make demo` (install included) stays under 10 minutes on this 2-core CPU: 300/300
    # SFT steps and 2 × 40 ListOPD steps took 556 s + 44 s of install; 280/280 and 2 × 32 took 541 s + 51 s.
    teacher_steps: int = option(280, "SFT steps of the teacher", at_least=1)
    # The warm start's parse rate climbs steeply with SFT steps (bf16 autocast, this data): at 280 steps 0%
    # greedy / 17% sampled, at 300 steps 100% greedy / 31–38% sampled. Either way the sampled distribution,
    # which on-policy training shapes, has headroom below the teacher's (60–81% sampled).
    warm_steps: int = option(280, "SFT steps of the warm-start student (stopped early: parse headroom)", at_least=1)
    opd_steps: int = option(24, "ListOPD steps of each of the two runs", at_least=1)
    batch_size: int = option(16, "batch size of every training stage", at_least=1)
    sft_lr: float = option(1e-3, "SFT learning rate")
    sft_bf16: bool = option(True, "bfloat16 autocast for SFT where bf16 is native (GPU, CPU with AMX or "
                                  "AVX512-BF16: ~20% faster, same loss curve); float32 elsewhere, where torch "
                                  "emulates bf16 ~100× slower")
    opd_lr: float = option(3e-5, "ListOPD learning rate")
    estimator: str = option("expected", "ListOPD estimator (sampled or expected: far less gradient noise)")
    c: float = option(5.0, "clip strength c of the ListOPD runs and of λ*")
    below_frac: float = option(0.5, "the run below the cliff trains at λ = 1 + below_frac·(λ* − 1)")
    above_gap: float = option(0.5, "the run above the cliff trains at λ = λ* + above_gap")
    calibration_tasks: int = option(40, "validation tasks the calibration walks", at_least=1)
    eval_tasks: int = option(80, "test tasks every model is evaluated on", at_least=1)

    def validate(self) -> None:
        check_at_least(self)
        require(self.min_history <= self.history_len,
                f"min_history ({self.min_history}) must be ≤ history_len ({self.history_len})")


def _say(t0: float, message: str) -> None:
    sys.stdout.write(f"[{time.time() - t0:6.0f}s] {message}\n")
    sys.stdout.flush()


def run_demo(cfg: DemoConfig) -> dict:
    from listopd.experiment.calibrate import calibrate_models
    from listopd.task.data.synth import make_synth_tasks
    from listopd.util.io import atomic_write_json, atomic_write_text
    from listopd.train.models import count_parameters, load_model, load_tokenizer
    from listopd.train.opd import run_opd
    from listopd.train.opd_config import OPDConfig
    from listopd.train.sft import run_sft
    from listopd.train.sft_config import SFTConfig
    from listopd.task.tasks import read_tasks, write_tasks
    from listopd.task.tokenizer import task_texts, train_tokenizer
    from listopd.train.distributed import bf16_is_fast
    from listopd.train.evaluation import evaluate

    out, t0 = Path(cfg.out), time.time()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "demo_config.json", asdict(cfg))
    data = out / "data"

    if not (data / "test.jsonl").exists():
        tasks = make_synth_tasks(n_users=cfg.n_users, n_items=cfg.n_items, history_len=cfg.history_len,
                                 min_history=cfg.min_history, seed=cfg.seed)
        for split in ("train", "validation", "test"):
            write_tasks(data / f"{split}.jsonl", [t for t in tasks if t.split == split])
    train, val, test = (read_tasks(data / f"{s}.jsonl") for s in ("train", "validation", "test"))
    _say(t0, f"data: {len(train)} train / {len(val)} validation / {len(test)} test tasks (K=8) in {data}")

    tok_dir = out / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        train_tokenizer(task_texts(train), vocab_size=2048).save_pretrained(str(tok_dir))
    _say(t0, f"tokenizer: {len(load_tokenizer(tok_dir))} tokens")

    bf16 = cfg.sft_bf16 and bf16_is_fast()
    if cfg.sft_bf16 and not bf16:
        _say(t0, "bfloat16 is emulated (slow) on this CPU: SFT runs in float32")
    common = dict(tasks=str(data / "train.jsonl"), tokenizer=str(tok_dir), val_tasks=str(data / "validation.jsonl"),
                  eval_tasks=32, batch_size=cfg.batch_size, micro_batch_size=cfg.batch_size, lr=cfg.sft_lr,
                  schedule="constant", warmup_steps=20, save_every=100, seed=cfg.seed, bf16=bf16)
    for name, preset, steps in (("teacher", "tiny-teacher", cfg.teacher_steps),
                                ("warm", "tiny-student", cfg.warm_steps)):
        if not (out / name / "summary.json").exists():
            _say(t0, f"SFT {name} ({preset}, {steps} steps)…")
            run_sft(SFTConfig(out=str(out / name), model=preset, steps=steps, eval_every=0, **common))
        s = json.loads((out / name / "summary.json").read_text())
        _say(t0, f"SFT {name}: validation strict parse {s['val_strict_parse_rate']:.2f}")

    tokenizer = load_tokenizer(out / "warm" / "final")
    cal_path = out / "calibration" / "calibration.json"
    if not cal_path.exists():
        _say(t0, f"calibrating on {cfg.calibration_tasks} validation tasks…")
        calibrate_models(str(out / "teacher" / "final"), str(out / "warm" / "final"), str(data / "validation.jsonl"),
                         c=cfg.c, max_tasks=cfg.calibration_tasks, out=str(out / "calibration"))
    cal = json.loads(cal_path.read_text())
    lam_star = cal["lambda_star"]
    if lam_star is None:
        raise SystemExit("calibration found no finite λ* (teacher and warm start agree everywhere); "
                         "train the teacher longer")
    lambdas = {"below": round(1 + cfg.below_frac * (lam_star - 1), 3), "above": round(lam_star + cfg.above_gap, 3)}
    _say(t0, f"calibration: binding role {cal['binding_role']}, p = {cal['p']:.5f}, b = {cal['b']:.5f}, "
             f"predicted λ*(p,b,c={cfg.c:g}) = {lam_star:.3f} → ListOPD at λ = {lambdas['below']} and {lambdas['above']}")

    for side, lam in lambdas.items():
        run_dir = out / f"opd_{side}"
        if not (run_dir / "summary.json").exists():
            _say(t0, f"ListOPD λ = {lam} ({side} λ*), {cfg.opd_steps} steps…")
            run_opd(OPDConfig(student=str(out / "warm" / "final"), teacher=str(out / "teacher" / "final"),
                              tasks=str(data / "train.jsonl"), val_tasks=str(data / "validation.jsonl"),
                              out=str(run_dir), reward_scale=lam, clip_strength=cfg.c, steps=cfg.opd_steps,
                              batch_size=cfg.batch_size, micro_batch_size=cfg.batch_size, lr=cfg.opd_lr,
                              estimator=cfg.estimator, eval_every=0, eval_tasks=64, eval_temperature=1.0,
                              save_every=50, seed=cfg.seed,
                              calibration=str(cal_path), allow_above_cliff=side == "above"))

    eval_path = out / "evaluation.json"
    if not eval_path.exists():
        _say(t0, f"evaluating on {cfg.eval_tasks} test tasks…")
        rows = {}
        for name, folder in (("teacher (SFT, tiny-teacher)", out / "teacher" / "final"),
                             ("warm start (SFT, tiny-student)", out / "warm" / "final"),
                             (f"ListOPD λ={lambdas['below']} (below λ*)", out / "opd_below" / "final"),
                             (f"ListOPD λ={lambdas['above']} (above λ*)", out / "opd_above" / "final")):
            model = load_model(folder)
            sampled = evaluate(model, tokenizer, test[:cfg.eval_tasks], max_new_tokens=64, temperature=1.0,
                               n_boot=500)
            greedy = evaluate(model, tokenizer, test[:cfg.eval_tasks], max_new_tokens=64, n_boot=500)
            rows[name] = {"parameters": count_parameters(model), **sampled,
                          "greedy": {k: greedy[k] for k in ("strict_parse_rate", "ndcg@1_parsed", "ndcg@1_strict")}}
        atomic_write_json(eval_path, {"lambdas": lambdas, "lambda_star": lam_star, "models": rows})
    evaluation = json.loads(eval_path.read_text())

    report = out / "report.md"
    _plot_opd_curves(out, lambdas, lam_star, out / "opd_curves.png")
    atomic_write_text(report, render_report(cfg, cal, evaluation))
    _say(t0, "done")
    return {"report": str(report), "lambda_star": lam_star, **evaluation}


def _plot_opd_curves(out: Path, lambdas: dict, lam_star: float, path: Path) -> None:
    """Rollout strict parse rate per ListOPD step, below and above λ* (10-step moving average)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for side, lam in lambdas.items():
        records = [json.loads(line) for line in (out / f"opd_{side}" / "metrics.jsonl").read_text().splitlines()]
        steps = np.array([r["step"] for r in records])
        parse = np.array([r["rollout_parse_rate"] for r in records])
        smooth = np.convolve(parse, np.ones(10) / 10, mode="valid") if len(parse) >= 10 else parse
        ax.plot(steps, parse, ".", alpha=0.3, color="C0" if side == "below" else "C3")
        ax.plot(steps[len(steps) - len(smooth):], smooth, "-", color="C0" if side == "below" else "C3",
                label=f"λ = {lam} ({side} λ* = {lam_star:.3f})")
    ax.set_xlabel("ListOPD step")
    ax.set_ylabel("strict parse rate of the rollouts (sampled, T = 1)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("ListOPD below and above the predicted cliff", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_report(cfg: DemoConfig, cal: dict, evaluation: dict) -> str:
    lam_star = evaluation["lambda_star"]

    def pct(x):
        return "—" if x is None else f"{100 * x:.1f}%"

    def num(x):
        return "—" if x is None else f"{x:.3f}"

    ci = cal.get("lambda_star_ci") or [None, None]

    lines = [
        "# listopd demo report", "",
        f"Synthetic fashion catalogue, K = 8, tiny Qwen3 presets; clip strength c = {cfg.c:g}.", "",
        "## Calibration", "",
        f"Binding role **{cal['binding_role']}**: teacher mass p = {cal['p']:.5f}, warm-start mass b = {cal['b']:.5f}. "
        f"Predicted cliff **λ\\*(p, b, c) = {lam_star:.3f}** (95% bootstrap interval [{num(ci[0])}, {num(ci[1])}]); "
        f"base-neutral λ\\*(p, c) = {num(cal['lambda_star_base_neutral'])}"
        + (" (none: p ≤ ½, no cliff)." if cal["lambda_star_base_neutral"] is None else "."), "",
        "![λ* per role](calibration/calibration.png)", "",
        "| role | positions | p (teacher) | b (warm start) | λ*(p,b,c) |", "|---|---|---|---|---|"]
    for role, v in cal["roles"].items():
        if not role.startswith("id_"):
            lines.append(f"| {role} | {v['n']} | {v['p']:.5f} | {v['b']:.5f} | {num(v['lambda_star'])} |")
    fails = ", ".join(f"{k}: {v}" for k, v in cal["failure_roles"].items())
    lines += ["", f"Where the warm start's own greedy outputs break the contract: {fails}.", "",
              "## Test split", "",
              "One sample per task at temperature 1 (fixed seed), and greedy decoding.", "",
              "| model | parameters | strict parse (sampled) | NDCG@1 parsed | NDCG@1 strict (invalid = 0) "
              "| strict parse (greedy) | NDCG@1 parsed (greedy) |",
              "|---|---|---|---|---|---|---|"]
    for name, r in evaluation["models"].items():
        g = r.get("greedy", {})
        lines.append(f"| {name} | {r['parameters']:,} | {pct(r['strict_parse_rate'])} | "
                     f"{num(r['ndcg@1_parsed'])} | {num(r['ndcg@1_strict'])} | {pct(g.get('strict_parse_rate'))} | "
                     f"{num(g.get('ndcg@1_parsed'))} |")
    lines += ["", "![rollout parse rate during ListOPD](opd_curves.png)", ""]
    return "\n".join(lines)


def headline(result: dict) -> str:
    rows = result["models"]
    parts = [f"predicted λ* = {result['lambda_star']:.3f}"]
    for name, r in rows.items():
        greedy = r.get("greedy", {}).get("strict_parse_rate")
        parts.append(f"{name}: strict parse {100 * r['strict_parse_rate']:.1f}% sampled"
                     + ("" if greedy is None else f" ({100 * greedy:.1f}% greedy)")
                     + f", NDCG@1 parsed {'—' if r['ndcg@1_parsed'] is None else format(r['ndcg@1_parsed'], '.3f')}")
    return "\n".join(parts)
