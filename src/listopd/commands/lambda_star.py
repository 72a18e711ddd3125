"""Closed-form extrapolation cliff λ*(p, b, c) and its base-neutral form λ*(p, c) = λ*(p, 1/2, c).

p: teacher mass on the modal (contract-keeping) class; b: base/warm-start mass on it (optional, default
base-neutral b = 1/2); c: clip strength(s). Prints λ* for each c, or with --json one object with keys p, b,
b_given, c, lambda_star, lambda_star_base_neutral, clip_safe_boundary ((c−1+p)/c) and clip_safe_tail
((1−p)/c). With one c the values are numbers; with several c they are lists in the order of --c. λ* = +inf
(b ≥ p: the fixed point never leaves the clip-safe region for λ ≥ 1; at p = b it stays at the teacher) is
written as null in JSON.
--plot FILE.png draws the tail mass 1 − q_λ against λ with the clip-safe boundary and λ*.
"""

from __future__ import annotations

import argparse
import json
import math

from listopd.core import theory
from listopd.util.errors import ListopdError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--p", type=float, required=True, help="teacher mass on the modal class, in (0, 1)")
    parser.add_argument("--b", type=float, default=None,
                        help="base (warm-start) mass on the modal class, in (0, 1); default: base-neutral 1/2")
    parser.add_argument("--c", type=float, nargs="+", required=True, metavar="C",
                        help="clip strength(s) c > 1")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--plot", metavar="FILE.png", default=None,
                        help="draw tail mass 1 − q_λ vs λ with the clip-safe boundary and λ*")


def run(args: argparse.Namespace) -> int:
    p, cs = args.p, list(args.c)
    b = 0.5 if args.b is None else args.b
    # one scalar call per c, so a bad number gets a plain "got X" message (strict: the DomainError is the error)
    lam = [theory.lambda_star_or_none(p, b, c, strict=True) for c in cs]
    lam_bn = [theory.lambda_star_or_none(p, b, c, form="base_neutral", strict=True) for c in cs]
    boundary = [theory.clip_safe_boundary(p, c) for c in cs]
    tail = [(1.0 - p) / c for c in cs]  # (1-p)/c, the tail of the boundary

    if args.plot:
        _plot(args.plot, p, b, cs, lam)

    if args.json:
        one = len(cs) == 1
        pick = (lambda v: v[0]) if one else (lambda v: v)
        out = {
            "p": p, "b": b, "b_given": args.b is not None, "c": pick(cs),
            "lambda_star": pick([theory.lambda_star_or_none(p, b, c, no_cliff=None) for c in cs]),
            "lambda_star_base_neutral": pick([theory.lambda_star_or_none(p, b, c, form="base_neutral", no_cliff=None)
                                              for c in cs]),
            "clip_safe_boundary": pick(boundary),
            "clip_safe_tail": pick(tail),
        }
        if args.plot:
            out["plot"] = args.plot
        print(json.dumps(out))
        return 0

    print(f"p = {p:.12g}   b = {b:.12g}{'' if args.b is not None else ' (base-neutral)'}   1 - p = {1 - p:.4g}")
    head = f"{'c':>8}  {'safe q <=':>17}  {'safe 1-q >=':>11}  {'λ*(p,b,c)':>10}  {'λ*(p,c)':>10}"
    print(head)
    for c, bd, t, lm, ln in zip(cs, boundary, tail, lam, lam_bn):
        print(f"{c:>8.4g}  {bd:>17.15g}  {t:>11.4g}  {lm:>10.4f}  {ln:>10.4f}")
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0


def _plot(path: str, p: float, b: float, cs: list[float], lam: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    finite = [x for x in lam if math.isfinite(x)]
    hi = 1.0 + 1.6 * (max(finite) - 1.0) if finite else 2.0
    lams = np.linspace(0.9, hi, 400)
    tail = theory.fixed_point_tail(lams, p, b)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.semilogy(lams, tail, color="black", lw=2, label=r"fixed-point tail $1-q_\lambda$")
    ax.axhline(1 - p, color="gray", ls=":", lw=1, label=f"teacher tail 1−p = {1 - p:.3g}")
    colors = plt.cm.viridis(np.linspace(0.15, 0.85, len(cs)))
    for c, lm, col in zip(cs, lam, colors):
        ax.axhline((1 - p) / c, color=col, ls="--", lw=1.2, label=f"clip-safe boundary (1−p)/c, c = {c:g}")
        if math.isfinite(lm):
            ax.axvline(lm, color=col, lw=1.2)
            ax.annotate(f"λ* = {lm:.4f}", xy=(lm, (1 - p) / c), xytext=(4, 6), textcoords="offset points",
                        color=col, fontsize=9)
    if not finite:  # b ≥ p: λ* = inf for every c
        ax.annotate("λ* = ∞ (b ≥ p: the tail does not shrink with λ and never reaches the boundary)", xy=(0.02, 0.97),
                    xycoords="axes fraction", va="top", fontsize=9)
    ax.set_xlabel("reward-extrapolation coefficient λ")
    ax.set_ylabel("tail mass 1 − q (log scale)")
    c_txt = ", ".join(f"{c:g}" for c in cs)
    ax.set_title(f"Clip-safe geometry: p = {p:.12g}, b = {b:.6g}, c = {c_txt}\n"
                 "safe while the tail stays above the dashed line; cliff at λ*", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as e:
        raise ListopdError(f"cannot write plot {path}: {e}") from None
    finally:
        plt.close(fig)
