"""Measure p (teacher) and b (warm start) on the contract-keeping class at every structural position of
valid outputs, and predict the extrapolation cliff λ*(p, b, c).

Prints the per-role table (the binding role marked *) and the predicted λ* with its bootstrap interval;
with --out DIR writes DIR/calibration.json (read by `listopd opd --calibration`) and DIR/calibration.png.

    listopd calibrate --teacher runs/teacher/final --warm-start runs/warm/final \\
        --tasks data/validation.jsonl --c 5 --out runs/calibration
"""

from __future__ import annotations

import argparse
import json
import sys
from listopd.commands.argtypes import positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, help="teacher model folder (or smollm2-135m)")
    p.add_argument("--warm-start", required=True, help="warm-start student model folder")
    p.add_argument("--tasks", required=True, help="task file whose outputs are walked")
    p.add_argument("--c", type=float, required=True, help="clip strength c > 1")
    p.add_argument("--max-tasks", type=positive_int, default=None, help="use only the first N tasks")
    p.add_argument("--sources", default="reference,teacher",
                   help="which valid outputs to walk: reference, teacher, or both (default)")
    p.add_argument("--n-boot", type=positive_int, default=1000, help="bootstrap resamples over tasks")
    p.add_argument("--json", action="store_true", help="print the calibration JSON instead of the table")
    p.add_argument("--out", help="folder for calibration.json and calibration.png")


def run(args) -> int:
    import torch

    from listopd.core import theory
    from listopd.experiment.calibrate import calibrate_models, format_table
    from listopd.util.errors import ListopdError
    from listopd.util.io import json_safe

    theory.lambda_star_base_neutral(0.9, args.c)  # validates c
    sources = tuple(s.strip() for s in args.sources.split(",") if s.strip())
    if not sources or set(sources) - {"reference", "teacher"}:
        raise ListopdError(f"--sources must name reference and/or teacher; got {args.sources!r}")
    torch.set_num_threads(1)

    def progress(i, n):
        if not args.json and (i == n or i % max(1, n // 20) == 0):
            sys.stderr.write(f"\rcalibrate: task {i}/{n}")
            sys.stderr.write("\n" if i == n else "")

    summary = calibrate_models(args.teacher, args.warm_start, args.tasks, c=args.c, sources=sources,
                               max_tasks=args.max_tasks, n_boot=args.n_boot, out=args.out, progress=progress)
    if args.json:
        print(json.dumps(json_safe(summary), indent=1))
        return 0
    print(format_table(summary))
    if summary["binding_role"] is None:
        print("\nno role has a finite λ* (teacher and warm start agree, or b ≥ p everywhere)")
    else:
        ci = summary.get("lambda_star_ci") or [None, None]

        def f(x):
            return "—" if x is None else f"{x:.4f}"

        print(f"\nbinding role: {summary['binding_role']}   p = {summary['p']:.6f}   b = {summary['b']:.6f}")
        print(f"predicted λ*(p,b,c={args.c:g}) = {f(summary['lambda_star'])}   95% CI [{f(ci[0])}, {f(ci[1])}]"
              f"   base-neutral λ*(p,c) = {f(summary['lambda_star_base_neutral'])}")
    fv = summary.get("full_vocabulary")
    if fv:
        rates = "  ".join(f"{lam:g}: {r:.3f}" for lam, r in zip(fv["lambdas"], fv["predicted_parse"]))
        onset = "none on the grid" if fv["onset_lambda"] is None else f"{fv['onset_lambda']:g}"
        print(f"full-vocabulary fixed point, predicted parse rate Π_t keep_t(λ) (λ 0: warm start, 1: teacher):"
              f"\n  {rates}\n  peaks at λ = {fv['peak_lambda']:g}; falls below the teacher's at λ = {onset}")
        capped = fv.get("teacher_ratio_capped")
        if capped:
            rates = "  ".join(f"{lam:g}: {r:.3f}" for lam, r in zip(capped["lambdas"], capped["predicted_parse"]))
            print(f"  under the teacher_ratio cap at c = {capped['c']:g} (the rest point with the most tail left):"
                  f"\n  {rates}")
        base = fv.get("base_ratio_capped")
        if base:
            rates = "  ".join(f"{lam:g}: {r:.3f}" for lam, r in zip(base["lambdas"], base["predicted_parse"]))
            print(f"  under base_ratio (its rest point, within a band around the teacher):\n  {rates}")
            two = fv["two_sided_capped"]
            shares = "  ".join(f"{lam:g}: {r:.2f}" for lam, r in zip(two["lambdas"][1:], two["departs_outputs"][1:]))
            print(f"  outputs where two_sided's rest point departs from teacher_ratio's (dynamics decide there):"
                  f"\n  {shares}")
    fails = ", ".join(f"{k}: {v}" for k, v in summary["failure_roles"].items())
    print(f"warm start's own greedy outputs: {fails}")
    print(f"{summary['n_tasks']} tasks, {summary['n_positions']} positions, {summary['seconds']} s")
    if args.out:
        print(f"wrote {args.out}/calibration.json and {args.out}/calibration.png")
    return 0

