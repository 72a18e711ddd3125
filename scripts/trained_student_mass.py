"""Where did training move the student? Per structural role, the contract-keeping mass of each trained
student of a sweep, beside the teacher's (p), the warm start's (b) and the fixed point q_λ the closed form
says a run converges to below λ*.

    cd runs/exp && ../../.venv/bin/python ../../scripts/trained_student_mass.py sweep_tiny \
        --teacher teacher400 --warm-start warm300/final --tasks data/validation.jsonl \
        --only '_c5_s[01]_T(60|120)' --out student_mass    # then copy student_mass.{json,png} (scripts/collect_experiment.sh does)

Each model is measured exactly as `listopd calibrate` measures the warm start (listopd.experiment.calibrate.calibrate on
the reference outputs of the tasks: the summed probability of the contract-keeping tokens at every position),
so row "warm start" and the trained rows are comparable. Writes OUT.json (role → p, and per run: λ, seed,
steps, final strict parse rate, the student's mass per role) and OUT.png (tail mass 1 − q against λ for the
roles asked, log scale, with the teacher's and warm start's tails and the fixed point 1 − q_λ). One process,
one thread; about 30 s per model here.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path


def measure(teacher, student, tokenizer, tasks, c: float) -> dict:
    from listopd.experiment.calibrate import calibrate

    return calibrate(teacher, student, tokenizer, tasks, c=c, sources=("reference",), n_boot=0).role_table()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="sweep folder (results/ and runs/)")
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--warm-start", required=True)
    parser.add_argument("--tasks", required=True)
    parser.add_argument("--max-tasks", type=int, default=150)
    parser.add_argument("--only", default="", help="regular expression on run names")
    parser.add_argument("--roles", default="id,quote")
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args()

    import torch

    from listopd.core import theory
    from listopd.util.io import atomic_write_json
    from listopd.train.models import load_model, load_tokenizer
    from listopd.task.tasks import read_tasks

    torch.set_num_threads(1)
    sweep = Path(args.sweep)
    tokenizer = load_tokenizer(args.warm_start)
    tasks = read_tasks(args.tasks)[:args.max_tasks]
    teacher = load_model(args.teacher).eval()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    rows = {r["name"]: r for r in done.get("runs", [])}

    def record(name: str, folder: str, extra: dict) -> None:
        if name in rows:
            return
        t0 = time.time()
        table = measure(teacher, load_model(folder).eval(), tokenizer, tasks, c=extra.get("c", 5.0))
        rows[name] = {"name": name, **extra, "mass": {role: v["b"] for role, v in table.items()}}
        done["teacher_p"] = {role: v["p"] for role, v in table.items()}
        done["runs"] = list(rows.values())
        atomic_write_json(out.with_suffix(".json"), done)  # one model at a time: resumable
        print(f"{name}: {time.time() - t0:.0f} s  " +
              "  ".join(f"{r} {1 - rows[name]['mass'][r]:.3g}" for r in args.roles.split(",")), flush=True)

    record("warm start", args.warm_start, {"lam": None, "seed": None, "steps": 0, "parse": None})
    for result in sorted((sweep / "results").glob("*.json")):
        name = result.stem
        if not re.search(args.only, name):
            continue
        r = json.loads(result.read_text())
        point = r.get("grid_point") or r["config"]
        parse = (r.get("summary") or {}).get("val_strict_parse_rate")
        record(name, str(sweep / "runs" / name / "final"),
               {"lam": point["reward_scale"], "seed": point["seed"], "steps": point["steps"],
                "c": point["clip_strength"], "parse": parse})

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    roles = args.roles.split(",")
    warm = rows["warm start"]["mass"]
    p = done["teacher_p"]
    fig, axes = plt.subplots(1, len(roles), figsize=(5.5 * len(roles), 4.6), squeeze=False, layout="constrained")
    trained = [r for r in rows.values() if r["lam"] is not None]
    lams = sorted({r["lam"] for r in trained})
    shortest = min(r["steps"] for r in trained)
    grid = np.geomspace(min(lams), max(lams), 200)
    for ax, role in zip(axes[0], roles):
        for seed, steps in sorted({(r["seed"], r["steps"]) for r in trained}):
            pts = sorted((r["lam"], 1 - r["mass"][role]) for r in trained if (r["seed"], r["steps"]) == (seed, steps))
            ax.plot(*zip(*pts), "o-" if steps == shortest else "s--", ms=4,
                    label=f"trained student, seed {seed}, {steps} steps")
        ax.axhline(1 - warm[role], color="gray", ls="--", label=f"warm start 1 − b = {1 - warm[role]:.3g}")
        ax.axhline(1 - p[role], color="k", ls=":", label=f"teacher 1 − p = {1 - p[role]:.3g}")
        ax.plot(grid, theory.fixed_point_tail(grid, p[role], warm[role]), color="crimson", lw=1,
                label="fixed point 1 − q_λ(p, b)")
        lam_star = theory.lambda_star(p[role], warm[role], 5.0)
        if np.isfinite(lam_star) and min(lams) <= lam_star <= max(lams):
            ax.axvline(lam_star, color="crimson", ls="--", lw=1, label=f"λ*(p, b, 5) = {lam_star:.3f}")
        ax.set_xscale("log")
        ax.set_xticks(lams, [f"{x:g}" for x in lams], rotation=90, fontsize=7)
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.set_xlabel("λ (reward scale)")
        ax.set_ylabel("tail mass 1 − q (contract-breaking tokens)")
        ax.set_title(f"role {role!r}: student mass after training", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
