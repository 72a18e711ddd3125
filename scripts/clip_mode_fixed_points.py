"""Where each clip mode's expected update rests at one two-class position (core/fixed_points.py), over λ.

    .venv/bin/python scripts/clip_mode_fixed_points.py [--p 0.97 --b 0.8 --c 5]

Prints a Markdown table: the uncapped fixed point q_λ's tail, and for each clip mode the tail where the
student rests, or where it runs when it has no rest point. Seconds, no model.
"""

from __future__ import annotations

import argparse

from listopd.core import theory
from listopd.core.fixed_points import describe, rest_points

MODES = ("none", "teacher_ratio", "two_sided", "base_ratio")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--p", type=float, default=0.97)
    ap.add_argument("--b", type=float, default=0.8)
    ap.add_argument("--c", type=float, default=5.0)
    ap.add_argument("--lambdas", type=float, nargs="+", default=[1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0])
    a = ap.parse_args()
    lam_star = float(theory.lambda_star(a.p, a.b, a.c))
    print(f"p = {a.p}, b = {a.b}, c = {a.c:g}: λ*(p, b, c) = {lam_star:.3f}; teacher tail {1 - a.p:.3g}, "
          f"clip-safe tail ≥ (1−p)/c = {(1 - a.p) / a.c:.3g}\n")
    print("| λ | tail of q_λ | " + " | ".join(MODES) + " |")
    print("|---|---|" + "---|" * len(MODES))
    for lam in a.lambdas:
        tail = 1 - float(theory.fixed_point(lam, a.p, a.b))
        cells = [describe(rest_points(lam, a.p, a.b, a.c, m)) for m in MODES]
        print(f"| {lam:g} | {tail:.2g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
